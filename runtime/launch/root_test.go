package launch

import (
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/urunc-dev/containerd-shim-urunc-v2/internal/confined"
	"golang.org/x/sys/unix"
)

// inMountNamespace runs f on a thread of its own in a new private mount
// namespace; the thread is discarded after, so no mount reaches the host
// or another test.
func inMountNamespace(t *testing.T, f func()) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (mount namespaces)")
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread() // never unlocked: the thread dies with its namespace
		if err := unix.Unshare(unix.CLONE_NEWNS); err != nil {
			t.Errorf("unshare: %v", err)
			return
		}
		if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
			t.Errorf("make mounts private: %v", err)
			return
		}
		f()
	}()
	<-done
}

func writable(dir string) error {
	return os.WriteFile(filepath.Join(dir, "probe"), []byte("x"), 0o644)
}

// A read-only volume is read-only with its submounts: a bind remount alone
// leaves a submount of the volume writable.
func TestReadOnlyBindIsRecursive(t *testing.T) {
	dir := t.TempDir()
	src, sub, dst := filepath.Join(dir, "src"), filepath.Join(dir, "src", "sub"), filepath.Join(dir, "dst")
	for _, d := range []string{src, dst} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	inMountNamespace(t, func() {
		for _, d := range []string{src, sub} {
			if err := os.MkdirAll(d, 0o755); err != nil {
				t.Error(err)
				return
			}
			if err := unix.Mount("tmpfs", d, "tmpfs", 0, "size=1m"); err != nil {
				t.Errorf("mount tmpfs at %s: %v", d, err)
				return
			}
		}
		if err := bindAt(src, dst, true); err != nil {
			t.Errorf("bindAt: %v", err)
			return
		}
		for _, d := range []string{dst, filepath.Join(dst, "sub")} {
			if err := writable(d); !errors.Is(err, unix.EROFS) {
				t.Errorf("write in %s of a read-only volume: %v, want EROFS", d, err)
			}
		}
		if err := writable(sub); err != nil {
			t.Errorf("the volume's source became read-only: %v", err)
		}
	})
}

// A read-only root is read-only at its top; a writable volume bound into
// it stays writable, a read-only one is not.
func TestShareRootfsReadOnly(t *testing.T) {
	dir := t.TempDir()
	rootfsDir, rw, ro := filepath.Join(dir, "rootfs"), filepath.Join(dir, "rw"), filepath.Join(dir, "ro")
	for _, d := range []string{rootfsDir, rw, ro} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	inMountNamespace(t, func() {
		vols := []confined.Bind{{Source: rw, Target: "/rw"}, {Source: ro, Target: "/ro", ReadOnly: true}}
		if err := ShareRootfs(rootfsDir, vols, true); err != nil {
			t.Errorf("ShareRootfs: %v", err)
			return
		}
		for d, want := range map[string]error{rootfsDir: unix.EROFS, filepath.Join(rootfsDir, "rw"): nil, filepath.Join(rootfsDir, "ro"): unix.EROFS} {
			if err := writable(d); !errors.Is(err, want) && !(want == nil && err == nil) {
				t.Errorf("write in %s: %v, want %v", d, err, want)
			}
		}
	})
	if err := writable(rootfsDir); err != nil {
		t.Errorf("the rootfs on the host became read-only: %v", err)
	}
}
