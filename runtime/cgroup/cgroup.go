// Package cgroup is a container's cgroup, v1 or v2: limits, the freezer,
// OOM events and the device rules a monitor needs.
package cgroup

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/containerd/cgroups/v3"
	"github.com/containerd/cgroups/v3/cgroup1"
	"github.com/containerd/cgroups/v3/cgroup2"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// Cgroup is the container's cgroup, v1 or v2, behind one small interface.
type Cgroup interface {
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

// New creates (or joins) the cgroup at path with the spec's limits;
// res must already allow the monitor's devices (WithMonitorDevices).
func New(path string, res *specs.LinuxResources) (Cgroup, error) {
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

// Load opens an existing cgroup; a missing one is reported as
// os.ErrNotExist.
func Load(path string) (Cgroup, error) {
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

// Delete removes the cgroup, retrying briefly while the kernel is
// still tearing down the processes of the dead pid namespace.
func Delete(path string) error {
	var err error
	for i := 0; i < 50; i++ {
		var cg Cgroup
		cg, err = Load(path)
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		if err == nil {
			if err = cg.Delete(); err == nil {
				return nil
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("delete cgroup %s: %w", path, err)
}
