package monitors

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/urunc-dev/containerd-shim-urunc-v2/internal/elfdyn"
	"github.com/urunc-dev/containerd-shim-urunc-v2/rootfs"
)

// qemu runs a guest under qemu-system-x86_64.
type qemu struct {
	binary string
	cfg    Config
}

func newQemu(binary string, cfg Config) Monitor { return &qemu{binary: binary, cfg: cfg} }

func (q *qemu) Name() string                 { return "qemu" }
func (q *qemu) Binary() string               { return q.binary }
func (q *qemu) NeedsKVM() bool               { return q.cfg.Accel != "tcg" }
func (q *qemu) Control() Control             { return ControlInheritedFD }
func (q *qemu) SupportsInheritedDisks() bool { return true }

// AgentTransport: a virtio-serial port on an inherited socket, since
// vhost-vsock is not on every host.
func (q *qemu) AgentTransport() AgentTransport { return AgentVirtioSerial }

// FiltersItself: qemu's -sandbox, which only a qemu built with libseccomp
// has; any other refuses the option and does not start.
func (q *qemu) FiltersItself(context.Context, Runner) bool {
	info, err := elfdyn.Read(q.binary)
	if err != nil {
		return false
	}
	for _, l := range info.Needed {
		if strings.HasPrefix(l, "libseccomp.so") {
			return true
		}
	}
	return false
}

// SupportsShare: qemu serves 9p itself and speaks vhost-user to virtiofsd.
func (q *qemu) SupportsShare(kind rootfs.Kind) bool {
	return kind == rootfs.Kind9p || kind == rootfs.KindVirtiofs
}

// DataPaths are where Debian (and most distributions) keep qemu's firmware,
// option ROMs and loadable modules. Missing any of them fails a boot with
// "could not load PC BIOS" or "could not load module for type
// 'tcg-accel-ops'", so the confined root carries them all at their host paths.
func (q *qemu) DataPaths() []string {
	return []string{
		q.cfg.DataPath,
		"/usr/share/qemu",
		"/usr/share/seabios",
		"/usr/lib/ipxe/qemu",
		"/usr/lib/x86_64-linux-gnu/qemu",
		"/usr/lib64/qemu",
	}
}

// TCGTranslationCacheMB bounds qemu's translation cache under TCG (its
// tb-size). Unbounded, qemu reserves up to 1 GiB for it and fills it as
// the guest runs new code, so the monitor's memory beside the guest's RAM
// would grow with the guest's code instead of staying under the cgroup's
// share for it; qemu flushes a full cache and translates again. The
// figure is counted in qemu's default memory overhead under TCG.
const TCGTranslationCacheMB = 32

// TCGAgentTranslationCacheMB is what a guest with the guest agent adds to
// the translation cache: the agent's Go code is translated beside the
// kernel's and the app's, which overflowed 32 MiB, and after qemu's flush
// the app ran about 0.1 s longer (README, "The guest agent's cost").
const TCGAgentTranslationCacheMB = 16

// AgentMemoryOverheadMB is what a guest with the guest agent adds to its
// monitor's memory overhead, on top of the host config's
// memory_overhead_mb as set or defaulted: the larger translation cache is
// the shim's choice, not the operator's.
func AgentMemoryOverheadMB(m Monitor) int {
	if q, ok := m.(*qemu); ok && q.tcg() {
		return TCGAgentTranslationCacheMB
	}
	return 0
}

func (q *qemu) tcg() bool { return q.cfg.Accel == "tcg" }

// tcgTranslationCacheMB is the translation cache qemu gives a guest under
// TCG: the agent's share is the one AgentMemoryOverheadMB counts, so the
// cache and the cgroup's overhead cannot part.
func (q *qemu) tcgTranslationCacheMB(g Guest) int {
	if g.Agent != nil {
		return TCGTranslationCacheMB + AgentMemoryOverheadMB(q)
	}
	return TCGTranslationCacheMB
}

func (q *qemu) Args(g Guest) ([]string, error) {
	if g.Kernel == "" {
		return nil, fmt.Errorf("qemu: no guest kernel")
	}
	accel := q.cfg.Accel
	if accel == "" {
		accel = "kvm"
	}
	accelOpt := accel
	if q.tcg() {
		accelOpt += ",tb-size=" + strconv.Itoa(q.tcgTranslationCacheMB(g))
	}
	args := []string{
		q.binary,
		"-accel", accelOpt,
		"-m", strconv.Itoa(g.MemoryMB) + "M",
		"-smp", strconv.Itoa(g.VCPUs),
		"-nodefaults", "-no-user-config", "-display", "none", "-vga", "none",
		"-no-reboot",
		// signal=off: a ^C typed on an interactive console goes to the
		// guest, not to qemu, which would otherwise exit on it.
		"-chardev", "stdio,id=console,signal=off",
		"-serial", "chardev:console",
		"-kernel", g.Kernel,
	}
	if accel == "kvm" {
		args = append(args, "-cpu", "host")
	}
	if q.cfg.DataPath != "" {
		args = append(args, "-L", q.cfg.DataPath)
	}
	if g.Initrd != "" {
		args = append(args, "-initrd", g.Initrd)
	}
	if g.Cmdline != "" {
		args = append(args, "-append", g.Cmdline)
	}
	args = append(args, q.storageArgs(g)...)
	args = append(args, g.ExtraArgs...)
	if g.Seccomp {
		// qemu's own filter: no obsolete calls, no privilege changes, no
		// child processes, no scheduler or resource tuning.
		args = append(args, "-sandbox", "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny")
	}
	if g.Net != nil {
		args = append(args,
			"-netdev", "tap,id=net0,ifname="+g.Net.Tap+",script=no,downscript=no"+vhostOption(g.Net),
			"-device", "virtio-net-pci,netdev=net0,mac="+g.Net.MAC+",romfile="+withComma(g.NICOptions))
	} else {
		args = append(args, "-nic", "none")
	}
	if g.ControlFD > 0 {
		// The QMP socket is created and kept by the shim outside the
		// container's root; qemu only inherits the listening descriptor.
		args = append(args,
			"-chardev", "socket,id=qmp,fd="+strconv.Itoa(g.ControlFD)+",server=on,wait=off",
			"-mon", "chardev=qmp,mode=control")
	}
	if a := g.Agent; a != nil && a.Transport == AgentVirtioSerial {
		// virtio-serial, which needs no host module (vhost-vsock is
		// not on every host); the shim keeps the socket's path.
		args = append(args,
			"-device", "virtio-serial-pci,id=agent-serial",
			"-chardev", "socket,id=agent,fd="+strconv.Itoa(a.FD)+",server=on,wait=off",
			"-device", "virtserialport,bus=agent-serial.0,chardev=agent,name="+a.Port)
	}
	return args, nil
}

// Powerdown presses the guest's ACPI power button over QMP.
func (q *qemu) Powerdown(ctx context.Context, controlSocket string) error {
	if controlSocket == "" {
		return ErrNoPowerdown
	}
	return qmpCommand(ctx, controlSocket, "system_powerdown")
}

// storageArgs attach the guest's disks in order (the first is /dev/vda)
// and its shares. vhost-user needs the guest's RAM in shared memory that
// virtiofsd can map: a memfd backend, which needs no /dev/shm in the
// confined root.
func (q *qemu) storageArgs(g Guest) []string {
	var args []string
	for _, d := range g.Disks {
		file := d.Path
		if d.FD > 0 {
			// The inherited descriptors go into an fd set numbered as
			// the read-write one, which qemu opens as /dev/fdset/N,
			// taking the descriptor of the access mode it asks for.
			set := strconv.Itoa(d.FD)
			args = append(args, "-add-fd", "fd="+set+",set="+set+",opaque="+d.ID+"-rw")
			if d.ReadOnlyFD > 0 {
				args = append(args, "-add-fd", "fd="+strconv.Itoa(d.ReadOnlyFD)+",set="+set+",opaque="+d.ID+"-ro")
			}
			file = "/dev/fdset/" + set
		}
		drive := "file=" + file + ",format=raw,if=none,id=" + d.ID
		if d.ReadOnly {
			drive += ",readonly=on"
		}
		if d.FD > 0 && d.HostDevice {
			drive += ",file.driver=host_device"
		}
		args = append(args,
			"-drive", drive,
			"-device", "virtio-blk-pci,drive="+d.ID+",serial="+d.ID)
	}
	for _, s := range g.Shares {
		switch s.Kind {
		case rootfs.Kind9p:
			// security_model=none: qemu acts on the host with its own
			// identity, the spec's user when there is one, and asks
			// nothing of the files beyond what that user may do;
			// ownership the guest asks for is not kept.
			fsdev := "local,id=fsdev-" + s.Tag + ",path=" + s.Path + ",security_model=none"
			if s.ReadOnly {
				fsdev += ",readonly=on"
			}
			args = append(args,
				"-fsdev", fsdev,
				"-device", "virtio-9p-pci,fsdev=fsdev-"+s.Tag+",mount_tag="+s.Tag)
		case rootfs.KindVirtiofs:
			args = append(args,
				"-chardev", "socket,id=vfs-"+s.Tag+",path="+s.Socket,
				"-device", "vhost-user-fs-pci,chardev=vfs-"+s.Tag+",tag="+s.Tag)
		}
	}
	if hasShare(g, rootfs.KindVirtiofs) {
		args = append(args,
			"-object", "memory-backend-memfd,id=mem,size="+strconv.Itoa(g.MemoryMB)+"M,share=on",
			"-numa", "node,memdev=mem")
	}
	return args
}

func hasShare(g Guest, kind rootfs.Kind) bool {
	for _, s := range g.Shares {
		if s.Kind == kind {
			return true
		}
	}
	return false
}

func withComma(opts string) string {
	if opts == "" {
		return ""
	}
	return "," + opts
}

func vhostOption(n *NIC) string {
	if n.Vhost {
		return ",vhost=on"
	}
	return ""
}
