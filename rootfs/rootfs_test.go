package rootfs

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestResolveInRootfs(t *testing.T) {
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "boot"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "boot", "k"), []byte("k"), 0o644); err != nil {
		t.Fatal(err)
	}
	// An absolute symlink in an image means a path in the image.
	if err := os.Symlink("/boot/k", filepath.Join(root, "kernel")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/etc/passwd", filepath.Join(root, "sneaky")); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		path, want, wantErr string
	}{
		{path: "/boot/k", want: filepath.Join(root, "boot/k")},
		{path: "boot/k", want: filepath.Join(root, "boot/k")},
		{path: "/kernel", want: filepath.Join(root, "boot/k")},
		{path: "/sneaky", want: filepath.Join(root, "etc/passwd")},
		{path: "../etc/passwd", wantErr: "leaves the container rootfs"},
		{path: "/../../etc/passwd", wantErr: "leaves the container rootfs"},
		{path: "", wantErr: "empty path"},
	}
	for _, tc := range tests {
		t.Run(tc.path, func(t *testing.T) {
			got, err := ResolveInRootfs(root, tc.path)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("got %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}

func TestRequireFile(t *testing.T) {
	root := t.TempDir()
	if err := os.Mkdir(filepath.Join(root, "dir"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mkfifo(filepath.Join(root, "fifo"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/dev/zero", filepath.Join(root, "zero")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("../../../../etc/passwd", filepath.Join(root, "climb")); err != nil {
		t.Fatal(err)
	}
	tests := []struct{ path, want string }{
		{"/missing", `guest kernel "/missing" not found in the container rootfs`},
		{"/dir", `guest kernel "/dir" in the container rootfs is not a regular file (a directory)`},
		// A FIFO would block a plain open forever.
		{"/fifo", `guest kernel "/fifo" in the container rootfs is not a regular file (a FIFO)`},
		// Symlinks resolve inside the rootfs: neither reaches the host's file.
		{"/zero", `guest kernel "/zero" not found in the container rootfs`},
		{"/climb", `guest kernel "/climb" not found in the container rootfs`},
	}
	for _, tc := range tests {
		if _, err := RequireFile(root, tc.path, "guest kernel"); err == nil || err.Error() != tc.want {
			t.Errorf("%s: err = %v, want %q", tc.path, err, tc.want)
		}
	}
	// A symlink in the image resolves to its target inside the rootfs.
	if err := os.WriteFile(filepath.Join(root, "k"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/k", filepath.Join(root, "kernel")); err != nil {
		t.Fatal(err)
	}
	real, _ := filepath.EvalSymlinks(root)
	if got, err := RequireFile(root, "/kernel", "guest kernel"); err != nil || got != filepath.Join(real, "k") {
		t.Fatalf("RequireFile(/kernel) = %q, %v; want %s", got, err, filepath.Join(real, "k"))
	}
}

func TestELFDepsOfAHostBinary(t *testing.T) {
	deps, err := ELFDeps("/bin/ls")
	if err != nil {
		t.Fatal(err)
	}
	var hasLibc, hasInterp bool
	for _, d := range deps {
		hasLibc = hasLibc || strings.Contains(filepath.Base(d), "libc.so")
		hasInterp = hasInterp || strings.Contains(filepath.Base(d), "ld-linux")
	}
	if !hasLibc || !hasInterp {
		t.Fatalf("deps of /bin/ls lack libc or the interpreter: %v", deps)
	}
	if _, err := ELFDeps("/etc/passwd"); err == nil {
		t.Fatal("ELFDeps of a non-ELF file succeeded")
	}
}

// A module's libraries join the binary's in one walk, each once; a module
// that is not ELF or not there adds nothing and fails nothing.
func TestELFDepsWithModules(t *testing.T) {
	const module = "/usr/lib/x86_64-linux-gnu/qemu/audio-alsa.so" // needs libasound, which ls does not
	if _, err := os.Stat(module); err != nil {
		t.Skipf("no %s on this host", module)
	}
	alone, err := ELFDeps("/bin/ls")
	if err != nil {
		t.Fatal(err)
	}
	deps, err := ELFDeps("/bin/ls", "/etc/passwd", "/nonexistent/module.so", module)
	if err != nil {
		t.Fatalf("a module failed the walk: %v", err)
	}
	seen := map[string]bool{}
	for _, d := range deps {
		if seen[d] {
			t.Errorf("%s listed twice in %v", d, deps)
		}
		seen[d] = true
	}
	for _, d := range alone {
		if !seen[d] {
			t.Errorf("the binary's %s is missing with modules: %v", d, deps)
		}
	}
	var hasAsound bool
	for _, d := range deps {
		hasAsound = hasAsound || strings.HasPrefix(filepath.Base(d), "libasound.so")
	}
	if !hasAsound {
		t.Errorf("the module's libasound is missing: %v", deps)
	}
	if seen[module] {
		t.Errorf("the module itself is listed: %v", deps)
	}
}

// Whatever path an image names, resolving it stays inside the rootfs.
func FuzzResolveInRootfs(f *testing.F) {
	for _, s := range []string{"/boot/k", "../etc/passwd", "a/../../b", "/./x/", "..", ""} {
		f.Add(s)
	}
	root := f.TempDir()
	f.Fuzz(func(t *testing.T, p string) {
		got, err := ResolveInRootfs(root, p)
		if err != nil {
			return
		}
		if got != root && !strings.HasPrefix(got, root+"/") {
			t.Fatalf("%q resolved to %q, outside %q", p, got, root)
		}
	})
}

// BenchmarkELFDeps walks the libraries of the host's qemu, as every qemu
// container's Create does (make bench runs it).
func BenchmarkELFDeps(b *testing.B) {
	binary := "/usr/bin/qemu-system-x86_64"
	if _, err := os.Stat(binary); err != nil {
		binary = "/bin/ls"
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ELFDeps(binary); err != nil {
			b.Fatal(err)
		}
	}
}
