package rootfs

import "github.com/urunc-dev/containerd-shim-urunc-v2/runtime/guests"

// tryInitrd: the initrd annotation makes the initrd the guest's root. The
// container rootfs stays on the host; nothing is shared with the guest.
func tryInitrd(req Request) (*Plan, bool, error) {
	if req.Initrd == "" {
		return nil, false, nil
	}
	return &Plan{
		Mode:   "initrd",
		Root:   guests.Root{Kind: guests.RootInitrd},
		Kernel: req.Kernel,
		Initrd: req.Initrd,
	}, true, nil
}
