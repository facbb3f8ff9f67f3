package launch

import (
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The project's seccomp filter, for a monitor that installs none of its own
// (solo5-hvt before 0.11). It is a deny list, like a container runtime's
// default profile: the calls denied are those that reach host-wide state
// (modules, mounts, namespaces, keys, clocks, other processes' memory),
// none of which a monitor running a guest needs. It is never stacked on a
// monitor's own filter: stacked filters all apply, so a second one that
// denies what the monitor's own expects to reach kills the monitor.

// deniedSyscalls fail with EPERM; they exist on every architecture this
// filter is built for (per-architecture extras are in archDenied).
var deniedSyscalls = []uintptr{
	unix.SYS_ACCT, unix.SYS_ADD_KEY, unix.SYS_BPF, unix.SYS_CLOCK_ADJTIME, unix.SYS_CLOCK_SETTIME,
	unix.SYS_DELETE_MODULE, unix.SYS_FINIT_MODULE, unix.SYS_FSCONFIG, unix.SYS_FSMOUNT, unix.SYS_FSOPEN,
	unix.SYS_FSPICK, unix.SYS_INIT_MODULE, unix.SYS_KCMP, unix.SYS_KEXEC_FILE_LOAD, unix.SYS_KEXEC_LOAD,
	unix.SYS_KEYCTL, unix.SYS_MOUNT, unix.SYS_MOUNT_SETATTR, unix.SYS_MOVE_MOUNT, unix.SYS_NAME_TO_HANDLE_AT,
	unix.SYS_OPEN_BY_HANDLE_AT, unix.SYS_OPEN_TREE, unix.SYS_PERF_EVENT_OPEN, unix.SYS_PIVOT_ROOT,
	unix.SYS_PROCESS_VM_READV, unix.SYS_PROCESS_VM_WRITEV, unix.SYS_PTRACE, unix.SYS_QUOTACTL, unix.SYS_REBOOT,
	unix.SYS_REQUEST_KEY, unix.SYS_SETNS, unix.SYS_SETTIMEOFDAY, unix.SYS_SWAPOFF, unix.SYS_SWAPON,
	unix.SYS_SYSLOG, unix.SYS_UMOUNT2, unix.SYS_UNSHARE, unix.SYS_USERFAULTFD, unix.SYS_ADJTIMEX,
	unix.SYS_VHANGUP,
}

// namespaceCloneFlags are the clone flags that make new namespaces;
// clone with any of them fails with EPERM, as unshare does.
const namespaceCloneFlags = unix.CLONE_NEWNS | unix.CLONE_NEWUTS | unix.CLONE_NEWIPC | unix.CLONE_NEWUSER |
	unix.CLONE_NEWPID | unix.CLONE_NEWNET | unix.CLONE_NEWCGROUP | unix.CLONE_NEWTIME

// Offsets in struct seccomp_data.
const (
	seccompDataNr   = 0
	seccompDataArch = 4
	seccompDataArg0 = 16 // low 32 bits on a little-endian machine
)

func bpfStmt(code uint16, k uint32) unix.SockFilter { return unix.SockFilter{Code: code, K: k} }
func bpfJump(code uint16, k uint32, jt, jf uint8) unix.SockFilter {
	return unix.SockFilter{Code: code, Jt: jt, Jf: jf, K: k}
}

// monitorFilter assembles the filter. Another architecture than the
// monitor's (a 32-bit entry, or x32 on amd64) is killed: its system call
// numbers differ and would pass the deny list.
func monitorFilter() ([]unix.SockFilter, error) {
	if auditArch == 0 {
		return nil, fmt.Errorf("no seccomp filter for this architecture")
	}
	const (
		ld     = unix.BPF_LD | unix.BPF_W | unix.BPF_ABS
		jeq    = unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K
		jge    = unix.BPF_JMP | unix.BPF_JGE | unix.BPF_K
		jset   = unix.BPF_JMP | unix.BPF_JSET | unix.BPF_K
		ret    = unix.BPF_RET | unix.BPF_K
		eperm  = unix.SECCOMP_RET_ERRNO | uint32(unix.EPERM)
		enosys = unix.SECCOMP_RET_ERRNO | uint32(unix.ENOSYS)
	)
	f := []unix.SockFilter{
		bpfStmt(ld, seccompDataArch),
		bpfJump(jeq, auditArch, 1, 0),
		bpfStmt(ret, unix.SECCOMP_RET_KILL_PROCESS),
		bpfStmt(ld, seccompDataNr),
	}
	if x32SyscallBit != 0 {
		f = append(f, bpfJump(jge, x32SyscallBit, 0, 1), bpfStmt(ret, unix.SECCOMP_RET_KILL_PROCESS))
	}
	for _, nr := range append(append([]uintptr{}, deniedSyscalls...), archDenied...) {
		f = append(f, bpfJump(jeq, uint32(nr), 0, 1), bpfStmt(ret, eperm))
	}
	// clone3 hides its flags behind a pointer: fail it as unknown, so
	// that libc falls back to clone, whose flags are checked here.
	f = append(f, bpfJump(jeq, unix.SYS_CLONE3, 0, 1), bpfStmt(ret, enosys))
	f = append(f,
		bpfJump(jeq, unix.SYS_CLONE, 0, 3),
		bpfStmt(ld, seccompDataArg0),
		bpfJump(jset, namespaceCloneFlags, 0, 1),
		bpfStmt(ret, eperm),
		bpfStmt(ret, unix.SECCOMP_RET_ALLOW),
	)
	return f, nil
}

// installMonitorFilter loads the filter on the calling thread, which
// then execs the monitor; no_new_privs must be set already.
func installMonitorFilter() error {
	f, err := monitorFilter()
	if err != nil {
		return err
	}
	prog := unix.SockFprog{Len: uint16(len(f)), Filter: &f[0]}
	if err := unix.Prctl(unix.PR_SET_SECCOMP, unix.SECCOMP_MODE_FILTER, uintptr(unsafe.Pointer(&prog)), 0, 0); err != nil {
		return fmt.Errorf("install the monitor's seccomp filter: %w", err)
	}
	return nil
}
