package main

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// rootSpec is the root the kernel's command line names (root=,
// rootfstype=, rootflags=, ro), which the kernel leaves to an initrd's
// init to mount: the agent boots from its own initrd and mounts it.
type rootSpec struct {
	source   string
	fstypes  []string // tried in turn
	options  string
	readOnly bool
}

// rootFromCmdline reads the root from the kernel's command line; ok is
// false for an initrd root (root=/dev/ram0) or none.
func rootFromCmdline(cmdline string) (r rootSpec, ok bool) {
params:
	for _, f := range strings.Fields(cmdline) {
		switch {
		case f == "--":
			// init's own arguments follow.
			break params
		case f == "ro":
			r.readOnly = true
		case f == "rw":
			r.readOnly = false
		default:
			k, v, _ := strings.Cut(f, "=")
			switch k {
			case "root":
				r.source = v
			case "rootfstype":
				r.fstypes = strings.Split(v, ",")
			case "rootflags":
				r.options = v
			}
		}
	}
	if len(r.fstypes) == 0 {
		// A disk: the filesystems a Linux guest boots from.
		r.fstypes = []string{"ext4", "ext3", "ext2"}
	}
	return r, r.source != "" && r.source != "/dev/ram0"
}

// newRootDir is where the real root is mounted before the switch.
const newRootDir = "/.urunc/root"

// switchRoot mounts r and makes it the agent's root, moving /proc, /sys
// and /dev into it, as switch_root does (the initrd's files stay in
// memory: the agent's binary is among them).
func switchRoot(r rootSpec) error {
	if err := os.MkdirAll(newRootDir, 0o755); err != nil {
		return err
	}
	var flags uintptr
	if r.readOnly {
		flags |= unix.MS_RDONLY
	}
	var errs []error
	mounted := false
	for _, fstype := range r.fstypes {
		err := unix.Mount(r.source, newRootDir, fstype, flags, r.options)
		if err == nil {
			mounted = true
			break
		}
		errs = append(errs, fmt.Errorf("%s: %w", fstype, err))
	}
	if !mounted {
		return fmt.Errorf("mount the root %s: %w", r.source, errors.Join(errs...))
	}
	for _, m := range []string{"/dev", "/proc", "/sys"} {
		target := newRootDir + m
		if _, err := os.Stat(target); err != nil {
			// A read-only root without the directory goes without.
			if err := os.Mkdir(target, 0o755); err != nil {
				logf("the root has no %s: %v", m, err)
				continue
			}
		}
		if err := unix.Mount(m, target, "", unix.MS_MOVE, ""); err != nil {
			logf("move %s into the root: %v", m, err)
		}
	}
	if err := unix.Chdir(newRootDir); err != nil {
		return err
	}
	if err := unix.Mount(".", "/", "", unix.MS_MOVE, ""); err != nil {
		return fmt.Errorf("move the root to /: %w", err)
	}
	if err := unix.Chroot("."); err != nil {
		return fmt.Errorf("chroot: %w", err)
	}
	return unix.Chdir("/")
}
