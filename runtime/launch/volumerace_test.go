package launch

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/urunc-dev/containerd-shim-urunc-v2/internal/confined"
	"golang.org/x/sys/unix"
)

// A sibling container sharing a directory with the rootfs (an emptyDir at
// /data) swaps a volume's parent with a symlink to a host directory while
// the volumes are bound: nothing may ever be created or mounted outside
// the rootfs, whichever name the parent has at each instant.
func TestBindVolumesRaceWithSymlinkSwap(t *testing.T) {
	dir := t.TempDir()
	root, outside := filepath.Join(dir, "rootfs"), filepath.Join(dir, "host")
	srcDir, srcFile := filepath.Join(dir, "srcdir"), filepath.Join(dir, "srcfile")
	parent, evil := filepath.Join(root, "data", "x"), filepath.Join(root, "data", "evil")
	for _, d := range []string{parent, outside, srcDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(srcFile, []byte("volume"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, evil); err != nil {
		t.Fatal(err)
	}
	const iterations = 500
	inMountNamespace(t, func() {
		stop := make(chan struct{})
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if err := unix.Renameat2(unix.AT_FDCWD, parent, unix.AT_FDCWD, evil, unix.RENAME_EXCHANGE); err != nil {
					t.Errorf("exchange %s and %s: %v", parent, evil, err)
					return
				}
			}
		}()
		defer func() { close(stop); wg.Wait() }()
		bound := 0
		for i := 0; i < iterations; i++ {
			vols := []confined.Bind{
				{Source: srcDir, Target: fmt.Sprintf("/data/x/d%d/sub", i)},
				{Source: srcFile, Target: fmt.Sprintf("/data/x/f%d", i), ReadOnly: true},
			}
			if err := BindVolumes(root, vols); err == nil {
				bound++
			}
			if entries, err := os.ReadDir(outside); err != nil || len(entries) > 0 {
				t.Errorf("iteration %d: made outside the rootfs, in %s: %v %v", i, outside, names(entries), err)
				return
			}
			if mp := mountsUnder(t, outside); len(mp) > 0 {
				t.Errorf("iteration %d: bound outside the rootfs: %v", i, mp)
				return
			}
		}
		// The symlink, when met, is followed inside the rootfs.
		redirected, _ := os.ReadDir(filepath.Join(root, outside))
		t.Logf("%d of %d iterations bound both volumes, %d entries through the symlink inside the rootfs", bound, iterations, len(redirected))
	})
}

func names(entries []os.DirEntry) []string {
	var s []string
	for _, e := range entries {
		s = append(s, e.Name())
	}
	return s
}

// mountsUnder lists the mount points of this thread's mount namespace at
// or under dir.
func mountsUnder(t *testing.T, dir string) []string {
	t.Helper()
	f, err := os.Open("/proc/thread-self/mountinfo")
	if err != nil {
		t.Error(err)
		return []string{err.Error()}
	}
	defer f.Close()
	var found []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 4 && (fields[4] == dir || strings.HasPrefix(fields[4], dir+"/")) {
			found = append(found, fields[4])
		}
	}
	return found
}

// Images have symlinked parents of volume targets (/var/run -> /run) and
// symlinked files whose target is missing (/etc/resolv.conf ->
// ../run/systemd/resolve/stub-resolv.conf): both are followed inside the
// rootfs, the missing parts made there.
func TestBindVolumesThroughImageSymlinks(t *testing.T) {
	dir := t.TempDir()
	root, srcDir, srcFile := filepath.Join(dir, "rootfs"), filepath.Join(dir, "srcdir"), filepath.Join(dir, "srcfile")
	for _, d := range []string{filepath.Join(root, "var"), filepath.Join(root, "etc"), filepath.Join(root, "run"), srcDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(srcDir, "marker"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(srcFile, []byte("nameserver 198.18.0.1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("../run", filepath.Join(root, "var", "run")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("../run/systemd/resolve/stub-resolv.conf", filepath.Join(root, "etc", "resolv.conf")); err != nil {
		t.Fatal(err)
	}
	inMountNamespace(t, func() {
		vols := []confined.Bind{
			{Source: srcDir, Target: "/var/run/secrets/token"},
			{Source: srcFile, Target: "/etc/resolv.conf", ReadOnly: true},
		}
		if err := BindVolumes(root, vols); err != nil {
			t.Errorf("BindVolumes: %v", err)
			return
		}
		if _, err := os.Stat(filepath.Join(root, "run", "secrets", "token", "marker")); err != nil {
			t.Errorf("the directory volume is not at /run/secrets/token: %v", err)
		}
		got, err := os.ReadFile(filepath.Join(root, "run", "systemd", "resolve", "stub-resolv.conf"))
		if err != nil || string(got) != "nameserver 198.18.0.1\n" {
			t.Errorf("the file volume is not at the symlink's target: %q, %v", got, err)
		}
		if err := os.WriteFile(filepath.Join(root, "etc", "resolv.conf"), nil, 0o644); !errors.Is(err, unix.EROFS) {
			t.Errorf("write to the read-only file volume: %v, want EROFS", err)
		}
	})
}

// The guest's disk image named by a path in the rootfs is bound into the
// monitor's root after the volumes: a symlink planted at that path in a
// shared volume is followed inside the rootfs, never to the host file.
func TestConfinedRootSourceThroughVolume(t *testing.T) {
	dir := t.TempDir()
	root, shared, conf, conf2 := filepath.Join(dir, "rootfs"), filepath.Join(dir, "emptydir"), filepath.Join(dir, "monitor"), filepath.Join(dir, "monitor2")
	secret := filepath.Join(dir, "host-secret")
	for _, d := range []string{filepath.Join(root, "boot"), shared, conf, conf2} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(root, "boot", "kernel"), []byte("kernel"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(secret, []byte("host"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(secret, filepath.Join(shared, "disk.img")); err != nil {
		t.Fatal(err)
	}
	inMountNamespace(t, func() {
		if err := BindVolumes(root, []confined.Bind{{Source: shared, Target: "/data"}}); err != nil {
			t.Errorf("BindVolumes: %v", err)
			return
		}
		kernel := []confined.Bind{{Source: filepath.Join(root, "boot", "kernel"), Target: "/guest/kernel", ReadOnly: true}}
		disk := confined.Bind{Source: filepath.Join(root, "data", "disk.img"), Target: "/guest/disk"}
		err := BuildConfinedRoot(conf, append(kernel, disk), root)
		if got, rerr := os.ReadFile(filepath.Join(conf, "guest", "disk")); rerr == nil && string(got) == "host" {
			t.Errorf("the host file was bound as the guest's disk")
		} else {
			t.Logf("the guest's disk: %q %v", got, rerr)
		}
		if err == nil {
			t.Errorf("a disk image through a symlink out of the rootfs was bound")
		}
		if err := BuildConfinedRoot(conf2, kernel, root); err != nil {
			t.Errorf("BuildConfinedRoot of the kernel: %v", err)
		} else if got, _ := os.ReadFile(filepath.Join(conf2, "guest", "kernel")); string(got) != "kernel" {
			t.Errorf("guest kernel bound: %q", got)
		}
	})
}
