package launch

import (
	"fmt"
	"os"
	"path/filepath"
	goruntime "runtime"
	"strings"

	"golang.org/x/sys/unix"
)

// Main is the launcher: it runs as PID 1 of the container's new pid
// namespace, in a new mount namespace, already inside the container's other
// namespaces (joined by the shim before the fork). It builds the monitor's
// confined root, reports ready, waits for Start and then execs the monitor.
// It never returns.
func Main() {
	// no_new_privs, the capability sets and the bounding set belong to a
	// thread, and execve keeps those of the thread that calls it: every
	// step from here to the exec runs on this one thread.
	goruntime.LockOSThread()
	// The pipes to the shim must reach no other process: a helper that
	// inherited the status pipe would keep Start waiting for its EOF
	// forever, and the monitor's exec is what closes it.
	unix.CloseOnExec(StatusFD)
	unix.CloseOnExec(ControlFD)
	control := os.NewFile(ControlFD, "control")
	status := os.NewFile(StatusFD, "status")
	fail := func(err error) {
		fmt.Fprintf(status, "%s%s\n", StatusErrorPrefix, strings.ReplaceAll(err.Error(), "\n", " "))
		os.Exit(127)
	}
	spec, err := readSpec(control)
	if err != nil {
		fail(err)
	}
	if err := prepareConfinedRoot(spec); err != nil {
		fail(err)
	}
	if _, err := fmt.Fprintln(status, StatusReady); err != nil {
		os.Exit(127)
	}
	var b [1]byte
	if n, _ := control.Read(b[:]); n == 0 {
		// The shim closed the pipe without starting us: the container
		// was deleted before Start.
		os.Exit(0)
	}
	// Only what the launch spec hands over reaches the monitor.
	if err := closeStrayFDs(spec.MonitorFDs); err != nil {
		fail(err)
	}
	// A successful exec closes the status pipe (close-on-exec since the
	// start), which is how Start learns the monitor runs.
	err = unix.Exec(spec.Argv[0], spec.Argv, spec.Env)
	fail(fmt.Errorf("exec monitor %s: %w", spec.Argv[0], err))
}

func prepareConfinedRoot(spec Spec) error {
	if len(spec.Argv) == 0 {
		return fmt.Errorf("launch spec has no monitor command")
	}
	// The launcher is inside the container's network namespace already,
	// so the tap is created right where the guest's frames flow.
	if spec.Network != nil {
		if err := SetupTap(spec.Network); err != nil {
			return err
		}
	}
	if err := MakeMountsPrivate(); err != nil {
		return err
	}
	if err := spec.Confine.apply(); err != nil {
		return err
	}
	if err := ShareRootfs(spec.Rootfs, spec.Volumes, spec.RootReadOnly); err != nil {
		return err
	}
	if err := BuildConfinedRoot(spec.RootDir, spec.Binds, spec.Rootfs); err != nil {
		return err
	}
	if spec.Proc {
		if err := MountPidsProc(spec.RootDir); err != nil {
			return err
		}
	}
	for _, f := range spec.Files {
		if err := writeConfinedFile(spec.RootDir, f); err != nil {
			return err
		}
	}
	// The helper starts before the pivot: it needs the rootfs, which the
	// monitor must not see.
	if spec.HelperProcess != nil {
		if err := startHelper(spec); err != nil {
			return err
		}
	}
	if err := PivotInto(spec.RootDir); err != nil {
		return err
	}
	return spec.Confine.confineLast()
}

// startHelper starts the helper without the descriptors meant for the
// monitor alone, then gives its socket to the monitor's user.
func startHelper(spec Spec) error {
	for _, fd := range spec.MonitorFDs {
		unix.CloseOnExec(fd)
	}
	err := StartHelperProcess(spec.RootDir, *spec.HelperProcess, spec.Confine.User)
	for _, fd := range spec.MonitorFDs {
		if _, ferr := unix.FcntlInt(uintptr(fd), unix.F_SETFD, 0); ferr != nil && err == nil {
			err = fmt.Errorf("keep fd %d for the monitor: %w", fd, ferr)
		}
	}
	if err != nil || spec.Confine.User == nil {
		return err
	}
	sock := filepath.Join(spec.RootDir, spec.HelperProcess.Socket)
	if err := os.Chown(sock, int(spec.Confine.User.UID), int(spec.Confine.User.GID)); err != nil {
		return fmt.Errorf("give %s's socket to user %d: %w", spec.HelperProcess.Argv[0], spec.Confine.User.UID, err)
	}
	return nil
}

func writeConfinedFile(root string, f File) error {
	path := root + "/" + strings.TrimPrefix(f.Path, "/")
	if err := os.MkdirAll(path[:strings.LastIndexByte(path, '/')], 0o755); err != nil {
		return err
	}
	return os.WriteFile(path, f.Data, 0o644)
}
