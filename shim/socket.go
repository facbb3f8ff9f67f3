package shim

import (
	"crypto/sha256"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"

	"github.com/containerd/containerd/v2/pkg/sys"
)

// socketAddress is the group's socket, named as containerd's shims name
// theirs: a hash of containerd's address, the namespace and the group, so
// that two containerds or namespaces never share a shim.
func socketAddress(dir, containerdAddress, namespace, group string) string {
	d := sha256.Sum256([]byte(filepath.Join(containerdAddress, namespace, group)))
	return fmt.Sprintf("unix://%s/%x", dir, d)
}

func socketPath(address string) string { return strings.TrimPrefix(address, "unix://") }

// newSocket listens on address, readable by its owner only: the handshake
// also refuses other users (ttrpc.UnixSocketRequireSameUser).
func newSocket(address string) (*net.UnixListener, error) {
	path := socketPath(address)
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("socket directory: %w", err)
	}
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(path, 0o600); err != nil {
		l.Close()
		os.Remove(path)
		return nil, fmt.Errorf("socket %s: %w", path, err)
	}
	return l.(*net.UnixListener), nil
}

func removeSocket(address string) error { return os.Remove(socketPath(address)) }

// adjustOOMScore gives the daemon its parent's OOM score plus one: under
// memory pressure the kernel picks the shim before containerd.
func adjustOOMScore(pid int) error {
	score, err := sys.GetOOMScoreAdj(os.Getppid())
	if err != nil {
		return fmt.Errorf("get parent OOM score: %w", err)
	}
	if err := sys.AdjustOOMScore(pid, score+1); err != nil {
		return fmt.Errorf("set shim OOM score: %w", err)
	}
	return nil
}
