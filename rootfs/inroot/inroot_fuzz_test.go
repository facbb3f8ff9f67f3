package inroot

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// FuzzWriteInRoot writes fuzzed content at fuzzed paths into a rootfs
// whose image plants symlinks out of it (absolute, relative, through a
// parent), a FIFO and, as root, a device node. Whatever the path: the call
// returns, nothing outside the root changes, no file is left beside the
// destination, and a write that succeeds is read back, as a regular file,
// where a reader resolving inside the root finds it.
func FuzzWriteInRoot(f *testing.F) {
	for _, p := range []string{
		"/etc/hosts", "etc/hosts", "/etc/abs-out", "/etc/rel-out", "/out/x", "/up/x", "/up/up/etc/x",
		"/in/hosts", "/etc/fifo", "/etc/null", "/etc/fifo/x", "/../x", "/etc/../../x", "/etc", "/", "",
		"a/b/c/d", "/etc/hosts/", "//etc//hosts", "/dangling/x", "/etc/\x00", ".urunc-tmp-x",
	} {
		f.Add(p, []byte("127.0.0.1 localhost\n"))
	}
	f.Fuzz(func(t *testing.T, p string, data []byte) {
		if len(data) > MaxFileSize+1 {
			data = data[:MaxFileSize+1]
		}
		fx := newInRootFixture(t)
		plantHostileImage(t, fx)
		src := filepath.Join(fx.base, "src")
		if err := os.WriteFile(src, data, 0o600); err != nil {
			t.Fatal(err)
		}
		outsideBefore := snapshot(t, fx.outside)
		fifo := filepath.Join(fx.root, "etc", "fifo")
		err := copyPromptly(t, fx.root, p, src, releaseFIFO(fifo))
		if after := snapshot(t, fx.outside); after != outsideBefore {
			t.Fatalf("writing %q changed what is outside the rootfs:\nbefore:\n%s\nafter:\n%s", p, outsideBefore, after)
		}
		if left := tempLeftovers(t, fx.root); len(left) > 0 && !strings.Contains(p, tempPrefix) {
			t.Fatalf("writing %q left behind %v", p, left)
		}
		if len(data) > MaxFileSize && err == nil {
			t.Fatalf("a %d-byte source was copied", len(data))
		}
		if err != nil {
			return
		}
		got, err := openResolvedInRoot(fx.root, p)
		if err != nil {
			t.Fatalf("written %q but cannot read it back inside the root: %v", p, err)
		}
		defer got.Close()
		var buf bytes.Buffer
		if _, err := buf.ReadFrom(got); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(buf.Bytes(), data) {
			t.Fatalf("%q holds %d bytes, want %d", p, buf.Len(), len(data))
		}
	})
}

// plantHostileImage adds to the fixture's rootfs what an image that
// attacks the shim would ship.
func plantHostileImage(t *testing.T, fx inRootFixture) {
	t.Helper()
	links := map[string]string{
		"etc/abs-out": fx.victim,
		"etc/rel-out": "../../outside/victim",
		"out":         fx.outside,
		"up":          "../..",
		"in":          "/real/etc",
		"dangling":    "/nowhere/at/all",
	}
	for at, target := range links {
		if err := os.Symlink(target, filepath.Join(fx.root, at)); err != nil {
			t.Fatal(err)
		}
	}
	if err := unix.Mkfifo(filepath.Join(fx.root, "etc", "fifo"), 0o644); err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() == 0 {
		if err := unix.Mknod(filepath.Join(fx.root, "etc", "null"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))); err != nil {
			t.Fatal(err)
		}
	}
}

// openResolvedInRoot opens p for reading as a reader resolving inside
// root (a guest, or the shim's own reads of the image) finds it, refusing
// anything but a regular file.
func openResolvedInRoot(root, p string) (*os.File, error) {
	dir, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	defer unix.Close(dir)
	rel := strings.TrimPrefix(filepath.Clean("/"+p), "/")
	fd, err := unix.Openat2(dir, rel, &unix.OpenHow{
		Flags:   unix.O_RDONLY | unix.O_NONBLOCK | unix.O_CLOEXEC | unix.O_NOCTTY,
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS,
	})
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), filepath.Join(root, rel))
	if st, err := f.Stat(); err != nil || !st.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("%s is not a regular file in the root (%v)", p, err)
	}
	return f, nil
}
