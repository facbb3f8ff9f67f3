package hostmount

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"time"
)

// RunCommand runs cmd to its end and returns its output and exit status.
// A process whose children a reaper collects (the shim, as subreaper)
// sets one that waits through that reaper.
var RunCommand = func(cmd *exec.Cmd) ([]byte, int, error) {
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		return out, exit.ExitCode(), nil
	}
	return out, 0, err
}

// fsckTimeout bounds the read-only check of a volume before the mount
// back; a volume that takes longer stays unmounted, with an error.
const fsckTimeout = 2 * time.Minute

// checkBeforeMountBack runs e2fsck -n -f (read-only, forced) on an ext
// volume the guest wrote raw, before the host kernel mounts it: ext4
// metadata a guest crafted reaches the host's ext4 code on mount, and a
// filesystem e2fsck finds errors in is left unmounted. A host without
// e2fsck mounts it back unchecked.
func checkBeforeMountBack(h Mount) error {
	switch h.FSType {
	case "ext2", "ext3", "ext4":
	default:
		return nil
	}
	path, err := exec.LookPath("e2fsck")
	if err != nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), fsckTimeout)
	defer cancel()
	out, status, err := RunCommand(exec.CommandContext(ctx, path, "-n", "-f", h.Device))
	if err == nil && ctx.Err() != nil {
		err = fmt.Errorf("no result in %s", fsckTimeout)
	}
	if err != nil {
		return fmt.Errorf("check %s (e2fsck -n -f): %w", h.Device, err)
	}
	if status != 0 {
		return fmt.Errorf("e2fsck -n -f %s found errors (status %d), the guest left the filesystem inconsistent: %s",
			h.Device, status, lastLines(string(out), 5))
	}
	return nil
}

// lastLines is the last n lines of s, on one line.
func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "; ")
}
