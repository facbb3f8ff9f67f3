package cgroup

import (
	"fmt"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// monitorDevices are the host character devices the launcher and the
// monitor open: /dev/null and /dev/urandom of the confined root (the Go
// runtime of the launcher opens /dev/null when it lacks a stdio fd), and
// /dev/kvm, /dev/net/tun and /dev/vhost-net on the guest's behalf. The
// spec's device rules are written for a container process; a spec that
// denies every device (containerd's default without its device list)
// would otherwise kill the launcher at start ("cannot open standard fds")
// and fail the tap ("operation not permitted") and KVM.
var monitorDevices = [][2]int64{{1, 3}, {1, 9}, {10, 232}, {10, 200}, {10, 238}}

// WithMonitorDevices returns a copy of res that also allows the monitor's
// devices and disks, the host block devices a guest boots from.
func WithMonitorDevices(res *specs.LinuxResources, disks []specs.LinuxDeviceCgroup) *specs.LinuxResources {
	out := specs.LinuxResources{}
	if res != nil {
		out = *res
	}
	out.Devices = append([]specs.LinuxDeviceCgroup(nil), out.Devices...)
	for _, d := range monitorDevices {
		major, minor := d[0], d[1]
		out.Devices = append(out.Devices, specs.LinuxDeviceCgroup{Allow: true, Type: "c", Major: &major, Minor: &minor, Access: "rwm"})
	}
	out.Devices = append(out.Devices, disks...)
	return &out
}

// BlockDeviceRules allow the monitor the block devices at paths: only to
// read those readOnly tells, so that a read-only volume stays read-only
// even to a monitor that would open it for writing.
func BlockDeviceRules(paths []string, readOnly func(path string) bool) ([]specs.LinuxDeviceCgroup, error) {
	var rules []specs.LinuxDeviceCgroup
	for _, p := range paths {
		var st unix.Stat_t
		if err := unix.Stat(p, &st); err != nil {
			return nil, fmt.Errorf("disk %s: %w", p, err)
		}
		major, minor := int64(unix.Major(st.Rdev)), int64(unix.Minor(st.Rdev))
		access := "rwm"
		if readOnly != nil && readOnly(p) {
			access = "r"
		}
		rules = append(rules, specs.LinuxDeviceCgroup{Allow: true, Type: "b", Major: &major, Minor: &minor, Access: access})
	}
	return rules, nil
}
