package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	goruntime "runtime"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// KVM ioctls and exit reasons (linux/kvm.h, x86-64 layouts).
const (
	kvmGetAPIVersion       = 0xAE00
	kvmCreateVM            = 0xAE01
	kvmGetVCPUMmapSize     = 0xAE04
	kvmGetSupportedCPUID   = 0xC008AE05 // _IOWR(KVMIO, 0x05, 8-byte kvm_cpuid2 header)
	kvmSetCPUID2           = 0x4008AE90
	kvmCreateVCPU          = 0xAE41
	kvmSetUserMemoryRegion = 0x4020AE46 // _IOW(KVMIO, 0x46, 32-byte region)
	kvmRun                 = 0xAE80
	kvmGetRegs             = 0x8090AE81 // _IOR(KVMIO, 0x81, 144-byte kvm_regs)
	kvmSetRegs             = 0x4090AE82
	kvmGetSregs            = 0x8138AE83 // _IOR(KVMIO, 0x83, 312-byte kvm_sregs)
	kvmSetSregs            = 0x4138AE84
	kvmAPIVersion          = 12

	kvmExitIO            = 2
	kvmExitHLT           = 5
	kvmExitShutdown      = 8
	kvmExitFailEntry     = 9
	kvmExitIntr          = 10
	kvmExitInternalError = 17

	kvmInternalErrorEmulation = 1
)

// kvmExitNames names the exit reasons a broken set-up gives.
var kvmExitNames = map[uint32]string{
	0: "UNKNOWN", 1: "EXCEPTION", kvmExitIO: "IO", 3: "HYPERCALL", 4: "DEBUG", kvmExitHLT: "HLT", 6: "MMIO",
	kvmExitShutdown: "SHUTDOWN (triple fault)", kvmExitFailEntry: "FAIL_ENTRY", kvmExitIntr: "INTR", kvmExitInternalError: "INTERNAL_ERROR",
}

// The probe guest takes the path a guest kernel takes at boot, by its own
// instructions: from real mode into 32-bit protected mode, then paging and
// 64-bit mode (some hosts' KVM, nested or PVM, runs real mode but hangs a
// guest at the switch). It reports each stage with an OUT to port 0x10
// and ends on HLT. A loop in 64-bit mode, timed between two OUTs, tells a
// vCPU that runs from one that crawls (emulated: a guest kernel then
// seems to hang). Assembled from (GNU as, loaded at guestCodeAddr):
//
//	.code16
//	cli; lgdtl gdt_desc; mov %cr0,%eax; or $1,%eax; mov %eax,%cr0
//	ljmpl $0x08, $pm32
//	.code32
//	pm32: mov $0x10,%ax; mov %ax,%ds; mov %ax,%es; mov %ax,%ss
//	mov $1,%al; out %al,$0x10                            # protected mode
//	mov %cr4,%eax; or $0x20,%eax; mov %eax,%cr4          # PAE
//	mov $pml4Addr,%eax; mov %eax,%cr3
//	mov $0xC0000080,%ecx; rdmsr; or $0x100,%eax; wrmsr   # EFER.LME
//	mov %cr0,%eax; or $0x80000000,%eax; mov %eax,%cr0    # paging
//	ljmp $0x18, $lm64
//	.code64
//	lm64: mov $2,%al; out %al,$0x10                      # 64-bit mode
//	mov $50000000,%ecx; 1: dec %ecx; jnz 1b               # loop: speed
//	mov $3,%al; out %al,$0x10
//	hlt
//	.align 8
//	gdt: .quad 0, 0x00cf9a000000ffff, 0x00cf92000000ffff, 0x00af9a000000ffff
//	gdt_desc: .word 31; .long gdt
var probeCode = []byte{
	0xfa, 0x66, 0x0f, 0x01, 0x16, 0x90, 0x10, 0x0f, 0x20, 0xc0, 0x66, 0x83,
	0xc8, 0x01, 0x0f, 0x22, 0xc0, 0x66, 0xea, 0x19, 0x10, 0x00, 0x00, 0x08,
	0x00, 0x66, 0xb8, 0x10, 0x00, 0x8e, 0xd8, 0x8e, 0xc0, 0x8e, 0xd0, 0xb0,
	0x01, 0xe6, 0x10, 0x0f, 0x20, 0xe0, 0x83, 0xc8, 0x20, 0x0f, 0x22, 0xe0,
	0xb8, 0x00, 0x20, 0x00, 0x00, 0x0f, 0x22, 0xd8, 0xb9, 0x80, 0x00, 0x00,
	0xc0, 0x0f, 0x32, 0x0d, 0x00, 0x01, 0x00, 0x00, 0x0f, 0x30, 0x0f, 0x20,
	0xc0, 0x0d, 0x00, 0x00, 0x00, 0x80, 0x0f, 0x22, 0xc0, 0xea, 0x58, 0x10,
	0x00, 0x00, 0x18, 0x00, 0xb0, 0x02, 0xe6, 0x10, 0xb9, 0x80, 0xf0, 0xfa,
	0x02, 0xff, 0xc9, 0x75, 0xfc, 0xb0, 0x03, 0xe6, 0x10, 0xf4, 0x66, 0x0f,
	0x1f, 0x44, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
	0xff, 0xff, 0x00, 0x00, 0x00, 0x9a, 0xcf, 0x00, 0xff, 0xff, 0x00, 0x00,
	0x00, 0x92, 0xcf, 0x00, 0xff, 0xff, 0x00, 0x00, 0x00, 0x9a, 0xaf, 0x00,
	0x1f, 0x00, 0x70, 0x10, 0x00, 0x00,
}

// probeStages names what each OUT value of the probe guest proves it
// reached; after the last it halts.
var probeStages = []string{1: "32-bit protected mode", 2: "64-bit mode", 3: "the end of a 64-bit loop"}

// loopStage is the OUT after the timed loop; maxLoopTime is how long its
// 50 million iterations may take. Hardware runs them in some 30 ms, TCG
// in about 0.1 s; a loaded host's scheduling adds some.
const (
	loopStage   = 3
	maxLoopTime = 1500 * time.Millisecond
)

const (
	probePort     = 0x10
	guestCodeAddr = 0x1000
	// The page tables the guest enables (identity map of the first
	// 2 MiB), written by us.
	pml4Addr     = 0x2000
	pdptAddr     = 0x3000
	pdAddr       = 0x4000
	guestMemSize = 0x10000
	// kvmProbeTimeout bounds the guest's run: it takes microseconds on a
	// working host; a vCPU that never exits is the hang the check is for.
	kvmProbeTimeout = 3 * time.Second
)

// vcpuExit is one return of KVM_RUN.
type vcpuExit struct {
	Reason uint32
	// For IO: direction (1 out), size, port and the first data byte.
	IODir, IOSize uint8
	IOPort        uint16
	IOData        byte
	// For INTERNAL_ERROR the suberror; for FAIL_ENTRY the hardware
	// reason.
	Suberror uint64
	// At is when the exit came, from the first KVM_RUN.
	At time.Duration
}

// kvmProbe is what running the probe guest gave.
type kvmProbe struct {
	Exits    []vcpuExit
	Err      error // an ioctl that failed, naming its step
	TimedOut bool
	Timeout  time.Duration
}

// kvmVerdict decides from the probe guest's run whether KVM runs guests:
// only an OUT for each stage, in order, then HLT say yes.
func kvmVerdict(p kvmProbe) (ok bool, detail string) {
	seen := describeExits(p.Exits)
	reached := "real mode"
	for i, e := range p.Exits {
		stage := i + 1
		switch {
		case e.Reason == kvmExitInternalError && e.Suberror == kvmInternalErrorEmulation:
			return false, "KVM internal error (emulation failure) in a test guest's " + reached
		case e.Reason == kvmExitInternalError:
			return false, fmt.Sprintf("KVM internal error (suberror %d) in a test guest's %s", e.Suberror, reached)
		case e.Reason == kvmExitFailEntry:
			return false, fmt.Sprintf("KVM could not enter a test guest in %s (hardware entry failure %#x)", reached, e.Suberror)
		case stage < len(probeStages):
			if e.Reason != kvmExitIO || e.IODir != 1 || e.IOPort != probePort || e.IOSize != 1 || int(e.IOData) != stage {
				return false, fmt.Sprintf("a test guest in %s exited with %s, want it to reach %s", reached, seen, probeStages[stage])
			}
			if stage == loopStage {
				if took := e.At - p.Exits[i-1].At; took > maxLoopTime {
					return false, fmt.Sprintf("a test guest's 64-bit loop took %s (hardware: some 30 ms): the vCPU crawls (emulated?), and guests seem to hang", took.Round(time.Millisecond))
				}
			}
			reached = probeStages[stage]
		case e.Reason == kvmExitHLT:
			return true, fmt.Sprintf("/dev/kvm ran a test guest from real mode through protected mode to 64-bit mode (its loop: %s) and HLT",
				(p.Exits[loopStage-1].At - p.Exits[loopStage-2].At).Round(time.Millisecond))
		default:
			return false, fmt.Sprintf("a test guest in %s exited with %s, want HLT", reached, seen)
		}
	}
	switch {
	case p.TimedOut:
		return false, fmt.Sprintf("a test guest's vCPU in %s ran %s without its next exit (exits: %s): guests hang here at 100%% CPU", reached, p.Timeout, seen)
	case p.Err != nil:
		return false, fmt.Sprintf("a test guest in %s: %v", reached, p.Err)
	}
	return false, fmt.Sprintf("a test guest in %s stopped: exits %s", reached, seen)
}

func describeExits(exits []vcpuExit) string {
	if len(exits) == 0 {
		return "none"
	}
	s := ""
	for i, e := range exits {
		if i > 0 {
			s += ", "
		}
		name := kvmExitNames[e.Reason]
		if name == "" {
			name = fmt.Sprintf("reason %d", e.Reason)
		}
		s += name
		if e.Reason == kvmExitIO {
			s += fmt.Sprintf(" port %#x dir %d size %d data %d", e.IOPort, e.IODir, e.IOSize, e.IOData)
		}
	}
	return s
}

// runKVMProbe creates a VM with one vCPU in real mode and memory holding
// probeCode, runs it, and gives up after timeout.
func runKVMProbe(dev string, timeout time.Duration) kvmProbe {
	results := make(chan kvmProbe, 1)
	var tid atomic.Int32
	var timedOut atomic.Bool
	go func() {
		// The vCPU belongs to this thread; the kick below targets it.
		goruntime.LockOSThread()
		defer goruntime.UnlockOSThread()
		tid.Store(int32(unix.Gettid()))
		results <- probeVCPU(dev, &timedOut)
	}()
	select {
	case r := <-results:
		return r
	case <-time.After(timeout):
	}
	// Kick the vCPU out: a signal to its thread makes KVM_RUN return
	// EINTR (SIGURG, which the Go runtime takes and ignores), and the
	// loop then sees the flag. Kicked again in case the first landed
	// just before the thread entered KVM_RUN.
	timedOut.Store(true)
	giveUp := time.After(time.Second)
	kick := time.NewTicker(50 * time.Millisecond)
	defer kick.Stop()
	for {
		if t := tid.Load(); t != 0 {
			_ = unix.Tgkill(unix.Getpid(), int(t), unix.SIGURG)
		}
		select {
		case r := <-results:
			r.TimedOut, r.Timeout = true, timeout
			return r
		case <-kick.C:
		case <-giveUp:
			// Stuck in the kernel: this command exits soon and takes
			// the VM with it.
			return kvmProbe{TimedOut: true, Timeout: timeout}
		}
	}
}

func probeVCPU(dev string, timedOut *atomic.Bool) (p kvmProbe) {
	fail := func(step string, err error) kvmProbe {
		p.Err = fmt.Errorf("%s: %w", step, err)
		return p
	}
	kvm, err := unix.Open(dev, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return fail("open "+dev, err)
	}
	defer unix.Close(kvm)
	if v, err := unix.IoctlRetInt(kvm, kvmGetAPIVersion); err != nil || v != kvmAPIVersion {
		return fail("KVM API version", fmt.Errorf("%d (%v), want %d", v, err, kvmAPIVersion))
	}
	vm, err := unix.IoctlRetInt(kvm, kvmCreateVM)
	if err != nil {
		return fail("KVM_CREATE_VM", err)
	}
	defer unix.Close(vm)
	mem, err := unix.Mmap(-1, 0, guestMemSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_ANONYMOUS)
	if err != nil {
		return fail("guest memory", err)
	}
	defer unix.Munmap(mem)
	copy(mem[guestCodeAddr:], probeCode)
	le := binary.LittleEndian
	le.PutUint64(mem[pml4Addr:], pdptAddr|0x3) // present, writable
	le.PutUint64(mem[pdptAddr:], pdAddr|0x3)
	le.PutUint64(mem[pdAddr:], 0x83) // present, writable, a 2 MiB page at 0
	region := make([]byte, 32)       // slot, flags, guest_phys_addr (0), memory_size, userspace_addr
	binary.LittleEndian.PutUint64(region[16:], uint64(len(mem)))
	binary.LittleEndian.PutUint64(region[24:], uint64(uintptr(unsafe.Pointer(&mem[0]))))
	if err := ioctlPtr(vm, kvmSetUserMemoryRegion, region); err != nil {
		return fail("KVM_SET_USER_MEMORY_REGION", err)
	}
	vcpu, err := unix.IoctlRetInt(vm, kvmCreateVCPU)
	if err != nil {
		return fail("KVM_CREATE_VCPU", err)
	}
	defer unix.Close(vcpu)
	// Without CPUID entries the vCPU has no long mode: give it what KVM
	// supports, as a monitor does.
	cpuid, err := supportedCPUID(kvm)
	if err != nil {
		return fail("KVM_GET_SUPPORTED_CPUID", err)
	}
	if err := ioctlPtr(vcpu, kvmSetCPUID2, cpuid); err != nil {
		return fail("KVM_SET_CPUID2", err)
	}
	size, err := unix.IoctlRetInt(kvm, kvmGetVCPUMmapSize)
	if err != nil {
		return fail("KVM_GET_VCPU_MMAP_SIZE", err)
	}
	run, err := unix.Mmap(vcpu, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return fail("map the vCPU's run area", err)
	}
	defer unix.Munmap(run)
	sregs := make([]byte, 312)
	if err := ioctlPtr(vcpu, kvmGetSregs, sregs); err != nil {
		return fail("KVM_GET_SREGS", err)
	}
	// Real mode, code segment at 0, instruction pointer at the code.
	le.PutUint64(sregs[0:], 0)  // cs.base
	le.PutUint16(sregs[12:], 0) // cs.selector
	if err := ioctlPtr(vcpu, kvmSetSregs, sregs); err != nil {
		return fail("KVM_SET_SREGS", err)
	}
	regs := make([]byte, 144)
	binary.LittleEndian.PutUint64(regs[16*8:], guestCodeAddr) // rip
	binary.LittleEndian.PutUint64(regs[17*8:], 0x2)           // rflags: the reserved bit
	if err := ioctlPtr(vcpu, kvmSetRegs, regs); err != nil {
		return fail("KVM_SET_REGS", err)
	}
	start := time.Now()
	for len(p.Exits) < len(probeStages) {
		if timedOut.Load() {
			p.TimedOut = true
			return p
		}
		_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(vcpu), kvmRun, 0)
		if errno == unix.EINTR || errno == unix.EAGAIN {
			continue // the Go runtime's own signals, or our kick
		}
		if errno != 0 {
			return fail("KVM_RUN", errno)
		}
		e := vcpuExit{Reason: binary.LittleEndian.Uint32(run[8:]), At: time.Since(start)}
		switch e.Reason {
		case kvmExitIntr:
			continue
		case kvmExitIO:
			e.IODir, e.IOSize = run[32], run[33]
			e.IOPort = binary.LittleEndian.Uint16(run[34:])
			if off := binary.LittleEndian.Uint64(run[40:]); off < uint64(len(run)) {
				e.IOData = run[off]
			}
		case kvmExitInternalError:
			e.Suberror = uint64(binary.LittleEndian.Uint32(run[32:]))
		case kvmExitFailEntry:
			e.Suberror = binary.LittleEndian.Uint64(run[32:])
		}
		p.Exits = append(p.Exits, e)
		if e.Reason != kvmExitIO {
			break
		}
	}
	return p
}

// supportedCPUID returns struct kvm_cpuid2 (nent, padding, then 40-byte
// entries) filled by KVM_GET_SUPPORTED_CPUID, growing it while KVM says
// E2BIG.
func supportedCPUID(kvm int) ([]byte, error) {
	for n := 64; n <= 4096; n *= 2 {
		buf := make([]byte, 8+40*n)
		binary.LittleEndian.PutUint32(buf, uint32(n))
		err := ioctlPtr(kvm, kvmGetSupportedCPUID, buf)
		if err == unix.E2BIG {
			continue
		}
		return buf, err
	}
	return nil, unix.E2BIG
}

func ioctlPtr(fd int, req uint, buf []byte) error {
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), uintptr(req), uintptr(unsafe.Pointer(&buf[0])))
	if errno != 0 {
		return errno
	}
	return nil
}

// errNoVCPUCheck is why the vCPU is not run off x86-64: the probe guest
// is x86 code.
var errNoVCPUCheck = errors.New("the vCPU run check is x86-64 only")
