package rootfs

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/core/mount"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

func bind(src, dst string) specs.Mount {
	return specs.Mount{Type: "bind", Source: src, Destination: dst, Options: []string{"rbind", "ro"}}
}

// podVolumesFixture lays out what the kubelet hands a container: single
// files (hosts, resolv.conf) and a ConfigMap directory whose keys are
// symlinks into its ..data directory.
func podVolumesFixture(t *testing.T) (dir string, ms []specs.Mount) {
	t.Helper()
	dir = t.TempDir()
	write := func(p, data string, mode os.FileMode) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, p)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, p), []byte(data), mode); err != nil {
			t.Fatal(err)
		}
	}
	write("hosts", "127.0.0.1 localhost\n198.18.7.7 pod-alias\n", 0o644)
	write("resolv.conf", "nameserver 198.18.0.53\nsearch pod.example\n", 0o644)
	write("cm/..2026_12_05/key", "configmap-value\n", 0o644)
	write("cm/..2026_12_05/secret", "s3cret", 0o600|os.ModeSetuid)
	if err := os.Symlink("..2026_12_05", filepath.Join(dir, "cm/..data")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("..data/key", filepath.Join(dir, "cm/key")); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "empty"), 0o777); err != nil || os.Chmod(filepath.Join(dir, "empty"), 0o777) != nil {
		t.Fatal(err)
	}
	ms = []specs.Mount{
		{Type: "proc", Source: "proc", Destination: "/proc"},
		bind(filepath.Join(dir, "hosts"), "/etc/hosts"),
		bind(filepath.Join(dir, "resolv.conf"), "/etc/resolv.conf"),
		bind(filepath.Join(dir, "hosts"), "/dev/termination-log"),
		bind(filepath.Join(dir, "cm"), "/etc/config"),
		// An emptyDir is writable.
		{Type: "bind", Source: filepath.Join(dir, "empty"), Destination: "/var/cache/app", Options: []string{"rbind"}},
	}
	return dir, ms
}

// The archive unpacks, with cpio(1), to the pod's files at their
// destinations: file bytes, directories, symlinks as symlinks, modes
// without setuid and, for a read-only volume, without write bits; nothing
// under /dev.
func TestWritePodArchiveUnpacks(t *testing.T) {
	if _, err := exec.LookPath("cpio"); err != nil {
		t.Skip("cpio not installed")
	}
	_, ms := podVolumesFixture(t)
	var buf bytes.Buffer
	if err := WritePodArchive(&buf, ms); err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	cmd := exec.Command("cpio", "-idmv", "--quiet")
	cmd.Dir, cmd.Stdin = out, &buf
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("cpio -idmv: %v\n%s", err, b)
	} else {
		t.Logf("cpio -idmv:\n%s", b)
	}
	for p, want := range map[string]string{
		"etc/hosts":                "127.0.0.1 localhost\n198.18.7.7 pod-alias\n",
		"etc/resolv.conf":          "nameserver 198.18.0.53\nsearch pod.example\n",
		"etc/config/key":           "configmap-value\n", // through the symlinks, as in the guest
		"etc/config/..data/secret": "s3cret",
	} {
		got, err := os.ReadFile(filepath.Join(out, p))
		if err != nil || string(got) != want {
			t.Errorf("%s: %q, %v; want %q", p, got, err, want)
		}
	}
	if target, err := os.Readlink(filepath.Join(out, "etc/config/key")); err != nil || target != "..data/key" {
		t.Errorf("etc/config/key: symlink to %q, %v; want ..data/key", target, err)
	}
	st, err := os.Stat(filepath.Join(out, "etc/config/..2026_12_05/secret"))
	if err != nil || st.Mode() != 0o400 {
		t.Errorf("secret's mode %v, %v; want 0400: no setuid, no write bit in a read-only volume", st.Mode(), err)
	}
	if st, err := os.Stat(filepath.Join(out, "etc/config")); err != nil || st.Mode() != os.ModeDir|0o555 {
		t.Errorf("read-only ConfigMap directory: %v, %v; want 0555", st.Mode(), err)
	}
	if st, err := os.Stat(filepath.Join(out, "var/cache/app")); err != nil || st.Mode() != os.ModeDir|0o777 {
		t.Errorf("emptyDir: %v, %v; want a writable 0777 directory", st.Mode(), err)
	}
	if _, err := os.Stat(filepath.Join(out, "dev")); !os.IsNotExist(err) {
		t.Errorf("a volume under /dev went into the archive: %v", err)
	}
}

// What is not a regular file, a directory or a symlink is refused, naming
// it, and never blocks; so is a symlink as the volume's source, and more
// than the archive's bound.
func TestWritePodArchiveRefuses(t *testing.T) {
	dir := t.TempDir()
	fifoDir := filepath.Join(dir, "withfifo")
	if err := os.Mkdir(fifoDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mkfifo(filepath.Join(fifoDir, "pipe"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mkfifo(filepath.Join(dir, "fifo"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "real"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("real", filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	big := filepath.Join(dir, "big")
	f, err := os.Create(big)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(MaxPodArchiveBytes + 1); err != nil {
		t.Fatal(err)
	}
	f.Close()
	half := filepath.Join(dir, "half")
	if err := os.WriteFile(half, nil, 0o644); err != nil || os.Truncate(half, MaxPodArchiveBytes/2+1) != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name    string
		ms      []specs.Mount
		wantErr string
	}{
		{"FIFO in a directory volume", []specs.Mount{bind(fifoDir, "/data")}, "withfifo/pipe is a FIFO"},
		{"FIFO as the volume", []specs.Mount{bind(filepath.Join(dir, "fifo"), "/etc/hosts")}, "fifo is a FIFO"},
		{"device node", []specs.Mount{bind("/dev/null", "/etc/hosts")}, "/dev/null is a character device"},
		{"symlink source", []specs.Mount{bind(filepath.Join(dir, "link"), "/etc/hosts")}, "is a symlink"},
		{"too big", []specs.Mount{bind(big, "/data/big")}, "over the 16777216 an initrd guest takes"},
		{"two files over the bound together", []specs.Mount{bind(half, "/a"), bind(half, "/b")}, "over the 16777216"},
		{"leaves the root", []specs.Mount{bind(filepath.Join(dir, "real"), "/../../x")}, "leaves the container rootfs"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			done := make(chan error, 1)
			go func() { done <- WritePodArchive(&bytes.Buffer{}, tc.ms) }()
			select {
			case err := <-done:
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want one with %q", err, tc.wantErr)
				}
				if !strings.HasPrefix(err.Error(), "volume ") {
					t.Fatalf("error %v does not name the volume", err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("WritePodArchive blocked")
			}
		})
	}
}

// An initrd guest that unpacks appended archives gets a copy of the
// image's initrd with the pod's files after it, in the bundle; the image's
// file is not touched. Another guest type is warned about by name.
func TestInitrdPodFiles(t *testing.T) {
	_, ms := podVolumesFixture(t)
	bundle := t.TempDir()
	image := filepath.Join(t.TempDir(), "initrd")
	imageBytes := []byte("070701-not-really-an-archive-but-7-bytes-odd")
	if err := os.WriteFile(image, imageBytes, 0o644); err != nil {
		t.Fatal(err)
	}
	req := Request{Bundle: bundle, Kernel: "/k", Initrd: image, Volumes: ms,
		Guest: fakeGuest{appendedInitrd: true}, Monitor: fakeMonitor{}}
	p, err := Select(req)
	if err != nil {
		t.Fatal(err)
	}
	want := filepath.Join(bundle, podInitrdDir, "initrd")
	if p.Initrd != want || len(p.Undo.Dirs) != 1 || p.Undo.Dirs[0] != filepath.Join(bundle, podInitrdDir) {
		t.Fatalf("plan: initrd %s, undo %v; want %s", p.Initrd, p.Undo, want)
	}
	if err := p.Prepare(func(Undo) error { return nil }); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(p.Initrd)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(got, imageBytes) {
		t.Fatal("the combined initrd does not start with the image's")
	}
	rest := got[len(imageBytes):]
	pad := (4 - len(imageBytes)%4) % 4
	if !bytes.Equal(rest[:pad], make([]byte, pad)) || !bytes.HasPrefix(rest[pad:], []byte("070701")) {
		t.Fatalf("after the image's initrd: %q, want %d zero bytes then a newc archive", rest[:16], pad)
	}
	var archive bytes.Buffer
	if err := WritePodArchive(&archive, ms); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(rest[pad:], archive.Bytes()) {
		t.Fatal("the appended archive is not the pod's")
	}
	if b, _ := os.ReadFile(image); !bytes.Equal(b, imageBytes) {
		t.Fatal("the image's initrd changed")
	}
	if err := p.Undo.Release(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(bundle, podInitrdDir)); !os.IsNotExist(err) {
		t.Fatalf("undo left %s: %v", podInitrdDir, err)
	}

	req.Guest = fakeGuest{}
	p, err = Select(req)
	if err != nil {
		t.Fatal(err)
	}
	if p.Initrd != image || len(p.Warnings) != 1 || !strings.Contains(p.Warnings[0], "/etc/hosts, /etc/resolv.conf, /etc/config, /var/cache/app do not reach it") {
		t.Fatalf("guest without appended archives: initrd %s, warnings %q", p.Initrd, p.Warnings)
	}
	// No volumes: the image's initrd as it is, no copy.
	req.Guest, req.Volumes = fakeGuest{appendedInitrd: true}, nil
	if p, err = Select(req); err != nil || p.Initrd != image || p.Undo.Dirs != nil {
		t.Fatalf("no volumes: %+v, %v", p, err)
	}
}

// The init's files (the guest agent and its config) go after the pod's in
// the one archive appended to the image's initrd, root's, with the
// directories above them; an initrd without volumes gets them too.
func TestInitrdInitFiles(t *testing.T) {
	bundle := t.TempDir()
	image := filepath.Join(t.TempDir(), "initrd")
	if err := os.WriteFile(image, []byte("070701-image"), 0o644); err != nil {
		t.Fatal(err)
	}
	agent := filepath.Join(t.TempDir(), "agent")
	if err := os.WriteFile(agent, []byte("AGENT-BINARY"), 0o755); err != nil {
		t.Fatal(err)
	}
	files := []InitrdFile{
		{Name: ".urunc/agent", Mode: 0o755, Source: agent},
		{Name: ".urunc/app.binpb", Mode: 0o600, Data: []byte("APP-CONFIG")},
	}
	req := Request{Bundle: bundle, Kernel: "/k", Initrd: image, InitrdFiles: files,
		Guest: fakeGuest{appendedInitrd: true}, Monitor: fakeMonitor{}}
	p, err := Select(req)
	if err != nil {
		t.Fatal(err)
	}
	if p.Root.Kind != KindInitrd || p.Initrd != filepath.Join(bundle, podInitrdDir, "initrd") {
		t.Fatalf("plan: %+v", p)
	}
	if err := p.Prepare(func(Undo) error { return nil }); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(p.Initrd)
	if err != nil {
		t.Fatal(err)
	}
	var want bytes.Buffer
	if err := writePodArchive(&want, nil, files); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got[len("070701-image"):], want.Bytes()) {
		t.Fatal("the appended archive is not the init's files")
	}
	for _, s := range []string{"00000000.urunc\x00", ".urunc/agent\x00", "AGENT-BINARY", ".urunc/app.binpb\x00", "APP-CONFIG"} {
		if !bytes.Contains(got, []byte(s)) {
			t.Errorf("archive lacks %q", s)
		}
	}
	// The mode and owner of the agent's entry: 0100755, root's.
	i := bytes.Index(got, []byte(".urunc/agent\x00"))
	hdr := got[i-110 : i]
	if string(hdr[14:22]) != "000081ED" || string(hdr[22:38]) != "0000000000000000" {
		t.Fatalf("agent's header %q: want mode 000081ED, uid and gid 0", hdr)
	}
	// A guest that does not unpack an appended archive cannot take them.
	req.Guest = fakeGuest{}
	if _, err := Select(req); err == nil || !strings.Contains(err.Error(), "its init's files cannot reach it") {
		t.Fatalf("guest without appended archives: %v", err)
	}
}

// A guest booting from a share or a disk gets an initrd of the init's
// files alone (the agent then mounts the root); its directory is in the
// plan's undo and in every undo the mode records.
func TestInitFilesForOtherRoots(t *testing.T) {
	files := []InitrdFile{{Name: ".urunc/app.binpb", Mode: 0o600, Data: []byte("APP-CONFIG")}}
	bundle := t.TempDir()
	p, err := Select(Request{Bundle: bundle, Kernel: "/k", MountRootfs: true, InitrdFiles: files,
		Guest: fakeGuest{fs: map[string]bool{"9p": true}}, Monitor: fakeMonitor{shares: map[string]bool{"9p": true}}})
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(bundle, initFilesDir)
	if p.Root.Kind != Kind9p || p.Initrd != filepath.Join(dir, "initrd") || !slices.Contains(p.Undo.Dirs, dir) {
		t.Fatalf("9p plan: %+v", p)
	}
	if err := p.Prepare(func(Undo) error { return nil }); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(p.Initrd)
	if err != nil {
		t.Fatal(err)
	}
	var want bytes.Buffer
	if err := writePodArchive(&want, nil, files); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want.Bytes()) {
		t.Fatal("the initrd is not the init's files alone")
	}

	// A block root's own undo records keep the directory.
	blockFile := filepath.Join(t.TempDir(), "snap")
	if err := os.WriteFile(blockFile, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	bundle = t.TempDir()
	p, err = Select(Request{Bundle: bundle, Kernel: "/k", MountRootfs: true, InitrdFiles: files,
		Mounts: []mount.Mount{{Type: "ext4", Source: blockFile, Options: []string{"loop"}}},
		Guest:  fakeGuest{block: true, fs: map[string]bool{"ext4": true}}, Monitor: fakeMonitor{}})
	if err != nil {
		t.Fatal(err)
	}
	dir = filepath.Join(bundle, initFilesDir)
	if p.Root.Kind != KindBlock || !slices.Contains(p.Undo.Dirs, dir) || !slices.Contains(p.Undo.Dirs, filepath.Join(bundle, "boot")) {
		t.Fatalf("block plan undo %+v", p.Undo)
	}
	// Without a root there is nothing to boot the init from.
	p, err = Select(Request{Bundle: t.TempDir(), Kernel: "/k", InitrdFiles: files, Guest: fakeGuest{}, Monitor: fakeMonitor{}})
	if err != nil || p.Initrd != "" {
		t.Fatalf("no root: %+v, %v", p, err)
	}
}
