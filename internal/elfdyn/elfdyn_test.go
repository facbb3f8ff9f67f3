package elfdyn

import (
	"bytes"
	"debug/elf"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// hostELFs are binaries and libraries of the test machine, dynamic and
// static; the ones a machine lacks are skipped.
var hostELFs = []string{
	"/bin/ls",
	"/usr/bin/qemu-system-x86_64",
	"/lib/x86_64-linux-gnu/libc.so.6",
	"/lib/x86_64-linux-gnu/libglib-2.0.so.0",
	"/usr/lib/x86_64-linux-gnu/qemu/accel-tcg-x86_64.so",
	"/bin/busybox",
}

// Read gives what debug/elf gives, reading the whole tables, for every
// host ELF at hand.
func TestReadMatchesDebugELF(t *testing.T) {
	checked := 0
	for _, path := range hostELFs {
		if _, err := os.Stat(path); err != nil {
			continue
		}
		checked++
		t.Run(filepath.Base(path), func(t *testing.T) {
			got, err := Read(path)
			if err != nil {
				t.Fatal(err)
			}
			want := debugELF(t, path)
			if got.Interp != want.Interp || !slices.Equal(got.Needed, want.Needed) || !slices.Equal(got.SearchPath, want.SearchPath) {
				t.Fatalf("Read(%s) = %+v, debug/elf says %+v", path, got, want)
			}
		})
	}
	if checked == 0 {
		t.Skip("no host ELF file to compare")
	}
}

// debugELF is the same answer from debug/elf, as the shim read it before
// this package: the test's oracle and the benchmark's peer.
func debugELF(t testing.TB, path string) Info {
	t.Helper()
	f, err := elf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var want Info
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			buf := make([]byte, p.Filesz)
			if _, err := p.ReadAt(buf, 0); err != nil {
				t.Fatal(err)
			}
			want.Interp = strings.TrimRight(string(buf), "\x00")
		}
	}
	want.Needed, _ = f.DynString(elf.DT_NEEDED)
	for _, tag := range []elf.DynTag{elf.DT_RUNPATH, elf.DT_RPATH} {
		vals, _ := f.DynString(tag)
		for _, v := range vals {
			want.SearchPath = append(want.SearchPath, strings.Split(v, ":")...)
		}
	}
	return want
}

func TestReadRefuses(t *testing.T) {
	dir := t.TempDir()
	ls, _ := os.ReadFile("/bin/ls")
	type refusal struct {
		name    string
		content []byte
		want    string
	}
	cases := []refusal{
		{"not ELF", []byte("root:x:0:0:root:/root:/bin/sh\n"), "bad magic"},
		{"empty", nil, "EOF"},
	}
	if len(ls) > 4096 {
		// The headers of a real binary, without the segments they point at.
		cases = append(cases, refusal{"truncated", ls[:1024], ""})
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "-"))
			if err := os.WriteFile(path, tc.content, 0o644); err != nil {
				t.Fatal(err)
			}
			_, err := Read(path)
			if err == nil {
				t.Fatalf("Read of a %s file succeeded", tc.name)
			}
			if !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not name the file and %q", err, tc.want)
			}
		})
	}
	if _, err := Read(filepath.Join(dir, "missing")); !os.IsNotExist(err) {
		t.Fatalf("Read of a missing file: %v, want not-exist", err)
	}
}

// Whatever bytes a file holds, decoding ends with an answer or an error.
func FuzzDecode(f *testing.F) {
	for _, path := range hostELFs[:1] {
		if b, err := os.ReadFile(path); err == nil {
			f.Add(b)
		}
	}
	f.Add([]byte("\x7fELF\x02\x01\x01"))
	f.Fuzz(func(t *testing.T, data []byte) {
		_, _ = decode(bytes.NewReader(data))
	})
}

// BenchmarkRead against BenchmarkDebugELF: the host ELFs at hand, read
// each way (make bench prints both).
func BenchmarkRead(b *testing.B) {
	paths := presentELFs(b)
	b.ReportAllocs()
	for b.Loop() {
		for _, p := range paths {
			if _, err := Read(p); err != nil {
				b.Fatal(err)
			}
		}
	}
}

func BenchmarkDebugELF(b *testing.B) {
	paths := presentELFs(b)
	b.ReportAllocs()
	for b.Loop() {
		for _, p := range paths {
			debugELF(b, p)
		}
	}
}

func presentELFs(b *testing.B) []string {
	var out []string
	for _, p := range hostELFs {
		if _, err := os.Stat(p); err == nil {
			out = append(out, p)
		}
	}
	if len(out) == 0 {
		b.Skip("no host ELF file")
	}
	return out
}
