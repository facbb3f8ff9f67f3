package inroot

import (
	"bytes"
	"errors"
	"fmt"
	"github.com/urunc-dev/containerd-shim-urunc-v2/internal/testhost"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// inRootFixture is a container rootfs beside a directory outside it that
// no write into the rootfs may touch.
type inRootFixture struct {
	base, root, outside, victim string
}

const victimData = "host file, outside the rootfs\n"

func newInRootFixture(t testing.TB) inRootFixture {
	t.Helper()
	base := t.TempDir()
	fx := inRootFixture{
		base:    base,
		root:    filepath.Join(base, "root"),
		outside: filepath.Join(base, "outside"),
		victim:  filepath.Join(base, "outside", "victim"),
	}
	for _, d := range []string{fx.outside, filepath.Join(fx.root, "etc"), filepath.Join(fx.root, "real", "etc")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(fx.victim, []byte(victimData), 0o644); err != nil {
		t.Fatal(err)
	}
	return fx
}

// snapshot describes every entry under dir: name, kind, mode and, for a
// regular file, its content.
func snapshot(t testing.TB, dir string) string {
	t.Helper()
	var b strings.Builder
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		fmt.Fprintf(&b, "%s %v", p, info.Mode())
		if info.Mode().IsRegular() {
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			fmt.Fprintf(&b, " %q", data)
		}
		b.WriteString("\n")
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// tempLeftovers lists the files CopyFile writes beside a destination
// that are still under root.
func tempLeftovers(t testing.TB, root string) []string {
	t.Helper()
	var left []string
	_ = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err == nil && strings.HasPrefix(d.Name(), tempPrefix) {
			left = append(left, p)
		}
		return nil
	})
	return left
}

// copyPromptly runs CopyFile and fails the test if it does not
// return before the test's deadline: a write into a FIFO would block
// forever. release, when set, is called on timeout to free the goroutine.
func copyPromptly(t testing.TB, root, p, src string, release func()) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- CopyFile(root, p, src, 0o644) }()
	var timeout <-chan time.Time
	if tt, ok := t.(*testing.T); ok {
		if deadline, ok := tt.Deadline(); ok {
			timer := time.NewTimer(time.Until(deadline) - 5*time.Second)
			defer timer.Stop()
			timeout = timer.C
		}
	}
	select {
	case err := <-done:
		return err
	case <-timeout:
		if release != nil {
			release()
		}
		t.Fatalf("CopyFile(%q) did not return before the test's deadline", p)
		return nil
	}
}

// releaseFIFO opens the FIFO at p for reading, which lets a writer blocked
// in open(2) through.
func releaseFIFO(p string) func() {
	return func() {
		if fd, err := unix.Open(p, unix.O_RDONLY|unix.O_NONBLOCK, 0); err == nil {
			defer unix.Close(fd)
		}
	}
}

// loopDevice backs a new loop device with a file of known bytes and
// returns the device, the file, and those bytes; the device goes at the
// end of the test.
func loopDevice(t *testing.T) (dev, file string, data []byte) {
	t.Helper()
	testhost.NeedRoot(t, "mknod")
	file = filepath.Join(t.TempDir(), "disk")
	data = bytes.Repeat([]byte("the host's disk, never to be written by a pod file\n"), 2048)
	if err := os.WriteFile(file, data, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("losetup", "--find", "--show", file).CombinedOutput()
	if err != nil {
		t.Skipf("no loop device: %v: %s", err, out)
	}
	dev = strings.TrimSpace(string(out))
	t.Cleanup(func() {
		if out, err := exec.Command("losetup", "-d", dev).CombinedOutput(); err != nil {
			t.Errorf("losetup -d %s: %v: %s", dev, err, out)
		}
	})
	return dev, file, data
}

func deviceNumber(t *testing.T, dev string) uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(dev, &st); err != nil {
		t.Fatal(err)
	}
	return st.Rdev
}

func TestCopyFileInRoot(t *testing.T) {
	small := []byte("127.0.0.1 localhost\n6.6.6.6 pod-alias\n")
	type tcase struct {
		name string
		// plant puts what the image holds into the fixture and returns a
		// check run after the copy (nil for none) and a release for a
		// write that blocks.
		plant   func(t *testing.T, fx inRootFixture) (check func(t *testing.T), release func())
		path    string
		src     []byte             // the source's content
		srcNode func(string) error // makes the source another kind of file instead
		// lands is where, relative to the root, the content must be
		// after a successful copy; wantErr is a part of the error instead.
		lands, wantErr string
	}
	symlink := func(target, at string) func(*testing.T, inRootFixture) (func(*testing.T), func()) {
		return func(t *testing.T, fx inRootFixture) (func(*testing.T), func()) {
			if strings.Contains(target, "BASE") {
				target = strings.ReplaceAll(target, "BASE", fx.base)
			}
			if err := os.Symlink(target, filepath.Join(fx.root, at)); err != nil {
				t.Fatal(err)
			}
			return nil, nil
		}
	}
	mknod := func(at string, mode uint32, dev func(t *testing.T) (uint64, func(*testing.T))) func(*testing.T, inRootFixture) (func(*testing.T), func()) {
		return func(t *testing.T, fx inRootFixture) (func(*testing.T), func()) {
			testhost.NeedRoot(t, "mknod")
			rdev, check := dev(t)
			if err := unix.Mknod(filepath.Join(fx.root, at), mode|0o644, int(rdev)); err != nil {
				t.Fatal(err)
			}
			return check, nil
		}
	}
	tests := []tcase{
		{name: "new file", path: "/etc/hosts", src: small, lands: "etc/hosts"},
		{name: "relative path", path: "etc/hosts", src: small, lands: "etc/hosts"},
		{name: "existing file", path: "/etc/hosts", src: small, lands: "etc/hosts",
			plant: func(t *testing.T, fx inRootFixture) (func(*testing.T), func()) {
				if err := os.WriteFile(filepath.Join(fx.root, "etc/hosts"), bytes.Repeat([]byte("x"), 4096), 0o600); err != nil {
					t.Fatal(err)
				}
				return nil, nil
			}},
		{name: "hard link to another file of the image", path: "/etc/hosts", src: small, lands: "etc/hosts",
			plant: func(t *testing.T, fx inRootFixture) (func(*testing.T), func()) {
				bin := filepath.Join(fx.root, "real", "busybox")
				if err := os.WriteFile(bin, []byte("ELF"), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.Link(bin, filepath.Join(fx.root, "etc/hosts")); err != nil {
					t.Fatal(err)
				}
				return func(t *testing.T) {
					if data, _ := os.ReadFile(bin); string(data) != "ELF" {
						t.Errorf("the image's other name of the file now holds %q", data)
					}
				}, nil
			}},
		{name: "empty source", path: "/etc/hostname", src: []byte{}, lands: "etc/hostname"},
		{name: "missing parents", path: "/a/b/c/hosts", src: small, lands: "a/b/c/hosts"},
		{name: "dot components", path: "/etc/./hosts/", src: small, lands: "etc/hosts"},
		{name: "absolute symlink out", path: "/etc/hosts", src: small, lands: "etc/hosts",
			plant: symlink("BASE/outside/victim", "etc/hosts")},
		{name: "relative symlink out", path: "/etc/hosts", src: small, lands: "etc/hosts",
			plant: symlink("../../outside/victim", "etc/hosts")},
		{name: "dangling symlink", path: "/etc/hosts", src: small, lands: "etc/hosts",
			plant: symlink("/nowhere", "etc/hosts")},
		{name: "parent absolute symlink out", path: "/etc/hosts", src: small, wantErr: "directory /etc",
			plant: func(t *testing.T, fx inRootFixture) (func(*testing.T), func()) {
				if err := os.Remove(filepath.Join(fx.root, "etc")); err != nil {
					t.Fatal(err)
				}
				return symlink("BASE/outside", "etc")(t, fx)
			}},
		{name: "parent relative symlink out", path: "/up/hosts", src: small, wantErr: "directory /up",
			plant: symlink("../outside", "up")},
		{name: "parent symlink in the root", path: "/etc/hosts", src: small, lands: "real/etc/hosts",
			plant: func(t *testing.T, fx inRootFixture) (func(*testing.T), func()) {
				if err := os.Remove(filepath.Join(fx.root, "etc")); err != nil {
					t.Fatal(err)
				}
				return symlink("/real/etc", "etc")(t, fx)
			}},
		{name: "parent relative symlink climbing to the root", path: "/up/etc/hosts", src: small, lands: "etc/hosts",
			plant: symlink("../../..", "up")},
		{name: "dot-dot out", path: "/../outside/victim", src: small, wantErr: "leaves the container rootfs"},
		{name: "dot-dot out after a directory", path: "/etc/../../outside/victim", src: small, wantErr: "leaves the container rootfs"},
		{name: "dot-dot inside", path: "/real/../etc/hosts", src: small, lands: "etc/hosts"},
		{name: "empty path", path: "", src: small, wantErr: "empty path"},
		{name: "the root itself", path: "/", src: small, wantErr: "not a file in the container rootfs"},
		{name: "a directory", path: "/etc", src: small, wantErr: "/etc in the container rootfs is a directory"},
		{name: "a file where a directory goes", path: "/etc/hosts/x", src: small, wantErr: "directory /etc/hosts",
			plant: func(t *testing.T, fx inRootFixture) (func(*testing.T), func()) {
				if err := os.WriteFile(filepath.Join(fx.root, "etc/hosts"), nil, 0o644); err != nil {
					t.Fatal(err)
				}
				return nil, nil
			}},
		{name: "character device", path: "/etc/hosts", src: small, lands: "etc/hosts",
			plant: mknod("etc/hosts", unix.S_IFCHR, func(*testing.T) (uint64, func(*testing.T)) { return unix.Mkdev(1, 3), nil })},
		{name: "block device of a loop device", path: "/etc/hosts", src: small, lands: "etc/hosts",
			plant: mknod("etc/hosts", unix.S_IFBLK, func(t *testing.T) (uint64, func(*testing.T)) {
				dev, file, data := loopDevice(t)
				return deviceNumber(t, dev), func(t *testing.T) {
					for _, p := range []string{dev, file} {
						got, err := os.ReadFile(p)
						if err != nil {
							t.Fatal(err)
						}
						if !bytes.Equal(got, data) {
							t.Errorf("%s changed: it begins %q", p, got[:min(len(got), 64)])
						}
					}
				}
			})},
		{name: "FIFO", path: "/etc/hosts", src: small, lands: "etc/hosts",
			plant: func(t *testing.T, fx inRootFixture) (func(*testing.T), func()) {
				p := filepath.Join(fx.root, "etc/hosts")
				if err := unix.Mkfifo(p, 0o644); err != nil {
					t.Fatal(err)
				}
				return nil, releaseFIFO(p)
			}},
		{name: "socket", path: "/etc/hosts", src: small, lands: "etc/hosts",
			plant: func(t *testing.T, fx inRootFixture) (func(*testing.T), func()) {
				fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM, 0)
				if err != nil {
					t.Fatal(err)
				}
				defer unix.Close(fd)
				if err := unix.Bind(fd, &unix.SockaddrUnix{Name: filepath.Join(fx.root, "etc/hosts")}); err != nil {
					t.Fatal(err)
				}
				return nil, nil
			}},
		{name: "source at the size cap", path: "/etc/big", src: bytes.Repeat([]byte("a"), MaxFileSize), lands: "etc/big"},
		{name: "source above the size cap", path: "/etc/hosts", src: bytes.Repeat([]byte("a"), MaxFileSize+1),
			wantErr: fmt.Sprintf("is %d bytes, more than the %d", MaxFileSize+1, MaxFileSize),
			plant: func(t *testing.T, fx inRootFixture) (func(*testing.T), func()) {
				p := filepath.Join(fx.root, "etc/hosts")
				if err := os.WriteFile(p, []byte("kept"), 0o644); err != nil {
					t.Fatal(err)
				}
				return func(t *testing.T) {
					if data, _ := os.ReadFile(p); string(data) != "kept" {
						t.Errorf("a refused copy changed the destination to %q", data)
					}
				}, nil
			}},
		{name: "source is a symlink", path: "/etc/hosts", wantErr: "is a symlink",
			srcNode: func(p string) error { return os.Symlink("/etc/passwd", p) }},
		{name: "source is a FIFO", path: "/etc/hosts", wantErr: "is not a regular file (a FIFO)",
			srcNode: func(p string) error { return unix.Mkfifo(p, 0o644) }},
		{name: "source is a directory", path: "/etc/hosts", wantErr: "is not a regular file (a directory)",
			srcNode: func(p string) error { return os.Mkdir(p, 0o755) }},
		{name: "source is missing", path: "/etc/hosts", wantErr: "open source",
			srcNode: func(string) error { return nil }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fx := newInRootFixture(t)
			src := filepath.Join(fx.base, "src")
			if tc.srcNode != nil {
				if err := tc.srcNode(src); err != nil {
					t.Fatal(err)
				}
			} else if err := os.WriteFile(src, tc.src, 0o600); err != nil {
				t.Fatal(err)
			}
			var check func(*testing.T)
			var release func()
			if tc.plant != nil {
				check, release = tc.plant(t, fx)
			}
			outsideBefore := snapshot(t, fx.outside)
			err := copyPromptly(t, fx.root, tc.path, src, release)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want one saying %q", err, tc.wantErr)
				}
			} else {
				if err != nil {
					t.Fatalf("CopyFile(%q): %v", tc.path, err)
				}
				dst := filepath.Join(fx.root, tc.lands)
				st, err := os.Lstat(dst)
				if err != nil {
					t.Fatal(err)
				}
				if !st.Mode().IsRegular() || st.Mode().Perm() != 0o644 {
					t.Errorf("%s is %v, want a regular file 0644", tc.lands, st.Mode())
				}
				if data, _ := os.ReadFile(dst); !bytes.Equal(data, tc.src) {
					t.Errorf("%s holds %d bytes, want the source's %d", tc.lands, len(data), len(tc.src))
				}
			}
			if after := snapshot(t, fx.outside); after != outsideBefore {
				t.Errorf("outside the rootfs changed:\nbefore:\n%s\nafter:\n%s", outsideBefore, after)
			}
			if left := tempLeftovers(t, fx.root); len(left) > 0 {
				t.Errorf("left behind: %v", left)
			}
			if check != nil {
				check(t)
			}
		})
	}
}

// A rootfs that is itself a symlink is refused: the shim names a directory
// it mounted, never one an image chose.
func TestCopyFileInRootRootIsSymlink(t *testing.T) {
	fx := newInRootFixture(t)
	link := filepath.Join(fx.base, "link")
	if err := os.Symlink(fx.outside, link); err != nil {
		t.Fatal(err)
	}
	src := filepath.Join(fx.base, "src")
	if err := os.WriteFile(src, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	err := CopyFile(link, "/victim", src, 0o644)
	if !errors.Is(err, unix.ELOOP) && !errors.Is(err, unix.ENOTDIR) {
		t.Fatalf("err = %v, want the symlinked root refused", err)
	}
	if data, _ := os.ReadFile(fx.victim); string(data) != victimData {
		t.Fatalf("victim holds %q", data)
	}
}
