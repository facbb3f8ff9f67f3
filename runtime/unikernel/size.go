package unikernel

import (
	"fmt"
	"math"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/urunc-dev/containerd-shim-urunc-v2/monitors"
)

// minGuestMemoryMB is the least memory limit a guest is booted with. No
// guest type runs in less: the smallest (solo5 and Unikraft unikernels)
// need a few MiB for their image, heap and stacks, qemu's firmware
// takes about 1 MiB of the guest's RAM before the kernel, and a Linux
// guest needs several times this. A smaller limit is a mistake in the
// unit (512Ki for 512Mi), refused at Create rather than booted into a
// guest that dies without saying why.
const minGuestMemoryMB = 16

const mib = 1 << 20

// maxGuestVCPUs is the most vCPUs a guest is booted with: KVM's own bound
// on x86 (KVM_MAX_VCPUS). A CPU quota asking for more is a mistake, refused
// at Create rather than handed to the monitor.
const maxGuestVCPUs = 4096

// vmSize is how big a VM is and what its container's cgroup is given for
// it. The guest's RAM is the container's memory limit, what the user
// asked for; the monitor runs in the same cgroup beside it, so the
// cgroup's limit is the memory limit plus the monitor's own overhead
// (monitors.Config.MemoryOverheadMB). In Kubernetes the RuntimeClass's
// overhead.podFixed.memory declares at least that overhead, so that the
// pod's cgroup (its containers' limits plus the overhead, set by the
// kubelet) holds both.
type vmSize struct {
	memoryMB, vcpus int
	// limit is the spec's memory limit in bytes, the guest's RAM; 0 when
	// the spec has none (the guest gets the monitor's default RAM, and
	// the cgroup no memory limit).
	limit int64
	// overhead is the monitor's own memory in bytes.
	overhead int64
}

// sizeVM takes the guest's RAM from the spec's memory limit and its vCPUs
// from the CPU quota (rounded up), falling back to the monitor's host
// defaults. A memory limit below minGuestMemoryMB is refused, naming it.
// extraOverheadMB is what the guest adds to the monitor's overhead (a
// guest with the agent: monitors.AgentMemoryOverheadMB).
func sizeVM(spec *specs.Spec, mcfg monitors.Config, extraOverheadMB int) (vmSize, error) {
	overheadMB := mcfg.MemoryOverheadMB + extraOverheadMB
	s := vmSize{memoryMB: mcfg.DefaultMemoryMB, vcpus: mcfg.DefaultVCPUs, overhead: int64(overheadMB) * mib}
	if spec.Linux == nil || spec.Linux.Resources == nil {
		return s, nil
	}
	res := spec.Linux.Resources
	if l := memoryLimit(res); l > 0 {
		if l < minGuestMemoryMB*mib {
			return s, fmt.Errorf("memory limit %s is below %d MiB, the least RAM a guest is booted with: the guest's RAM is the container's memory limit",
				describeBytes(l), minGuestMemoryMB)
		}
		// The cgroup gets the limit plus the overhead: a sum past int64
		// would reach it as a negative limit.
		if l > math.MaxInt64-s.overhead {
			return s, fmt.Errorf("memory limit %s: with the monitor's overhead of %d MiB it exceeds the largest limit a cgroup takes", describeBytes(l), overheadMB)
		}
		if res.Memory.Swap != nil && *res.Memory.Swap > math.MaxInt64-s.overhead {
			return s, fmt.Errorf("memory+swap limit %s: with the monitor's overhead of %d MiB it exceeds the largest limit a cgroup takes", describeBytes(*res.Memory.Swap), overheadMB)
		}
		s.limit, s.memoryMB = l, int(l/mib)
	}
	if res.CPU != nil && res.CPU.Quota != nil && *res.CPU.Quota > 0 && res.CPU.Period != nil && *res.CPU.Period > 0 {
		q, p := uint64(*res.CPU.Quota), *res.CPU.Period
		// Rounded up without q+p-1, which overflows for a large quota.
		v := q / p
		if q%p != 0 {
			v++
		}
		if v > maxGuestVCPUs {
			return s, fmt.Errorf("CPU quota %d over period %d asks for %d vCPUs, more than the %d a guest is booted with", q, p, v, maxGuestVCPUs)
		}
		s.vcpus = int(v)
	}
	return s, nil
}

// memoryLimit is res's memory limit in bytes, 0 for none (unset, or -1:
// unlimited).
func memoryLimit(res *specs.LinuxResources) int64 {
	if res == nil || res.Memory == nil || res.Memory.Limit == nil || *res.Memory.Limit <= 0 {
		return 0
	}
	return *res.Memory.Limit
}

// cgroupResources returns a copy of res with the memory limit the
// container's cgroup is given: the guest's RAM plus the monitor's
// overhead, and the memory+swap limit (cgroup v1's memsw, which may not
// be below the memory limit) raised by the same overhead. Without a
// memory limit nothing is added.
func (s vmSize) cgroupResources(res *specs.LinuxResources) *specs.LinuxResources {
	if res == nil {
		return nil
	}
	out := *res
	if s.limit <= 0 || res.Memory == nil {
		return &out
	}
	mem := *res.Memory
	out.Memory = &mem
	if memoryLimit(res) > 0 {
		l := *res.Memory.Limit + s.overhead
		mem.Limit = &l
	}
	if res.Memory.Swap != nil && *res.Memory.Swap > 0 {
		sw := *res.Memory.Swap + s.overhead
		mem.Swap = &sw
	}
	return &out
}

// updateResources is cgroupResources for a running VM's new resources
// (the kubelet's UpdateContainerResources, an in-place resize, ctr task
// update). The guest's RAM was fixed at boot and cannot change while it
// runs (no memory hotplug or balloon is driven): a memory limit other than
// the one the VM was booted with is refused, saying so, and nothing is
// applied; restarting the container boots a VM of the new size. Without a
// memory limit, or with the same one, the rest (CPU quota and shares,
// pids) is applied, the cgroup's memory limit staying the guest's RAM plus
// the overhead.
func (s vmSize) updateResources(res *specs.LinuxResources) (*specs.LinuxResources, error) {
	if res != nil && res.Memory != nil && res.Memory.Limit != nil {
		if got := memoryLimit(res); got != s.limit {
			booted := "its memory limit of " + describeBytes(s.limit)
			if s.limit == 0 {
				booted = "the monitor's default, the container having no memory limit"
			}
			asked := "no limit"
			if got > 0 {
				asked = describeBytes(got)
			}
			return nil, fmt.Errorf("memory limit %s: the guest's RAM was fixed at boot at %d MiB from %s, and a running VM's RAM cannot change; restart the container to resize it (Kubernetes: resizePolicy memory: RestartContainer): %w",
				asked, s.memoryMB, booted, errdefs.ErrFailedPrecondition)
		}
	}
	return s.cgroupResources(res), nil
}

// describeBytes renders a byte count, with the largest binary unit that
// divides it as Kubernetes quantities are written: "209715200 bytes
// (200Mi)".
func describeBytes(n int64) string {
	for _, u := range []struct {
		shift uint
		name  string
	}{{30, "Gi"}, {20, "Mi"}, {10, "Ki"}} {
		if n > 0 && n%(1<<u.shift) == 0 {
			return fmt.Sprintf("%d bytes (%d%s)", n, n>>u.shift, u.name)
		}
	}
	return fmt.Sprintf("%d bytes", n)
}
