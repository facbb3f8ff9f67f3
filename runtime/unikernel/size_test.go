package unikernel

import (
	"errors"
	"math"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/urunc-dev/containerd-shim-urunc-v2/monitors"
)

func i64(v int64) *int64   { return &v }
func u64(v uint64) *uint64 { return &v }
func withResources(r *specs.LinuxResources) *specs.Spec {
	return &specs.Spec{Linux: &specs.Linux{Resources: r}}
}

// The guest's RAM is the memory limit and its vCPUs the CPU quota rounded
// up; without them the monitor's defaults; a limit below the floor is
// refused, naming it.
func TestSizeVM(t *testing.T) {
	mcfg := monitors.Config{DefaultMemoryMB: 256, DefaultVCPUs: 1, MemoryOverheadMB: 80}
	for _, tc := range []struct {
		name         string
		spec         *specs.Spec
		memMB, vcpus int
		limit        int64
		wantErr      string
	}{
		{"no linux section", &specs.Spec{}, 256, 1, 0, ""},
		{"no resources", withResources(nil), 256, 1, 0, ""},
		{"200Mi and 1.5 CPUs", withResources(&specs.LinuxResources{
			Memory: &specs.LinuxMemory{Limit: i64(200 << 20)},
			CPU:    &specs.LinuxCPU{Quota: i64(150000), Period: u64(100000)}}), 200, 2, 200 << 20, ""},
		{"a limit not a whole MiB rounds the RAM down", withResources(&specs.LinuxResources{
			Memory: &specs.LinuxMemory{Limit: i64(100<<20 + 512<<10)}}), 100, 1, 100<<20 + 512<<10, ""},
		{"unlimited (-1)", withResources(&specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: i64(-1)}}), 256, 1, 0, ""},
		{"the floor itself", withResources(&specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: i64(16 << 20)}}), 16, 1, 16 << 20, ""},
		{"below the floor", withResources(&specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: i64(512 << 10)}}), 0, 0, 0,
			"memory limit 524288 bytes (512Ki) is below 16 MiB, the least RAM a guest is booted with"},
		{"one byte", withResources(&specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: i64(1)}}), 0, 0, 0, "memory limit 1 bytes is below 16 MiB"},
		{"a quota without a period", withResources(&specs.LinuxResources{CPU: &specs.LinuxCPU{Quota: i64(200000)}}), 256, 1, 0, ""},
		{"exactly 2 CPUs", withResources(&specs.LinuxResources{CPU: &specs.LinuxCPU{Quota: i64(200000), Period: u64(100000)}}), 256, 2, 0, ""},
	} {
		s, err := sizeVM(tc.spec, mcfg, 0)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("%s: error %v, want %q", tc.name, err, tc.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if s.memoryMB != tc.memMB || s.vcpus != tc.vcpus || s.limit != tc.limit || s.overhead != 80<<20 {
			t.Errorf("%s: %+v, want %d MiB, %d vCPUs, limit %d, overhead 80 MiB", tc.name, s, tc.memMB, tc.vcpus, tc.limit)
		}
	}
}

// What the guest adds to the monitor's overhead (the agent's share) is
// counted on top of it.
func TestSizeVMExtraOverhead(t *testing.T) {
	mcfg := monitors.Config{DefaultMemoryMB: 256, DefaultVCPUs: 1, MemoryOverheadMB: 64}
	spec := withResources(&specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: i64(200 << 20)}})
	for _, extraMB := range []int{0, 16} {
		s, err := sizeVM(spec, mcfg, extraMB)
		if err != nil {
			t.Fatal(err)
		}
		if s.overhead != int64(64+extraMB)<<20 || s.memoryMB != 200 {
			t.Errorf("%d MiB more: %+v, want 200 MiB of RAM and %d MiB of overhead", extraMB, s, 64+extraMB)
		}
	}
}

// The container's cgroup gets the guest's RAM plus the monitor's
// overhead, and memory+swap moves with it; the rest of the resources is
// left as it was, and the caller's copy untouched.
func TestCgroupResources(t *testing.T) {
	const over = 80 << 20
	sized := vmSize{memoryMB: 200, vcpus: 1, limit: 200 << 20, overhead: over}
	unsized := vmSize{memoryMB: 256, vcpus: 1, overhead: over}
	for _, tc := range []struct {
		name        string
		size        vmSize
		res         *specs.LinuxResources
		limit, swap int64 // 0: want nil
	}{
		{"limit and swap", sized, &specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: i64(200 << 20), Swap: i64(200 << 20)}}, 200<<20 + over, 200<<20 + over},
		{"limit, no swap", sized, &specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: i64(200 << 20)}}, 200<<20 + over, 0},
		{"unlimited swap stays", sized, &specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: i64(200 << 20), Swap: i64(-1)}}, 200<<20 + over, -1},
		{"no limit: nothing added", unsized, &specs.LinuxResources{Memory: &specs.LinuxMemory{Swap: i64(300 << 20)}}, 0, 300 << 20},
		{"no memory section", sized, &specs.LinuxResources{CPU: &specs.LinuxCPU{Quota: i64(1)}}, 0, 0},
	} {
		var before string
		if tc.res.Memory != nil && tc.res.Memory.Limit != nil {
			before = describeBytes(*tc.res.Memory.Limit)
		}
		out := tc.size.cgroupResources(tc.res)
		got := func(p *int64) int64 {
			if p == nil {
				return 0
			}
			return *p
		}
		var limit, swap int64
		if out.Memory != nil {
			limit, swap = got(out.Memory.Limit), got(out.Memory.Swap)
		}
		if limit != tc.limit || swap != tc.swap {
			t.Errorf("%s: limit %d, swap %d; want %d, %d", tc.name, limit, swap, tc.limit, tc.swap)
		}
		if tc.res.Memory != nil && tc.res.Memory.Limit != nil && describeBytes(*tc.res.Memory.Limit) != before {
			t.Errorf("%s: the caller's resources were changed", tc.name)
		}
		if tc.res.CPU != out.CPU {
			t.Errorf("%s: CPU section not kept", tc.name)
		}
	}
	if (vmSize{}).cgroupResources(nil) != nil {
		t.Error("nil resources: want nil")
	}
}

// A running VM's RAM cannot change: an update with another memory limit
// is refused, saying so, while one with the same limit, or none, is
// applied with the overhead kept on top.
func TestUpdateResources(t *testing.T) {
	const over = 80 << 20
	sized := vmSize{memoryMB: 200, vcpus: 2, limit: 200 << 20, overhead: over}
	unsized := vmSize{memoryMB: 256, vcpus: 1, overhead: over}
	cpuOnly := &specs.LinuxResources{CPU: &specs.LinuxCPU{Quota: i64(50000), Period: u64(100000)}}
	for _, tc := range []struct {
		name      string
		size      vmSize
		res       *specs.LinuxResources
		wantLimit int64
		wantErr   string
	}{
		{"same limit, new CPU quota", sized, &specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: i64(200 << 20)}, CPU: cpuOnly.CPU}, 200<<20 + over, ""},
		{"CPU only", sized, cpuOnly, 0, ""},
		{"nil", sized, nil, 0, ""},
		{"a larger limit", sized, &specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: i64(300 << 20)}}, 0,
			"memory limit 314572800 bytes (300Mi): the guest's RAM was fixed at boot at 200 MiB from its memory limit of 209715200 bytes (200Mi), and a running VM's RAM cannot change; restart the container to resize it (Kubernetes: resizePolicy memory: RestartContainer)"},
		{"a smaller limit", sized, &specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: i64(100 << 20)}}, 0, "memory limit 104857600 bytes (100Mi): the guest's RAM was fixed at boot at 200 MiB"},
		{"the limit removed", sized, &specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: i64(-1)}}, 0, "memory limit no limit: the guest's RAM was fixed at boot at 200 MiB"},
		{"a limit where there was none", unsized, &specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: i64(512 << 20)}}, 0,
			"fixed at boot at 256 MiB from the monitor's default, the container having no memory limit"},
		{"still none", unsized, &specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: i64(-1)}}, -1, ""},
	} {
		out, err := tc.size.updateResources(tc.res)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !errors.Is(err, errdefs.ErrFailedPrecondition) {
				t.Errorf("%s: error %v, want %q (failed precondition)", tc.name, err, tc.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		var limit int64
		if out != nil && out.Memory != nil && out.Memory.Limit != nil {
			limit = *out.Memory.Limit
		}
		if limit != tc.wantLimit {
			t.Errorf("%s: cgroup memory limit %d, want %d", tc.name, limit, tc.wantLimit)
		}
	}
}

// A memory or memory+swap limit so large that the monitor's overhead on
// top of it overflows int64, or a CPU quota and period whose rounding up
// overflows, is refused at plan time: it would otherwise reach the
// cgroup as a negative limit and the monitor as a negative vCPU count.
func TestSizeVMRefusesLimitsThatOverflow(t *testing.T) {
	mcfg := monitors.Config{DefaultMemoryMB: 256, DefaultVCPUs: 1, MemoryOverheadMB: 32}
	for name, res := range map[string]*specs.LinuxResources{
		"memory": {Memory: &specs.LinuxMemory{Limit: i64(math.MaxInt64)}},
		"swap":   {Memory: &specs.LinuxMemory{Limit: i64(256 * mib), Swap: i64(math.MaxInt64 - mib)}},
		"quota":  {CPU: &specs.LinuxCPU{Quota: i64(math.MaxInt64), Period: u64(100000)}},
		"vcpus":  {CPU: &specs.LinuxCPU{Quota: i64(math.MaxInt64), Period: u64(1)}},
	} {
		s, err := sizeVM(withResources(res), mcfg, 0)
		if err == nil {
			t.Errorf("%s: sized %+v (cgroup: %+v), want an error", name, s, s.cgroupResources(res).Memory)
		}
	}
	// The largest sane ones still size.
	s, err := sizeVM(withResources(&specs.LinuxResources{
		Memory: &specs.LinuxMemory{Limit: i64(1 << 40), Swap: i64(1 << 41)},
		CPU:    &specs.LinuxCPU{Quota: i64(6400000), Period: u64(100000)},
	}), mcfg, 0)
	if err != nil || s.vcpus != 64 || s.memoryMB != 1<<20 {
		t.Fatalf("1 TiB, 64 CPUs: %+v, %v", s, err)
	}
	// A period past int64 is a tiny share of a CPU: one vCPU, not a
	// negative count.
	s, err = sizeVM(withResources(&specs.LinuxResources{CPU: &specs.LinuxCPU{Quota: i64(100000), Period: u64(math.MaxUint64)}}), mcfg, 0)
	if err != nil || s.vcpus != 1 {
		t.Fatalf("period 2^64-1: %+v, %v", s, err)
	}
}
