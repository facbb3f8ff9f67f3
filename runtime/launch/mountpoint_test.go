package launch

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// A file volume's mount point: created when missing; a FIFO or a device
// node already there is left as it is, never opened, and the call returns
// at once; a symlink pointing out of the rootfs is followed inside it.
func TestFileMountPoint(t *testing.T) {
	dir := t.TempDir()
	root, outside := filepath.Join(dir, "root"), filepath.Join(dir, "outside")
	if err := os.Mkdir(root, 0o755); err != nil {
		t.Fatal(err)
	}
	rootFd, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(rootFd)
	tests := []struct {
		name  string
		plant func(p string) error
		want  os.FileMode // the entry's type afterwards
	}{
		{"missing", func(string) error { return nil }, 0},
		{"regular", func(p string) error { return os.WriteFile(p, []byte("kept"), 0o600) }, 0},
		{"FIFO", func(p string) error { return unix.Mkfifo(p, 0o644) }, os.ModeNamedPipe},
		{"symlink out", func(p string) error { return os.Symlink(outside, p) }, os.ModeSymlink},
		{"character device", func(p string) error {
			if os.Geteuid() != 0 {
				t.Skip("needs root (mknod)")
			}
			return unix.Mknod(p, unix.S_IFCHR|0o644, int(unix.Mkdev(1, 3)))
		}, os.ModeDevice | os.ModeCharDevice},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(root, tc.name)
			if err := tc.plant(p); err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() {
				fd, err := openMountPoint(rootFd, tc.name, false)
				if err == nil {
					unix.Close(fd)
				}
				done <- err
			}()
			deadline, ok := t.Deadline()
			if !ok {
				deadline = time.Now().Add(time.Minute)
			}
			timer := time.NewTimer(time.Until(deadline) - 5*time.Second)
			defer timer.Stop()
			select {
			case err := <-done:
				if err != nil {
					t.Fatal(err)
				}
			case <-timer.C:
				if fd, err := unix.Open(p, unix.O_RDONLY|unix.O_NONBLOCK, 0); err == nil {
					unix.Close(fd)
				}
				t.Fatalf("openMountPoint(%s) blocked", tc.name)
			}
			st, err := os.Lstat(p)
			if err != nil {
				t.Fatal(err)
			}
			if st.Mode().Type() != tc.want {
				t.Fatalf("%s is now %v", tc.name, st.Mode())
			}
			if _, err := os.Lstat(outside); !os.IsNotExist(err) {
				t.Fatalf("a file was made through the symlink: %v", err)
			}
			if tc.want == os.ModeSymlink {
				if st, err := os.Lstat(filepath.Join(root, outside)); err != nil || !st.Mode().IsRegular() {
					t.Fatalf("the symlink's target inside the rootfs was not made: %v", err)
				}
			}
		})
	}
}
