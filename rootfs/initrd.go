package rootfs

// KindInitrd is an initrd the monitor loads.
const KindInitrd Kind = "initrd"

// tryInitrd: the initrd annotation makes the initrd the guest's root. The
// container rootfs stays on the host; nothing is shared with the guest.
func tryInitrd(req Request) (*Plan, bool, error) {
	if req.Initrd == "" {
		return nil, false, nil
	}
	return &Plan{
		Root:   Root{Kind: KindInitrd},
		Kernel: req.Kernel,
		Initrd: req.Initrd,
	}, true, nil
}
