package monitors

import (
	"context"
	"fmt"
	"strconv"
)

// qemu runs a guest under qemu-system-x86_64.
type qemu struct {
	binary string
	cfg    Config
}

func newQemu(binary string, cfg Config) Monitor { return &qemu{binary: binary, cfg: cfg} }

func (q *qemu) Name() string          { return "qemu" }
func (q *qemu) Binary() string        { return q.binary }
func (q *qemu) NeedsKVM() bool        { return q.cfg.Accel != "tcg" }
func (q *qemu) SupportsControl() bool { return true }

// DataPaths are where Debian (and most distributions) keep qemu's firmware,
// option ROMs and loadable modules. Missing any of them fails a boot with
// "could not load PC BIOS" or "could not load module for type
// 'tcg-accel-ops'", so the confined root carries them all at their host paths.
func (q *qemu) DataPaths() []string {
	return []string{
		"/usr/share/qemu",
		"/usr/share/seabios",
		"/usr/lib/ipxe/qemu",
		"/usr/lib/x86_64-linux-gnu/qemu",
		"/usr/lib64/qemu",
	}
}

func (q *qemu) Args(g Guest) ([]string, error) {
	if g.Kernel == "" {
		return nil, fmt.Errorf("qemu: no guest kernel")
	}
	accel := q.cfg.Accel
	if accel == "" {
		accel = "kvm"
	}
	args := []string{
		q.binary,
		"-accel", accel,
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
	if g.Initrd != "" {
		args = append(args, "-initrd", g.Initrd)
	}
	if g.Cmdline != "" {
		args = append(args, "-append", g.Cmdline)
	}
	if g.Net != nil {
		args = append(args,
			"-netdev", "tap,id=net0,ifname="+g.Net.Tap+",script=no,downscript=no",
			"-device", "virtio-net-pci,netdev=net0,mac="+g.Net.MAC+",romfile=")
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
	return args, nil
}

// Powerdown presses the guest's ACPI power button over QMP.
func (q *qemu) Powerdown(ctx context.Context, controlSocket string) error {
	if controlSocket == "" {
		return ErrNoPowerdown
	}
	return qmpCommand(ctx, controlSocket, "system_powerdown")
}
