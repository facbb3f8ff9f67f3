package rootfs

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// KindInitrd is an initrd the monitor loads.
const KindInitrd Kind = "initrd"

// tryInitrd: the initrd annotation makes the initrd the guest's root. The
// container rootfs stays on the host; nothing is shared with the guest.
// The pod's files reach a guest whose kernel unpacks an archive appended
// to its initrd (podfiles.go) in a copy of the initrd with them appended,
// in the bundle; any other guest type is warned about, naming the volumes
// it does not get.
func tryInitrd(req Request) (*Plan, bool, error) {
	if req.Initrd == "" {
		return nil, false, nil
	}
	p := &Plan{
		Root:   Root{Kind: KindInitrd},
		Kernel: req.Kernel,
		Initrd: req.Initrd,
	}
	if !hasPodFiles(req.Volumes) && len(req.InitrdFiles) == 0 {
		return p, true, nil
	}
	if !req.Guest.UnpacksAppendedInitrd() {
		if len(req.InitrdFiles) > 0 {
			return nil, false, fmt.Errorf("guest %s does not unpack an archive appended to its initrd: its init's files cannot reach it", req.Guest.Name())
		}
		p.Warnings = append(p.Warnings, fmt.Sprintf("guest %s boots from an initrd and takes no pod files: volumes %s do not reach it",
			req.Guest.Name(), strings.Join(podVolumeNames(req.Volumes), ", ")))
		return p, true, nil
	}
	dir := filepath.Join(req.Bundle, podInitrdDir)
	p.Initrd = filepath.Join(dir, "initrd")
	p.Undo = Undo{Dirs: []string{dir}}
	p.prepare = func(func(Undo) error) error {
		// A directory left by an earlier attempt is the bundle's own.
		if err := os.RemoveAll(dir); err != nil {
			return err
		}
		if err := os.Mkdir(dir, 0o700); err != nil {
			return err
		}
		if err := writeInitrdWithPodFiles(p.Initrd, req.Initrd, req.Volumes, req.InitrdFiles); err != nil {
			return fmt.Errorf("pod files for the initrd guest: %w", err)
		}
		return nil
	}
	return p, true, nil
}
