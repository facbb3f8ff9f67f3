package launch

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// A file volume's mount point: created when missing; a FIFO, a symlink out
// or a device node already there is left as it is, never opened, and the
// call returns at once.
func TestFileMountPoint(t *testing.T) {
	dir := t.TempDir()
	outside := filepath.Join(dir, "outside")
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
			p := filepath.Join(dir, tc.name)
			if err := tc.plant(p); err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- fileMountPoint(p) }()
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
				t.Fatalf("fileMountPoint(%s) blocked", tc.name)
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
		})
	}
}
