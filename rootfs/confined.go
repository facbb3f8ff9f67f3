package rootfs

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"golang.org/x/sys/unix"
)

// Bind is one host file or directory made visible in a confined root.
type Bind struct {
	Source   string `json:"source"`
	Target   string `json:"target"` // absolute, inside the confined root
	ReadOnly bool   `json:"readOnly,omitempty"`
}

// MonitorRootPlan is what a monitor's confined root holds: only the
// monitor's binary and libraries, its data files, the guest's files and
// the device nodes it uses. Nothing of the host or of the container rootfs
// beyond that is reachable from the monitor.
type MonitorRootPlan struct {
	Binary    string
	DataPaths []string // skipped when absent on this host
	Guest     []Bind
	Devices   []string // host device nodes, bound at the same path
}

// Binds resolves the plan into the list of binds, failing with an error
// that names the missing piece.
func (p MonitorRootPlan) Binds() ([]Bind, error) {
	var binds []Bind
	seen := map[string]bool{}
	add := func(src, dst string, ro bool) {
		if seen[dst] {
			return
		}
		seen[dst] = true
		binds = append(binds, Bind{Source: src, Target: dst, ReadOnly: ro})
	}
	deps, err := ELFDeps(p.Binary)
	if err != nil {
		return nil, fmt.Errorf("monitor %s: %w", p.Binary, err)
	}
	add(p.Binary, p.Binary, true)
	for _, d := range deps {
		add(d, d, true)
	}
	for _, dp := range p.DataPaths {
		st, err := os.Stat(dp)
		if err != nil {
			continue
		}
		add(dp, dp, true)
		if st.IsDir() {
			// Loadable modules (qemu's accelerators among them) bring
			// libraries of their own. Only accelerator modules are
			// needed headless; their deps are best effort.
			mods, _ := filepath.Glob(filepath.Join(dp, "accel-*.so"))
			for _, m := range mods {
				if mdeps, err := ELFDeps(m); err == nil {
					for _, d := range mdeps {
						add(d, d, true)
					}
				}
			}
		}
	}
	for _, g := range p.Guest {
		add(g.Source, g.Target, g.ReadOnly)
	}
	for _, dev := range p.Devices {
		if _, err := os.Stat(dev); err != nil {
			return nil, fmt.Errorf("device %s needed by the monitor: %w", dev, err)
		}
		add(dev, dev, false)
	}
	sort.SliceStable(binds, func(i, j int) bool { return binds[i].Target < binds[j].Target })
	return binds, nil
}

// BuildConfinedRoot populates dir (a tmpfs mounted here) with binds. It
// must run in a private mount namespace: the caller makes the namespace a
// slave of the host first, so none of these mounts reaches the host.
func BuildConfinedRoot(dir string, binds []Bind) error {
	// nodev and noexec: what the monitor runs and opens is bound in, each
	// bind keeping its own flags; nothing on the tmpfs itself needs either.
	if err := unix.Mount("tmpfs", dir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "mode=0755,size=16m"); err != nil {
		return fmt.Errorf("mount tmpfs at %s: %w", dir, err)
	}
	for _, b := range binds {
		if err := bindInto(dir, b); err != nil {
			return err
		}
	}
	for _, d := range []string{"tmp", "dev"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return err
		}
	}
	return os.Chmod(filepath.Join(dir, "tmp"), 0o1777)
}

func bindInto(root string, b Bind) error {
	if !filepath.IsAbs(b.Target) || strings.Contains(b.Target, "..") {
		return fmt.Errorf("bind target %q must be absolute and plain", b.Target)
	}
	st, err := os.Stat(b.Source)
	if err != nil {
		return fmt.Errorf("bind %s: %w", b.Source, err)
	}
	target := filepath.Join(root, b.Target)
	if st.IsDir() {
		if err := os.MkdirAll(target, 0o755); err != nil {
			return err
		}
	} else {
		if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
			return err
		}
		f, err := os.OpenFile(target, os.O_CREATE|os.O_WRONLY, 0o644)
		if err != nil {
			return err
		}
		f.Close()
	}
	return bindAt(b.Source, target, b.ReadOnly)
}

// bindAt binds source at target (recursively), read-only if asked.
func bindAt(source, target string, ro bool) error {
	if err := unix.Mount(source, target, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("bind %s at %s: %w", source, target, err)
	}
	if ro {
		flags := uintptr(unix.MS_BIND | unix.MS_REMOUNT | unix.MS_RDONLY | unix.MS_REC)
		if err := unix.Mount("", target, "", flags, ""); err != nil {
			return fmt.Errorf("make %s read-only: %w", target, err)
		}
	}
	return nil
}

// MakeMountsPrivate turns every mount of this (new) mount namespace into a
// slave, so mounts made here never propagate to the host, while unmounts
// on the host (of a rootfs block device, say) still reach this namespace.
func MakeMountsPrivate() error {
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_SLAVE, ""); err != nil {
		return fmt.Errorf("make mounts slave: %w", err)
	}
	return nil
}

// PivotInto makes dir the root of this mount namespace and drops the old
// root entirely, so no path leads back to the host's filesystem.
func PivotInto(dir string) error {
	if err := unix.Chdir(dir); err != nil {
		return fmt.Errorf("chdir %s: %w", dir, err)
	}
	// pivot_root(".", ".") stacks the old root on top of the new one; the
	// detach below then removes it without needing a directory for it.
	if err := unix.PivotRoot(".", "."); err != nil {
		return fmt.Errorf("pivot_root %s: %w", dir, err)
	}
	if err := unix.Unmount(".", unix.MNT_DETACH); err != nil {
		return fmt.Errorf("detach old root: %w", err)
	}
	if err := unix.Chdir("/"); err != nil {
		return errors.New("chdir / in confined root")
	}
	return nil
}

// MountPidsProc mounts at dir/proc a proc of the calling process's pid
// namespace that holds only its processes' directories (subset=pid): no
// /proc/sys, no kernel files. qemu's 9p server needs /proc/self/fd to
// change a new file's mode (it chmods the file through its O_PATH
// descriptor); without it every file or directory a guest creates over
// 9p is undone. The launcher is PID 1 of the container's pid namespace,
// so the monitor sees itself and its helpers only.
func MountPidsProc(dir string) error {
	target := filepath.Join(dir, "proc")
	if err := os.MkdirAll(target, 0o555); err != nil {
		return err
	}
	if err := unix.Mount("proc", target, "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "subset=pid,hidepid=invisible"); err != nil {
		return fmt.Errorf("mount a pids-only proc at %s: %w", target, err)
	}
	return nil
}
