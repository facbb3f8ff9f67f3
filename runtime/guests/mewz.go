package guests

import "fmt"

// mewz is a Mewz unikernel under qemu. It takes only its network on the
// command line, and reports its exit through qemu's isa-debug-exit device.
type mewz struct{}

func (mewz) Name() string        { return "mewz" }
func (mewz) SupportsBlock() bool { return false }

// UnpacksAppendedInitrd: mewz has no filesystem of files.
func (mewz) UnpacksAppendedInitrd() bool { return false }
func (mewz) SupportsFS(string) bool      { return false }
func (mewz) Monitors() []string          { return []string{"qemu"} }

// Devices: a modern-only virtio NIC, and the exit device at 0x501.
func (mewz) Devices() Devices {
	return Devices{
		NICOptions: "disable-legacy=on,disable-modern=off",
		QemuArgs:   []string{"-device", "isa-debug-exit,iobase=0x501,iosize=2"},
	}
}

func (mewz) Cmdline(req Request) (string, error) {
	n := req.Net
	if n == nil {
		return "", nil
	}
	bits, err := cidr(n.Mask)
	if err != nil {
		return "", fmt.Errorf("mewz guest: %w", err)
	}
	return fmt.Sprintf("ip=%s/%d gateway=%s", n.Address, bits, n.Gateway), nil
}

// GuestExit decodes qemu's isa-debug-exit: a guest that writes v to the
// port makes qemu exit with (v<<1)|1. qemu's own statuses are kept: 0 for
// a guest that powered down, 1 for qemu failing (a start failure, a device
// it cannot open), 128+signal for qemu killed. A guest writing 0 also makes
// qemu exit 1; the two cannot be told apart, and 1 stays a failure, since
// reading qemu's failure as the guest's success would report a guest that
// never ran as succeeded. Odd statuses up to 127 are the guest's v of 1 to
// 63.
func (mewz) GuestExit(status int) int {
	if status > 1 && status < 128 && status&1 == 1 {
		return status >> 1
	}
	return status
}
