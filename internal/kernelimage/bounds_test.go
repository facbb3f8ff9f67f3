package kernelimage

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// zstdFrame is a zstd frame declaring a window of 1<<windowLog bytes, of
// zeros bytes of zeros in RLE blocks (4 bytes for each 128 KiB: a 9 KB
// file can stand for 250 MiB), then tail as a raw block.
func zstdFrame(windowLog uint, zeros int, tail []byte) []byte {
	const maxBlock = 128 << 10
	// No content size, no checksum: the window descriptor follows.
	f := []byte{0x28, 0xb5, 0x2f, 0xfd, 0x00, byte(windowLog-10) << 3}
	block := func(last bool, typ, size int) {
		h := uint32(typ<<1 | size<<3)
		if last {
			h |= 1
		}
		f = append(f, byte(h), byte(h>>8), byte(h>>16))
	}
	for zeros > 0 {
		n := min(zeros, maxBlock)
		zeros -= n
		block(zeros == 0 && len(tail) == 0, 1, n)
		f = append(f, 0)
	}
	if len(tail) > 0 {
		block(true, 0, len(tail))
		f = append(f, tail...)
	}
	return f
}

// A zstd payload's window and output are bounded, and a bound reached is
// an Unknown of its own, errBound, while a kernel's own window (128 MiB,
// "zstd -22 --ultra" from a pipe) is taken.
func TestZstdBounds(t *testing.T) {
	for _, tc := range []struct {
		name  string
		frame []byte
		want  Verdict
		bound bool
		// maxAlloc bounds what the check allocates (0: not measured).
		maxAlloc uint64
	}{
		{"kernel's window", zstdFrame(27, 1<<20, []byte(VirtioConsole.Marker)), BuiltIn, false, 0},
		{"kernel's window without", zstdFrame(27, 1<<20, []byte("nothing")), Absent, false, 0},
		{"256 MiB window refused unread", zstdFrame(28, 250<<20, nil), Unknown, true, 16 << 20},
		{"output past 128 MiB", zstdFrame(20, 200<<20, []byte(VirtioConsole.Marker)), Unknown, true, 32 << 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			img := bzImage(tc.frame, 0x20f, nil)
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			got, err := Check(context.Background(), bytes.NewReader(img), int64(len(img)), VirtioConsole, Options{})
			runtime.ReadMemStats(&after)
			if got != tc.want || errors.Is(err, errBound) != tc.bound {
				t.Fatalf("verdict %v (%v), want %v, a bound %v", got, err, tc.want, tc.bound)
			}
			if alloc := after.TotalAlloc - before.TotalAlloc; tc.maxAlloc > 0 && alloc > tc.maxAlloc {
				t.Fatalf("the check allocated %d MiB", alloc>>20)
			}
		})
	}
}

// A file that reaches a bound is decompressed once: the Unknown is kept
// by its contents' hash.
func TestCheckFileCachesBounds(t *testing.T) {
	dir := t.TempDir()
	kernel := filepath.Join(dir, "bzImage")
	if err := os.WriteFile(kernel, bzImage(zstdFrame(20, 200<<20, nil), 0x20f, nil), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(kernel)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for i, want := range []string{"decompresses past", "kept from an earlier check"} {
		v, err := CheckFile(context.Background(), f, VirtioConsole, dir, Options{})
		if v != Unknown || err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("check %d: %v (%v), want Unknown with %q", i, v, err, want)
		}
	}
	if got := readCache(filepath.Join(dir, CacheFile)); len(got) != 1 || got[0].Verdict != Unknown {
		t.Fatalf("cache %+v", got)
	}
}

// The cache goes by the file's contents, never its inode, size and times,
// which block snapshotters and erofs give alike to other images' files.
func TestCheckFileCacheKeyedByContent(t *testing.T) {
	dir := t.TempDir()
	cacheDir := filepath.Join(dir, "state")
	with := bzImage(gzipOf(t, kernelBody(1<<20, 1000)), 0x20f, nil)
	without := bzImage(gzipOf(t, kernelBody(1<<20, -1)), 0x20f, nil)
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	checkFile := func(path string) Verdict { return checkPath(t, path, cacheDir) }
	first := write("a", with)
	if v := checkFile(first); v != BuiltIn {
		t.Fatalf("first check %v", v)
	}
	// A verdict flipped in the cache shows where the cache answers.
	entries := readCache(filepath.Join(cacheDir, CacheFile))
	if len(entries) != 1 {
		t.Fatalf("cache %+v", entries)
	}
	entries[0].Verdict = Absent
	if err := writeCache(cacheDir, entries); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name     string
		contents []byte
		want     Verdict
	}{
		{"same contents, another file: the cache's", with, Absent},
		{"other contents: checked", without, Absent},
		{"other contents with the marker: checked", bzImage(gzipOf(t, kernelBody(1<<20, 2000)), 0x20f, nil), BuiltIn},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := write(strings.ReplaceAll(tc.name, " ", "_"), tc.contents)
			if v := checkFile(p); v != tc.want {
				t.Fatalf("%v, want %v", v, tc.want)
			}
		})
	}
	// An older shim's entries, by inode, are not taken.
	old := `[{"ino":1,"size":2,"mtime":3,"ctime":4,"marker":"virtio-ports","builtin":false}]`
	if err := os.WriteFile(filepath.Join(cacheDir, CacheFile), []byte(old), 0o600); err != nil {
		t.Fatal(err)
	}
	if got := readCache(filepath.Join(cacheDir, CacheFile)); len(got) != 0 {
		t.Fatalf("an old entry read: %+v", got)
	}
}

// A kernel file on FUSE (a lazily pulled snapshot) or a network
// filesystem is not read: a read there may block past the check's bound.
func TestCheckFileRemoteFilesystems(t *testing.T) {
	kernel := filepath.Join(t.TempDir(), "bzImage")
	if err := os.WriteFile(kernel, bzImage(gzipOf(t, kernelBody(1<<20, 1000)), 0x20f, nil), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		magic int64
		want  Verdict
	}{
		{"fuse", 0x65735546, Unknown},
		{"nfs", 0x6969, Unknown},
		{"cifs", 0xFF534D42, Unknown},
		{"smb2", 0xFE534D42, Unknown},
		{"9p", 0x01021997, Unknown},
		{"ext4", 0xEF53, BuiltIn},
		{"overlay", 0x794c7630, BuiltIn},
		{"erofs", 0xE0F5E1E2, BuiltIn},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, err := os.Open(kernel)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			statfs := func(fd int, buf *unix.Statfs_t) error {
				buf.Type = tc.magic
				return nil
			}
			v, err := CheckFile(context.Background(), f, VirtioConsole, "", Options{Statfs: statfs})
			if v != tc.want {
				t.Fatalf("%v (%v), want %v", v, err, tc.want)
			}
			if tc.want == Unknown && (!errors.Is(err, ErrUnknown) || !strings.Contains(err.Error(), "not read")) {
				t.Fatalf("reason %v", err)
			}
		})
	}
}

// An xz check whose process another reaper waits for (the shim's:
// cmd.Wait is never called) leaves no descriptor open.
func TestCheckXZReleasesDescriptors(t *testing.T) {
	img := bzImage(xzOf(t, kernelBody(1<<20, 1000)), 0x20f, nil)
	reaped := func(cmd *exec.Cmd) (func() error, error) {
		if err := cmd.Start(); err != nil {
			return nil, err
		}
		return func() error {
			var ws syscall.WaitStatus
			_, err := syscall.Wait4(cmd.Process.Pid, &ws, 0, nil)
			return err
		}, nil
	}
	openFDs := func() int {
		t.Helper()
		ents, err := os.ReadDir("/proc/self/fd")
		if err != nil {
			t.Skipf("no /proc: %v", err)
		}
		return len(ents)
	}
	before := openFDs()
	for range 20 {
		v, err := Check(context.Background(), bytes.NewReader(img), int64(len(img)), VirtioConsole, Options{Start: reaped})
		if v != BuiltIn {
			t.Fatalf("%v (%v)", v, err)
		}
	}
	if after := openFDs(); after > before {
		t.Fatalf("%d descriptors open after 20 checks, %d before", after, before)
	}
}
