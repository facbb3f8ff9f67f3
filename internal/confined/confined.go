// Package confined holds what the rootfs modes, which plan a monitor's
// confined root, and the launcher, which builds it, both know of it: the
// binds into it, the helper process started beside the monitor, and how a
// path inside the container's rootfs is resolved without leaving it. It is
// below both, so that rootfs need not import the launcher and the launcher
// binary links nothing of rootfs.
package confined

import (
	"fmt"
	"path/filepath"
	"strings"

	securejoin "github.com/cyphar/filepath-securejoin"
)

// Bind is one host file or directory made visible in a confined root.
type Bind struct {
	Source   string `json:"source"`
	Target   string `json:"target"` // absolute, inside the confined root
	ReadOnly bool   `json:"readOnly,omitempty"`
}

// HelperProcess is a process the launcher starts beside the monitor, before it
// pivots into the confined root, so that the helper sees the rootfs and
// the monitor only its socket. It is a child of the monitor once the
// launcher execs, so it dies with the container's pid namespace.
type HelperProcess struct {
	Name string
	Argv []string
	// Socket is where the helper listens, inside the confined root; the
	// launcher passes its host path after SocketFlag and waits for it
	// before it execs the monitor.
	Socket     string
	SocketFlag string
	// Share is the host directory the helper serves; the launcher names
	// it (or where it bound it) after ShareFlag: every element but the
	// last as is, the path appended to the last.
	Share     string
	ShareFlag []string
}

// ResolveInRootfs returns the host path of p, a path inside the container
// rootfs at root. A path that climbs out of the rootfs ("../x") is refused
// with an error naming it; symlinks inside the rootfs are resolved as the
// container would see them, never to host paths.
func ResolveInRootfs(root, p string) (string, error) {
	if p == "" {
		return "", fmt.Errorf("empty path in rootfs")
	}
	clean := filepath.Clean("/" + p)
	// Clean of "/"+p removes leading "..", so compare against the plain
	// cleaned form to see whether p meant to climb.
	if rel := filepath.Clean(strings.TrimPrefix(p, "/")); rel == ".." || strings.HasPrefix(rel, "../") {
		return "", fmt.Errorf("path %q leaves the container rootfs", p)
	}
	resolved, err := securejoin.SecureJoin(root, clean)
	if err != nil {
		return "", fmt.Errorf("resolve %q in rootfs: %w", p, err)
	}
	return resolved, nil
}
