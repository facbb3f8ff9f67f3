package unikernel

import (
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/urunc-dev/containerd-shim-urunc-v2/monitors"
	"github.com/urunc-dev/containerd-shim-urunc-v2/rootfs"
	"github.com/urunc-dev/containerd-shim-urunc-v2/runtime/launch"
)

// A monitor running as the spec's user takes its disks open from the
// shim; a monitor that cannot is refused with the user, the monitor and
// the root named, and a root with no disk runs under any monitor. A 9p
// server running as the user keeps no capability (it would read and chmod
// other users' files); a root one keeps the four file capabilities.
func TestPlanConfinementUser(t *testing.T) {
	user := &specs.Spec{Process: &specs.Process{User: specs.User{UID: 1000, GID: 1000}}}
	disk := []monitors.Disk{{ID: "rootfs", Path: "/guest/disks/rootfs"}}
	roots := map[string]*rootfs.Plan{
		"block":  {Root: rootfs.Root{Kind: rootfs.KindBlock}},
		"initrd": {Root: rootfs.Root{Kind: rootfs.KindInitrd}},
		"9p":     {Root: rootfs.Root{Kind: rootfs.Kind9p}, MonitorServesFiles: true},
	}
	for _, tc := range []struct {
		monitor, mode string
		disks         []monitors.Disk
		wantErr       string
		wantCaps      int
	}{
		{"qemu", "block", disk, "", 0},
		{"qemu", "9p", nil, "", 0},
		{"firecracker", "initrd", nil, "", 0},
		{"firecracker", "block", disk, "process.user 1000:1000: monitor firecracker cannot run as a user other than root with a disk (block root)", 0},
		{"hvt", "block", disk, "monitor hvt cannot run as a user other than root with a disk", 0},
	} {
		mon, err := monitors.New(tc.monitor, monitors.Config{Path: "/bin/true"})
		if err != nil {
			t.Fatal(err)
		}
		c, err := planConfinement(user, mon, roots[tc.mode], tc.disks)
		switch {
		case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
			t.Errorf("%s %s: error %v, want %q", tc.monitor, tc.mode, err, tc.wantErr)
		case tc.wantErr == "" && err != nil:
			t.Errorf("%s %s: %v", tc.monitor, tc.mode, err)
		case tc.wantErr == "" && (c.User == nil || c.User.UID != 1000 || len(c.KeepCaps) != tc.wantCaps):
			t.Errorf("%s %s: user %+v, caps %v", tc.monitor, tc.mode, c.User, c.KeepCaps)
		}
	}
	mon, err := monitors.New("qemu", monitors.Config{Path: "/bin/true"})
	if err != nil {
		t.Fatal(err)
	}
	c, err := planConfinement(&specs.Spec{Process: &specs.Process{}}, mon, roots["9p"], nil)
	if err != nil || c.User != nil || len(c.KeepCaps) != len(launch.FileCaps) {
		t.Errorf("root 9p monitor: user %+v, caps %v, err %v; want root with %v", c.User, c.KeepCaps, err, launch.FileCaps)
	}
}

func TestGuestHostname(t *testing.T) {
	for _, tc := range []struct {
		name string
		spec specs.Spec
		want string
	}{
		{"the spec's", specs.Spec{Hostname: "h1", Process: &specs.Process{Env: []string{"HOSTNAME=h2"}}}, "h1"},
		{"CRI's environment", specs.Spec{Process: &specs.Process{Env: []string{"PATH=/bin", "HOSTNAME=pod-0"}}}, "pod-0"},
		{"none", specs.Spec{Process: &specs.Process{Env: []string{"PATH=/bin"}}}, ""},
		{"no process", specs.Spec{}, ""},
	} {
		if got := guestHostname(&tc.spec); got != tc.want {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
}

// Every monitor is filtered unless the spec's profile is unconfined, or
// the spec has none and the host config turned the default off.
func TestMonitorFiltered(t *testing.T) {
	off := false
	on := true
	withProfile := func(p *specs.LinuxSeccomp) *specs.Spec { return &specs.Spec{Linux: &specs.Linux{Seccomp: p}} }
	rule := []specs.LinuxSyscall{{Names: []string{"keyctl"}, Action: specs.ActErrno}}
	for _, tc := range []struct {
		name string
		spec *specs.Spec
		cfg  monitors.Config
		want bool
	}{
		{"no linux section", &specs.Spec{}, monitors.Config{}, true},
		{"no profile", withProfile(nil), monitors.Config{}, true},
		{"no profile, seccomp = true", withProfile(nil), monitors.Config{Seccomp: &on}, true},
		{"no profile, seccomp = false", withProfile(nil), monitors.Config{Seccomp: &off}, false},
		{"a profile", withProfile(&specs.LinuxSeccomp{DefaultAction: specs.ActErrno}), monitors.Config{}, true},
		{"a profile, seccomp = false", withProfile(&specs.LinuxSeccomp{DefaultAction: specs.ActErrno}), monitors.Config{Seccomp: &off}, true},
		{"an allow-all profile with a rule", withProfile(&specs.LinuxSeccomp{DefaultAction: specs.ActAllow, Syscalls: rule}), monitors.Config{}, true},
		{"an unconfined profile", withProfile(&specs.LinuxSeccomp{DefaultAction: specs.ActAllow}), monitors.Config{}, false},
	} {
		if got := monitorFiltered(tc.spec, tc.cfg); got != tc.want {
			t.Errorf("%s: filtered %v, want %v", tc.name, got, tc.want)
		}
	}
}
