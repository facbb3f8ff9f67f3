package launch

import (
	"fmt"
	"os"
	"strconv"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// Confinement is what the monitor gets of a container's confinement: the
// shim plans it from the spec (the runtime's planConfinement), the
// launcher applies it (apply, then confineLast just before the exec).
type Confinement struct {
	// OOMScoreAdj is the spec's, else 0: the monitor must not inherit the
	// shim's near-unkillable score.
	OOMScoreAdj int                 `json:"oomScoreAdj"`
	Rlimits     []specs.POSIXRlimit `json:"rlimits,omitempty"`
	// KeepCaps are the only capabilities the monitor keeps (bounding,
	// permitted, effective, inheritable); none by default.
	KeepCaps []int `json:"keepCaps,omitempty"`
	// User is the spec's user, when not root: the monitor runs as it, in
	// the group of /dev/kvm too when it needs KVM.
	User *specs.User `json:"user,omitempty"`
	// Seccomp installs this project's filter (seccomp.go) last before the
	// exec, for a monitor that installs none of its own.
	Seccomp bool `json:"seccomp,omitempty"`
}

// FileCaps let a root monitor serving a 9p share act on the rootfs's files
// as their owners would (qemu's 9p server runs as the monitor's user). A
// monitor running as the spec's user never gets them: it would read and
// chmod every file of the host's it can reach.
var FileCaps = []int{unix.CAP_CHOWN, unix.CAP_DAC_OVERRIDE, unix.CAP_FOWNER, unix.CAP_FSETID}

// TapOwner is who may open the guest's tap: the monitor's user.
func (c Confinement) TapOwner() uint32 {
	if c.User != nil {
		return c.User.UID
	}
	return uint32(os.Geteuid())
}

// TapGroup is the group that may open the guest's tap: the monitor's.
func (c Confinement) TapGroup() uint32 {
	if c.User != nil {
		return c.User.GID
	}
	return uint32(os.Getegid())
}

// becomeUser switches to the spec's user; a non-root user has no
// capabilities left after it.
func (c Confinement) becomeUser() error {
	if c.User == nil {
		return nil
	}
	if err := unix.Setgroups(intsOf(c.User.AdditionalGids)); err != nil {
		return fmt.Errorf("set groups of user %d: %w", c.User.UID, err)
	}
	// Raw setresgid/setresuid: Go's Setgid and Setuid act on every
	// thread, which is what the exec needs too.
	if err := unix.Setresgid(int(c.User.GID), int(c.User.GID), int(c.User.GID)); err != nil {
		return fmt.Errorf("set group %d: %w", c.User.GID, err)
	}
	if err := unix.Setresuid(int(c.User.UID), int(c.User.UID), int(c.User.UID)); err != nil {
		return fmt.Errorf("set user %d: %w", c.User.UID, err)
	}
	return nil
}

func intsOf(ids []uint32) []int {
	out := make([]int, len(ids))
	for i, id := range ids {
		out[i] = int(id)
	}
	return out
}

// apply sets what the monitor and its helpers share (they are started
// after it): the OOM score, the rlimits and no_new_privs. It needs /proc,
// so it runs before the pivot.
func (c Confinement) apply() error {
	if err := os.WriteFile("/proc/self/oom_score_adj", []byte(strconv.Itoa(c.OOMScoreAdj)), 0); err != nil {
		return fmt.Errorf("set oom_score_adj %d: %w", c.OOMScoreAdj, err)
	}
	for _, r := range c.Rlimits {
		res, ok := RlimitResources[r.Type]
		if !ok {
			return fmt.Errorf("rlimit %s: unknown type", r.Type)
		}
		if err := unix.Setrlimit(res, &unix.Rlimit{Cur: r.Soft, Max: r.Hard}); err != nil {
			return fmt.Errorf("set rlimit %s: %w", r.Type, err)
		}
	}
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("set no_new_privs: %w", err)
	}
	return nil
}

// confineLast is the launcher's last step before the monitor's exec, after
// the pivot (which needs CAP_SYS_ADMIN): cut the bounding set (a root
// process regains every capability in it at exec; cutting it needs
// CAP_SETPCAP), become the spec's user (which needs CAP_SETUID and
// CAP_SETGID), then keep only KeepCaps, as runc does.
func (c Confinement) confineLast() error {
	keep := map[int]bool{}
	for _, cp := range c.KeepCaps {
		keep[cp] = true
	}
	for cp := 0; cp <= 63; cp++ {
		if keep[cp] {
			continue
		}
		if err := unix.Prctl(unix.PR_CAPBSET_DROP, uintptr(cp), 0, 0, 0); err != nil && err != unix.EINVAL {
			return fmt.Errorf("drop capability %d from the bounding set: %w", cp, err)
		}
	}
	// A user change empties the permitted set unless told to keep it;
	// KeepCaps must survive it.
	if c.User != nil && len(keep) > 0 {
		if err := unix.Prctl(unix.PR_SET_KEEPCAPS, 1, 0, 0, 0); err != nil {
			return fmt.Errorf("keep capabilities across the user change: %w", err)
		}
	}
	if err := c.becomeUser(); err != nil {
		return err
	}
	if err := unix.Prctl(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0); err != nil {
		return fmt.Errorf("clear ambient capabilities: %w", err)
	}
	var set [2]uint32
	for cp := range keep {
		set[cp/32] |= 1 << (uint(cp) % 32)
	}
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	data := [2]unix.CapUserData{
		{Effective: set[0], Permitted: set[0], Inheritable: set[0]},
		{Effective: set[1], Permitted: set[1], Inheritable: set[1]},
	}
	if err := unix.Capset(&hdr, &data[0]); err != nil {
		return fmt.Errorf("set capabilities: %w", err)
	}
	// A user other than root loses every capability at exec but its
	// ambient ones.
	if c.User != nil {
		for cp := range keep {
			if err := unix.Prctl(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_RAISE, uintptr(cp), 0, 0); err != nil {
				return fmt.Errorf("keep capability %d for user %d: %w", cp, c.User.UID, err)
			}
		}
	}
	if c.Seccomp {
		return installMonitorFilter()
	}
	return nil
}

// RlimitResources are the spec's rlimit types and their resources.
var RlimitResources = map[string]int{
	"RLIMIT_AS": unix.RLIMIT_AS, "RLIMIT_CORE": unix.RLIMIT_CORE, "RLIMIT_CPU": unix.RLIMIT_CPU,
	"RLIMIT_DATA": unix.RLIMIT_DATA, "RLIMIT_FSIZE": unix.RLIMIT_FSIZE, "RLIMIT_LOCKS": unix.RLIMIT_LOCKS,
	"RLIMIT_MEMLOCK": unix.RLIMIT_MEMLOCK, "RLIMIT_MSGQUEUE": unix.RLIMIT_MSGQUEUE, "RLIMIT_NICE": unix.RLIMIT_NICE,
	"RLIMIT_NOFILE": unix.RLIMIT_NOFILE, "RLIMIT_NPROC": unix.RLIMIT_NPROC, "RLIMIT_RSS": unix.RLIMIT_RSS,
	"RLIMIT_RTPRIO": unix.RLIMIT_RTPRIO, "RLIMIT_RTTIME": unix.RLIMIT_RTTIME, "RLIMIT_SIGPENDING": unix.RLIMIT_SIGPENDING,
	"RLIMIT_STACK": unix.RLIMIT_STACK,
}
