package kernelimage

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"
)

// The test kernels of the integration tests (integration/setup.sh): one
// with the virtio console built in, Debian's with it as a module.
const (
	builtinKernel = "/var/cache/urunc-test/guest-builtin/bzImage"
	debianKernel  = "/var/cache/urunc-test/guest/vmlinuz"
)

// kernelBody is a stand-in for a decompressed kernel: n bytes of
// noise-free filler with the marker at at (at < 0: none).
func kernelBody(n, at int) []byte {
	b := bytes.Repeat([]byte("kernel text "), n/12+1)[:n]
	if at >= 0 {
		copy(b[at:], VirtioConsole.Marker)
	}
	return b
}

func gzipOf(t testing.TB, b []byte) []byte {
	t.Helper()
	var out bytes.Buffer
	w := gzip.NewWriter(&out)
	if _, err := w.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

func zstdOf(t testing.TB, b []byte) []byte {
	t.Helper()
	w, err := zstd.NewWriter(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	return w.EncodeAll(b, nil)
}

// xzOf compresses b as the kernel's build does, with the host's xz.
func xzOf(t testing.TB, b []byte) []byte {
	t.Helper()
	if _, err := exec.LookPath("xz"); err != nil {
		t.Skip("no xz program")
	}
	cmd := exec.Command("xz", "--check=crc32", "--x86", "--lzma2=dict=1MiB", "--stdout")
	cmd.Stdin = bytes.NewReader(b)
	out, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// bzImage builds a bzImage around payload: a setup header of boot
// protocol version, two setup sectors, and the payload, followed as the
// kernel's build does by the decompressed size, 16 bytes into the
// protected-mode code. fix changes the header before it is written.
func bzImage(payload []byte, version uint16, fix func(h []byte)) []byte {
	const setupSects, rel = 1, 16
	img := make([]byte, (setupSects+1)*512+rel)
	img[offSetupSects] = setupSects
	copy(img[offHeaderMagic:], "HdrS")
	binary.LittleEndian.PutUint16(img[offVersion:], version)
	binary.LittleEndian.PutUint32(img[offPayloadOffset:], rel)
	binary.LittleEndian.PutUint32(img[offPayloadLength:], uint32(len(payload)+4))
	if fix != nil {
		fix(img)
	}
	img = append(img, payload...)
	return binary.LittleEndian.AppendUint32(img, 12345)
}

func check(t testing.TB, img []byte, limit int64) (Verdict, error) {
	t.Helper()
	return Check(context.Background(), bytes.NewReader(img), int64(len(img)), VirtioConsole, Options{Limit: limit})
}

func TestCheck(t *testing.T) {
	with := kernelBody(3<<20, 2<<20)
	without := kernelBody(3<<20, -1)
	// The marker across two of the search's reads.
	across := kernelBody(3<<20, searchChunk-5)
	big := make([]byte, 2<<20)
	for _, tc := range []struct {
		name  string
		image func(t testing.TB) []byte
		limit int64
		want  Verdict
		// why is in an Unknown verdict's reason.
		why string
	}{
		{"elf with", func(testing.TB) []byte { return append([]byte("\x7fELF\x02\x01\x01"), with...) }, 0, BuiltIn, ""},
		{"elf without", func(testing.TB) []byte { return append([]byte("\x7fELF\x02\x01\x01"), without...) }, 0, Absent, ""},
		{"elf past the bound", func(testing.TB) []byte { return append([]byte("\x7fELF\x02\x01\x01"), without...) }, 1 << 20, Unknown, "more than"},
		{"gzip bzImage with", func(t testing.TB) []byte { return bzImage(gzipOf(t, with), 0x20f, nil) }, 0, BuiltIn, ""},
		{"gzip bzImage without", func(t testing.TB) []byte { return bzImage(gzipOf(t, without), 0x20f, nil) }, 0, Absent, ""},
		{"gzip marker across reads", func(t testing.TB) []byte { return bzImage(gzipOf(t, across), 0x20f, nil) }, 0, BuiltIn, ""},
		{"zstd bzImage with", func(t testing.TB) []byte { return bzImage(zstdOf(t, with), 0x20f, nil) }, 0, BuiltIn, ""},
		{"zstd bzImage without", func(t testing.TB) []byte { return bzImage(zstdOf(t, without), 0x20f, nil) }, 0, Absent, ""},
		{"xz bzImage with", func(t testing.TB) []byte { return bzImage(xzOf(t, with), 0x20f, nil) }, 0, BuiltIn, ""},
		{"xz bzImage without", func(t testing.TB) []byte { return bzImage(xzOf(t, without), 0x20f, nil) }, 0, Absent, ""},
		{"xz past the bound", func(t testing.TB) []byte { return bzImage(xzOf(t, without), 0x20f, nil) }, 1 << 20, Unknown, "decompresses past"},
		{"gzip file (Image.gz)", func(t testing.TB) []byte { return gzipOf(t, with) }, 0, BuiltIn, ""},
		{"gzip bomb bounded", func(t testing.TB) []byte { return bzImage(gzipOf(t, big), 0x20f, nil) }, 1 << 20, Unknown, "decompresses past"},
		{"uncompressed payload", func(testing.TB) []byte { return bzImage(append([]byte("\x7fELF"), with...), 0x20f, nil) }, 0, BuiltIn, ""},
		{"lz4 payload", func(testing.TB) []byte { return bzImage([]byte("\x02\x21\x4c\x18 lz4 data"), 0x20f, nil) }, 0, Unknown, "lz4 payload: no decompressor"},
		{"lzma payload", func(testing.TB) []byte { return bzImage([]byte("\x5d\x00\x00\x80 lzma"), 0x20f, nil) }, 0, Unknown, "lzma payload"},
		{"unknown payload", func(testing.TB) []byte { return bzImage([]byte("what is this"), 0x20f, nil) }, 0, Unknown, "unknown compression"},
		{"old boot protocol", func(t testing.TB) []byte { return bzImage(gzipOf(t, with), 0x206, nil) }, 0, Unknown, "boot protocol 2.06"},
		{"payload offset past EOF", func(t testing.TB) []byte {
			return bzImage(gzipOf(t, with), 0x20f, func(h []byte) { binary.LittleEndian.PutUint32(h[offPayloadOffset:], 1<<30) })
		}, 0, Unknown, "outside"},
		{"payload length huge", func(t testing.TB) []byte {
			return bzImage(gzipOf(t, with), 0x20f, func(h []byte) { binary.LittleEndian.PutUint32(h[offPayloadLength:], 0xffffffff) })
		}, 0, Unknown, "outside"},
		{"payload length zero", func(t testing.TB) []byte {
			return bzImage(gzipOf(t, with), 0x20f, func(h []byte) { binary.LittleEndian.PutUint32(h[offPayloadLength:], 0) })
		}, 0, Unknown, "outside"},
		{"payload cut short", func(t testing.TB) []byte {
			return bzImage(gzipOf(t, with)[:4096], 0x20f, nil)
		}, 0, Unknown, "gzip payload"},
		{"setup sectors 0 means 4", func(t testing.TB) []byte {
			img := bzImage(nil, 0x20f, func(h []byte) { h[offSetupSects] = 0; binary.LittleEndian.PutUint32(h[offPayloadOffset:], 0) })
			img = append(img[:len(img)-4], make([]byte, 5*512-len(img)+4)...)
			p := gzipOf(t, with)
			binary.LittleEndian.PutUint32(img[offPayloadLength:], uint32(len(p)))
			return append(img, p...)
		}, 0, BuiltIn, ""},
		{"header cut short", func(testing.TB) []byte { return []byte("MZ short") }, 0, Unknown, "neither"},
		{"empty", func(testing.TB) []byte { return nil }, 0, Unknown, "empty"},
		{"no header magic", func(testing.TB) []byte { return make([]byte, 4096) }, 0, Unknown, "neither"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := check(t, tc.image(t), tc.limit)
			if got != tc.want {
				t.Fatalf("verdict %v (%v), want %v", got, err, tc.want)
			}
			if tc.want == Unknown {
				if !errors.Is(err, ErrUnknown) || !strings.Contains(err.Error(), tc.why) {
					t.Fatalf("reason %v, want one with %q wrapping ErrUnknown", err, tc.why)
				}
			} else if err != nil {
				t.Fatal(err)
			}
		})
	}
}

// An xz payload with no xz program on the host cannot be told.
func TestCheckWithoutXZ(t *testing.T) {
	img := bzImage([]byte("\xfd7zXZ\x00 not really"), 0x20f, nil)
	t.Setenv("PATH", t.TempDir())
	got, err := Check(context.Background(), bytes.NewReader(img), int64(len(img)), VirtioConsole, Options{XZ: filepath.Join(t.TempDir(), "xz")})
	if got != Unknown || err == nil {
		t.Fatalf("verdict %v (%v), want Unknown", got, err)
	}
}

// An xz that ends badly on a stream without the marker gives Unknown,
// not Absent: the stream was not read to its end.
func TestCheckXZFails(t *testing.T) {
	if _, err := exec.LookPath("xz"); err != nil {
		t.Skip("no xz program")
	}
	payload := xzOf(t, kernelBody(1<<20, -1))
	payload = payload[:len(payload)/2]
	img := bzImage(payload, 0x20f, nil)
	got, err := check(t, img, 0)
	if got != Unknown || !errors.Is(err, ErrUnknown) {
		t.Fatalf("verdict %v (%v), want Unknown", got, err)
	}
}

func TestSearch(t *testing.T) {
	marker := []byte("virtio-ports")
	for _, at := range []int{0, 1, searchChunk - len(marker), searchChunk - len(marker) + 1, searchChunk - 1, searchChunk, 2*searchChunk - 3, 3*searchChunk - len(marker)} {
		b := make([]byte, 3*searchChunk)
		copy(b[at:], marker)
		if found, err := search(context.Background(), bytes.NewReader(b), marker, 1<<30); !found || err != nil {
			t.Errorf("marker at %d: found %v, %v", at, found, err)
		}
	}
	b := make([]byte, 3*searchChunk)
	copy(b[len(b)-len(marker)+1:], marker) // cut by the end: not there
	if found, err := search(context.Background(), bytes.NewReader(b), marker, 1<<30); found || err != nil {
		t.Errorf("a cut marker: found %v, %v", found, err)
	}
}

func TestCheckFileCache(t *testing.T) {
	dir := t.TempDir()
	cacheDir := filepath.Join(dir, "state")
	kernel := filepath.Join(dir, "bzImage")
	if err := os.WriteFile(kernel, bzImage(gzipOf(t, kernelBody(1<<20, 1000)), 0x20f, nil), 0o644); err != nil {
		t.Fatal(err)
	}
	checkFile := func() Verdict { return checkPath(t, kernel, cacheDir) }
	if v := checkFile(); v != BuiltIn {
		t.Fatalf("first check %v", v)
	}
	cache := filepath.Join(cacheDir, CacheFile)
	entries := readCache(cache)
	if len(entries) != 1 || entries[0].Verdict != BuiltIn {
		t.Fatalf("cache %+v", entries)
	}
	// The second check is the cache's: a flipped verdict there shows.
	entries[0].Verdict = Absent
	if err := writeCache(cacheDir, entries); err != nil {
		t.Fatal(err)
	}
	if v := checkFile(); v != Absent {
		t.Fatalf("second check %v: not the cache's", v)
	}
	// A changed file is checked again.
	if err := os.WriteFile(kernel, bzImage(gzipOf(t, kernelBody(1<<20+1, 1000)), 0x20f, nil), 0o644); err != nil {
		t.Fatal(err)
	}
	if v := checkFile(); v != BuiltIn {
		t.Fatalf("check of a changed file %v", v)
	}
	if n := len(readCache(cache)); n != 2 {
		t.Fatalf("cache has %d entries, want 2", n)
	}
	// Bounded: the oldest go.
	many := make([]cacheEntry, maxCacheEntries)
	for i := range many {
		many[i] = cacheEntry{SHA256: strings.Repeat(fmt.Sprintf("%02x", i), 32), Marker: "m", Verdict: Absent}
	}
	if err := writeCache(cacheDir, many); err != nil {
		t.Fatal(err)
	}
	if v := checkFile(); v != BuiltIn {
		t.Fatal(v)
	}
	if got := readCache(cache); len(got) != maxCacheEntries || got[0].Marker != VirtioConsole.Marker {
		t.Fatalf("cache of %d entries, first %+v", len(got), got[0])
	}
	// A broken cache is no cache.
	if err := os.WriteFile(cache, []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	if v := checkFile(); v != BuiltIn {
		t.Fatal(v)
	}
	if len(readCache(cache)) != 1 {
		t.Fatal("a broken cache was not replaced")
	}
	if left, _ := filepath.Glob(filepath.Join(cacheDir, ".*")); len(left) != 0 {
		t.Fatalf("temporary files left: %v", left)
	}
}

// The test kernels themselves, where setup.sh has put them.
func TestTestKernels(t *testing.T) {
	for _, tc := range []struct {
		path string
		want Verdict
	}{{builtinKernel, BuiltIn}, {debianKernel, Absent}} {
		t.Run(filepath.Base(tc.path), func(t *testing.T) {
			f, err := os.Open(tc.path)
			if err != nil {
				t.Skipf("no test kernel: %v", err)
			}
			defer f.Close()
			v, err := CheckFile(context.Background(), f, VirtioConsole, "", Options{})
			if v != tc.want {
				t.Fatalf("%s: %v (%v), want %v", tc.path, v, err, tc.want)
			}
		})
	}
}

// BenchmarkCheckKernel is a check's cost, uncached, on the test kernels:
// go test -run '^$' -bench CheckKernel -benchtime 5x ./internal/kernelimage
func BenchmarkCheckKernel(b *testing.B) {
	for _, path := range []string{builtinKernel, debianKernel} {
		b.Run(filepath.Base(path), func(b *testing.B) {
			f := openTestKernel(b, path)
			for b.Loop() {
				if _, err := CheckFile(context.Background(), f, VirtioConsole, "", Options{}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	b.Run("cached", func(b *testing.B) {
		f := openTestKernel(b, debianKernel)
		dir := b.TempDir()
		if _, err := CheckFile(context.Background(), f, VirtioConsole, dir, Options{}); err != nil {
			b.Fatal(err)
		}
		for b.Loop() {
			if _, err := CheckFile(context.Background(), f, VirtioConsole, dir, Options{}); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// FuzzLocate: whatever the file, Locate does not panic and a payload it
// finds lies inside the file.
func FuzzLocate(f *testing.F) {
	f.Add([]byte("\x7fELF"))
	f.Add(bzImage([]byte("\x1f\x8b\x08\x00payload"), 0x20f, nil))
	f.Add(bzImage([]byte("\xfd7zXZ\x00"), 0x208, func(h []byte) { h[offSetupSects] = 0 }))
	f.Add(bzImage(nil, 0x20f, func(h []byte) { binary.LittleEndian.PutUint32(h[offPayloadOffset:], 0xfffffff0) }))
	f.Fuzz(func(t *testing.T, data []byte) {
		img, err := Locate(bytes.NewReader(data), int64(len(data)))
		if err != nil {
			return
		}
		if img.Offset < 0 || img.Length <= 0 || img.Offset+img.Length > int64(len(data)) {
			t.Fatalf("payload %d bytes at %d of a %d-byte file", img.Length, img.Offset, len(data))
		}
	})
}

// BenchmarkContentHash is what keying the cache by the file's contents
// adds to every check, cached or not, on the test kernels:
// go test -run '^$' -bench ContentHash -benchtime 20x ./internal/kernelimage
func BenchmarkContentHash(b *testing.B) {
	for _, path := range []string{builtinKernel, debianKernel} {
		b.Run(filepath.Base(path), func(b *testing.B) {
			f := openTestKernel(b, path)
			st, err := f.Stat()
			if err != nil {
				b.Fatal(err)
			}
			b.SetBytes(st.Size())
			for b.Loop() {
				if _, err := contentHash(context.Background(), f, st.Size()); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// openTestKernel opens a test kernel for a benchmark, closed after it;
// a machine without it skips the benchmark.
func openTestKernel(b *testing.B, path string) *os.File {
	b.Helper()
	f, err := os.Open(path)
	if err != nil {
		b.Skipf("no test kernel: %v", err)
	}
	b.Cleanup(func() { f.Close() })
	return f
}

// checkPath checks the file at path for the virtio console, with the
// verdict cache in cacheDir; an error fails the test.
func checkPath(t *testing.T, path, cacheDir string) Verdict {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	v, err := CheckFile(context.Background(), f, VirtioConsole, cacheDir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	return v
}
