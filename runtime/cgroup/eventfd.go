package cgroup

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// readEventFD turns a cgroup v1 OOM eventfd into a channel until done
// closes. The fd is read through the runtime's poller: a blocked read
// parks a goroutine, not an OS thread for the container's life (one
// thread and its stacks per container, in every shim). Closing the file when
// done wakes the read, and internal/poll keeps the fd number from being
// reused while the read still holds it.
//
// An fd that cannot be made nonblocking is closed and reported: a closed
// channel in its place would read as an endless run of OOM kills.
func readEventFD(fd int, done <-chan struct{}) (<-chan struct{}, error) {
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("OOM eventfd: %w", err)
	}
	out := make(chan struct{}, 1)
	f := os.NewFile(uintptr(fd), "oom-eventfd")
	go func() {
		<-done
		f.Close()
	}()
	go func() {
		buf := make([]byte, 8)
		for {
			_, err := f.Read(buf)
			select {
			case <-done:
				return
			default:
			}
			if err != nil {
				return
			}
			select {
			case out <- struct{}{}:
			default:
			}
		}
	}()
	return out, nil
}
