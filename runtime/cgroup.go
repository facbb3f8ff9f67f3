package runtime

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/containerd/cgroups/v3"
	"github.com/containerd/cgroups/v3/cgroup1"
	"github.com/containerd/cgroups/v3/cgroup2"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// cgroup is the container's cgroup, v1 or v2, behind one small interface.
type cgroup interface {
	AddProc(pid int) error
	Freeze() error
	Thaw() error
	Update(res *specs.LinuxResources) error
	// Metrics returns *v1.Metrics or *v2.Metrics from cgroups/v3's stats
	// packages: the types CRI and ctr accept.
	Metrics() (any, error)
	// OOMEvents reports each OOM kill in the cgroup until done closes.
	OOMEvents(done <-chan struct{}) (<-chan struct{}, error)
	// OOMKills is how many processes the kernel's OOM killer ended in the
	// cgroup so far.
	OOMKills() uint64
	Delete() error
}

func validCgroupPath(path string) error {
	if !strings.HasPrefix(path, "/") || strings.Contains(path, ":") {
		return fmt.Errorf("cgroupsPath %q: only cgroupfs paths (/a/b) are supported", path)
	}
	return nil
}

// newCgroup creates (or joins) the cgroup at path with the spec's limits;
// res must already allow the monitor's devices (withMonitorDevices).
func newCgroup(path string, res *specs.LinuxResources) (cgroup, error) {
	if err := validCgroupPath(path); err != nil {
		return nil, err
	}
	if cgroups.Mode() == cgroups.Unified {
		m, err := cgroup2.NewManager("/sys/fs/cgroup", path, cgroup2.ToResources(res))
		if err != nil {
			return nil, fmt.Errorf("create cgroup %s: %w", path, err)
		}
		return cgroupV2{m}, nil
	}
	cg, err := cgroup1.New(cgroup1.StaticPath(path), res)
	if err != nil {
		return nil, fmt.Errorf("create cgroup %s: %w", path, err)
	}
	return cgroupV1{cg}, nil
}

// loadCgroup opens an existing cgroup; a missing one is reported as
// os.ErrNotExist.
func loadCgroup(path string) (cgroup, error) {
	if err := validCgroupPath(path); err != nil {
		return nil, err
	}
	if cgroups.Mode() == cgroups.Unified {
		if _, err := os.Stat("/sys/fs/cgroup" + path); err != nil {
			return nil, err
		}
		m, err := cgroup2.Load(path)
		if err != nil {
			return nil, err
		}
		return cgroupV2{m}, nil
	}
	cg, err := cgroup1.Load(cgroup1.StaticPath(path))
	if err != nil {
		if errors.Is(err, cgroup1.ErrCgroupDeleted) {
			return nil, os.ErrNotExist
		}
		return nil, err
	}
	return cgroupV1{cg}, nil
}

type cgroupV1 struct{ cg cgroup1.Cgroup }

func (c cgroupV1) AddProc(pid int) error { return c.cg.AddProc(uint64(pid)) }
func (c cgroupV1) Freeze() error         { return c.cg.Freeze() }
func (c cgroupV1) Thaw() error           { return c.cg.Thaw() }
func (c cgroupV1) Delete() error         { return c.cg.Delete() }
func (c cgroupV1) Update(res *specs.LinuxResources) error {
	return c.cg.Update(res)
}
func (c cgroupV1) Metrics() (any, error) { return c.cg.Stat(cgroup1.IgnoreNotExist) }

func (c cgroupV1) OOMKills() uint64 {
	m, err := c.cg.Stat(cgroup1.IgnoreNotExist)
	if err != nil {
		return 0
	}
	return m.GetMemoryOomControl().GetOomKill()
}

func (c cgroupV1) OOMEvents(done <-chan struct{}) (<-chan struct{}, error) {
	fd, err := c.cg.OOMEventFD()
	if err != nil {
		return nil, err
	}
	return readEventFD(int(fd), done)
}

type cgroupV2 struct{ m *cgroup2.Manager }

func (c cgroupV2) AddProc(pid int) error { return c.m.AddProc(uint64(pid)) }
func (c cgroupV2) Freeze() error         { return c.m.Freeze() }
func (c cgroupV2) Thaw() error           { return c.m.Thaw() }
func (c cgroupV2) Delete() error         { return c.m.Delete() }
func (c cgroupV2) Update(res *specs.LinuxResources) error {
	return c.m.Update(cgroup2.ToResources(res))
}
func (c cgroupV2) Metrics() (any, error) { return c.m.Stat() }

func (c cgroupV2) OOMKills() uint64 {
	m, err := c.m.Stat()
	if err != nil {
		return 0
	}
	return m.GetMemoryEvents().GetOomKill()
}

func (c cgroupV2) OOMEvents(done <-chan struct{}) (<-chan struct{}, error) {
	events, errs := c.m.EventChan()
	out := make(chan struct{}, 1)
	go func() {
		var last uint64
		for {
			select {
			case <-done:
				return
			case err := <-errs:
				if err != nil {
					return
				}
			case e := <-events:
				if e.OOMKill > last {
					last = e.OOMKill
					select {
					case out <- struct{}{}:
					default:
					}
				}
			}
		}
	}()
	return out, nil
}

// monitorDevices are the host character devices the launcher and the
// monitor open: /dev/null and /dev/urandom of the confined root (the Go
// runtime of the launcher opens /dev/null when it lacks a stdio fd), and
// /dev/kvm, /dev/net/tun and /dev/vhost-net on the guest's behalf. The
// spec's device rules are written for a container process; a spec that
// denies every device (containerd's default without its device list)
// would otherwise kill the launcher at start ("cannot open standard fds")
// and fail the tap ("operation not permitted") and KVM.
var monitorDevices = [][2]int64{{1, 3}, {1, 9}, {10, 232}, {10, 200}, {10, 238}}

// withMonitorDevices returns a copy of res that also allows the monitor's
// devices and disks, the host block devices a guest boots from.
func withMonitorDevices(res *specs.LinuxResources, disks []specs.LinuxDeviceCgroup) *specs.LinuxResources {
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

// blockDeviceRules allow the monitor the block devices at paths.
func blockDeviceRules(paths []string) ([]specs.LinuxDeviceCgroup, error) {
	var rules []specs.LinuxDeviceCgroup
	for _, p := range paths {
		var st unix.Stat_t
		if err := unix.Stat(p, &st); err != nil {
			return nil, fmt.Errorf("disk %s: %w", p, err)
		}
		major, minor := int64(unix.Major(st.Rdev)), int64(unix.Minor(st.Rdev))
		rules = append(rules, specs.LinuxDeviceCgroup{Allow: true, Type: "b", Major: &major, Minor: &minor, Access: "rwm"})
	}
	return rules, nil
}
