package launch

import (
	"errors"
	"fmt"
	"slices"

	"golang.org/x/sys/unix"
)

// closeStrayFDs marks every descriptor from 3 up close-on-exec, except
// keep (those handed to the monitor): whatever the launcher inherited or
// opened by mistake without O_CLOEXEC dies at the exec instead of reaching
// a monitor that a guest may take over. Close-on-exec rather than closed,
// so that the status pipe still closes only at a successful exec.
func closeStrayFDs(keep []int) error {
	keep = slices.Clone(keep)
	slices.Sort(keep)
	from := uint(3)
	for _, fd := range keep {
		if fd < int(from) {
			continue
		}
		if uint(fd) > from {
			if err := cloexecRange(from, uint(fd)-1); err != nil {
				return err
			}
		}
		from = uint(fd) + 1
	}
	return cloexecRange(from, ^uint(0))
}

// cloexecRange marks descriptors first..last close-on-exec: close_range
// where the kernel has CLOSE_RANGE_CLOEXEC (5.11), else one by one up to
// the descriptor limit.
func cloexecRange(first, last uint) error {
	err := unix.CloseRange(first, last, unix.CLOSE_RANGE_CLOEXEC)
	if err == nil {
		return nil
	}
	if !errors.Is(err, unix.ENOSYS) && !errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("close_range %d..%d: %w", first, last, err)
	}
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		return fmt.Errorf("descriptor limit: %w", err)
	}
	for fd := first; fd <= last && uint64(fd) < lim.Cur; fd++ {
		_, _ = unix.FcntlInt(uintptr(fd), unix.F_SETFD, unix.FD_CLOEXEC)
	}
	return nil
}
