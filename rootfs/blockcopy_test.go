package rootfs

import (
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/urunc-dev/containerd-shim-urunc-v2/internal/testhost"
)

// treeOf describes every entry under dir: path, kind and mode, a regular
// file's bytes, a symlink's target.
func treeOf(t *testing.T, dir string) string {
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
		fmt.Fprintf(&b, "%s %v", strings.TrimPrefix(p, dir), info.Mode())
		switch {
		case info.Mode().IsRegular():
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			fmt.Fprintf(&b, " %q", data)
		case info.Mode()&os.ModeSymlink != 0:
			target, _ := os.Readlink(p)
			fmt.Fprintf(&b, " -> %s", target)
		}
		b.WriteString("\n")
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// blockCopyFixture is a block guest's mounted root beside a host directory
// outside it that no copy may touch, and the kubelet's volumes: a
// ConfigMap (keys are symlinks into ..data, which links to a timestamped
// directory), a Secret of mode 0400 and an /etc/hosts file.
type blockCopyFixture struct {
	base, root, outside, volumes string
	configMap, secret, hosts     string
}

func newBlockCopyFixture(t *testing.T) blockCopyFixture {
	t.Helper()
	base := t.TempDir()
	fx := blockCopyFixture{base: base, root: filepath.Join(base, "root"), outside: filepath.Join(base, "outside"),
		volumes: filepath.Join(base, "volumes")}
	fx.configMap, fx.secret, fx.hosts = filepath.Join(fx.volumes, "cm"), filepath.Join(fx.volumes, "secret"), filepath.Join(fx.volumes, "hosts")
	for _, d := range []string{filepath.Join(fx.root, "etc"), fx.outside} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	write := func(p, data string, mode os.FileMode) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(data), mode); err != nil || os.Chmod(p, mode) != nil {
			t.Fatal(err)
		}
	}
	write(filepath.Join(fx.outside, "victim"), "host file, outside the rootfs\n", 0o644)
	write(filepath.Join(fx.configMap, "..2026_12_06", "greeting"), "configmap-says-hello\n", 0o644)
	write(filepath.Join(fx.secret, "..2026_12_06", "password"), "s3cret", 0o400)
	for _, d := range []string{fx.configMap, fx.secret} {
		if err := os.Symlink("..2026_12_06", filepath.Join(d, "..data")); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("..data/greeting", filepath.Join(fx.configMap, "greeting")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("..data/password", filepath.Join(fx.secret, "password")); err != nil {
		t.Fatal(err)
	}
	write(fx.hosts, "127.0.0.1 localhost\n198.18.7.7 pod-alias\n", 0o644)
	return fx
}

func (fx blockCopyFixture) mounts() []specs.Mount {
	return []specs.Mount{
		{Type: "bind", Source: fx.hosts, Destination: "/etc/hosts", Options: []string{"rbind", "rw"}},
		{Type: "bind", Source: fx.configMap, Destination: "/etc/config", Options: []string{"rbind", "ro"}},
		{Type: "bind", Source: fx.secret, Destination: "/var/run/secrets/app", Options: []string{"rbind", "ro"}},
	}
}

// copyPodVolumesPromptly fails the test if the copy blocks (a FIFO
// opened for writing would).
func copyPodVolumesPromptly(t *testing.T, root string, ms []specs.Mount) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- copyPodVolumes(root, ms) }()
	select {
	case err := <-done:
		return err
	case <-time.After(20 * time.Second):
		t.Fatal("copyPodVolumes blocked")
		return nil
	}
}

// The pod's volumes, files and directories, are copied into a block
// guest's root as the kubelet left them: symlinks as symlinks (resolved in
// the guest's root), read-only volumes without write bits, whatever the
// image had at a destination replaced without being opened or followed;
// what is refused is named, and nothing outside the root ever changes.
func TestCopyPodVolumesIntoBlockRoot(t *testing.T) {
	type plantFunc func(t *testing.T, fx blockCopyFixture) (check func(t *testing.T))
	symlinkAt := func(target, at string) plantFunc {
		return func(t *testing.T, fx blockCopyFixture) func(*testing.T) {
			target = strings.ReplaceAll(target, "BASE", fx.base)
			p := filepath.Join(fx.root, at)
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.RemoveAll(p); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(target, p); err != nil {
				t.Fatal(err)
			}
			return nil
		}
	}
	// loopNode plants, at at, a block device node of a loop device over a
	// file of known bytes, and checks afterwards that they are unchanged.
	loopNode := func(at string) plantFunc {
		return func(t *testing.T, fx blockCopyFixture) func(*testing.T) {
			testhost.NeedRoot(t, "mknod")
			file := filepath.Join(t.TempDir(), "disk")
			data := bytes.Repeat([]byte("the host's disk, never to be written by a pod file\n"), 2048)
			if err := os.WriteFile(file, data, 0o600); err != nil {
				t.Fatal(err)
			}
			out, err := exec.Command("losetup", "--find", "--show", file).CombinedOutput()
			if err != nil {
				t.Skipf("no loop device: %v: %s", err, out)
			}
			dev := strings.TrimSpace(string(out))
			t.Cleanup(func() { _ = exec.Command("losetup", "-d", dev).Run() })
			var st unix.Stat_t
			if err := unix.Stat(dev, &st); err != nil {
				t.Fatal(err)
			}
			p := filepath.Join(fx.root, at)
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := unix.Mknod(p, unix.S_IFBLK|0o644, int(st.Rdev)); err != nil {
				t.Fatal(err)
			}
			return func(t *testing.T) {
				for _, p := range []string{dev, file} {
					if got, err := os.ReadFile(p); err != nil || !bytes.Equal(got, data) {
						t.Errorf("%s changed (%v): it begins %q", p, err, got[:min(len(got), 64)])
					}
				}
			}
		}
	}
	fifoAt := func(at string) plantFunc {
		return func(t *testing.T, fx blockCopyFixture) func(*testing.T) {
			p := filepath.Join(fx.root, at)
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := unix.Mkfifo(p, 0o644); err != nil {
				t.Fatal(err)
			}
			return nil
		}
	}
	// manyFiles makes a volume directory of n files of size bytes each.
	manyFiles := func(t *testing.T, fx blockCopyFixture, n int, size int64) string {
		dir := filepath.Join(fx.volumes, "many")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for i := range n {
			f, err := os.Create(filepath.Join(dir, strconv.Itoa(i)))
			if err != nil {
				t.Fatal(err)
			}
			if err := f.Truncate(size); err != nil {
				t.Fatal(err)
			}
			f.Close()
		}
		return dir
	}
	roDir := func(src, dst string) specs.Mount {
		return specs.Mount{Type: "bind", Source: src, Destination: dst, Options: []string{"rbind", "ro"}}
	}
	cases := []struct {
		name  string
		plant plantFunc
		// extra volumes after the fixture's
		extra   func(t *testing.T, fx blockCopyFixture) []specs.Mount
		wantErr string
		// lands maps paths in the root to what must be there after a
		// successful copy: "dir MODE", "file MODE CONTENT" or "-> TARGET".
		lands map[string]string
	}{
		{name: "into an image without them"},
		{name: "image directory at the destination: merged, its mode the volume's",
			plant: func(t *testing.T, fx blockCopyFixture) func(*testing.T) {
				p := filepath.Join(fx.root, "etc/config/from-image")
				if err := os.MkdirAll(filepath.Dir(p), 0o777); err != nil || os.WriteFile(p, []byte("image"), 0o644) != nil {
					t.Fatal(err)
				}
				return nil
			},
			lands: map[string]string{"etc/config/from-image": "file -rw-r--r-- image"}},
		{name: "absolute symlink out at the destination", plant: symlinkAt("BASE/outside", "etc/config")},
		{name: "relative symlink out at the destination", plant: symlinkAt("../../outside", "etc/config")},
		{name: "symlink out at a file of the volume", plant: symlinkAt("BASE/outside/victim", "etc/config/..2026_12_06/greeting")},
		{name: "symlink out at a key's name", plant: symlinkAt("BASE/outside/victim", "etc/config/greeting")},
		{name: "absolute symlink out at a parent", plant: symlinkAt("BASE/outside", "var/run"), wantErr: "directory /var/run"},
		{name: "relative symlink out at a parent", plant: symlinkAt("../outside", "var"), wantErr: "directory /var"},
		{name: "symlink at a parent, inside the root", plant: func(t *testing.T, fx blockCopyFixture) func(*testing.T) {
			if err := os.MkdirAll(filepath.Join(fx.root, "real/run"), 0o755); err != nil {
				t.Fatal(err)
			}
			return symlinkAt("/real", "var")(t, fx)
		}, lands: map[string]string{"real/run/secrets/app/..2026_12_06/password": "file -r-------- s3cret"}},
		{name: "block device node at the destination", plant: loopNode("etc/config")},
		{name: "block device node at a file of the volume", plant: loopNode("etc/config/..2026_12_06/greeting")},
		{name: "block device node at the hosts file", plant: loopNode("etc/hosts")},
		{name: "FIFO at the hosts file", plant: fifoAt("etc/hosts")},
		{name: "FIFO at a key's name", plant: fifoAt("etc/config/greeting")},
		{name: "image directory where the volume has a file", plant: func(t *testing.T, fx blockCopyFixture) func(*testing.T) {
			if err := os.MkdirAll(filepath.Join(fx.root, "etc/hosts"), 0o755); err != nil {
				t.Fatal(err)
			}
			return nil
		}, wantErr: "/etc/hosts in the container rootfs is a directory"},
		{name: "too many entries", wantErr: "more than 4096 files in the pod's volumes, the most a copy into a block guest's root takes",
			extra: func(t *testing.T, fx blockCopyFixture) []specs.Mount {
				return []specs.Mount{roDir(manyFiles(t, fx, maxPodArchiveEntries, 0), "/data")}
			}},
		{name: "too large", wantErr: fmt.Sprintf("would take the pod's files over the %d a copy into a block guest's root takes", MaxPodArchiveBytes),
			extra: func(t *testing.T, fx blockCopyFixture) []specs.Mount {
				return []specs.Mount{roDir(manyFiles(t, fx, 3, MaxPodArchiveBytes/3+1), "/data")}
			}},
		{name: "too deep", wantErr: "directories nested deeper than 32",
			extra: func(t *testing.T, fx blockCopyFixture) []specs.Mount {
				deep := filepath.Join(fx.volumes, "deep")
				if err := os.MkdirAll(filepath.Join(deep, strings.Repeat("d/", maxPodArchiveDepth+1)), 0o755); err != nil {
					t.Fatal(err)
				}
				return []specs.Mount{roDir(deep, "/data")}
			}},
		{name: "a FIFO in a volume", wantErr: "is a FIFO",
			extra: func(t *testing.T, fx blockCopyFixture) []specs.Mount {
				dir := filepath.Join(fx.volumes, "withfifo")
				if err := os.MkdirAll(dir, 0o755); err != nil || unix.Mkfifo(filepath.Join(dir, "pipe"), 0o644) != nil {
					t.Fatal(err)
				}
				return []specs.Mount{roDir(dir, "/data")}
			}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			fx := newBlockCopyFixture(t)
			var check func(*testing.T)
			if tc.plant != nil {
				check = tc.plant(t, fx)
			}
			ms := fx.mounts()
			if tc.extra != nil {
				ms = append(ms, tc.extra(t, fx)...)
			}
			outsideBefore, volumesBefore := treeOf(t, fx.outside), treeOf(t, fx.volumes)
			err := copyPodVolumesPromptly(t, fx.root, ms)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !strings.HasPrefix(err.Error(), "volume ") {
					t.Fatalf("err = %v, want one naming the volume and saying %q", err, tc.wantErr)
				}
			} else {
				if err != nil {
					t.Fatal(err)
				}
				lands := map[string]string{
					"etc/hosts":                                 "file -rw-r--r-- 127.0.0.1 localhost\n198.18.7.7 pod-alias\n",
					"etc/config":                                "dir dr-xr-xr-x",
					"etc/config/..data":                         "-> ..2026_12_06",
					"etc/config/greeting":                       "-> ..data/greeting",
					"etc/config/..2026_12_06/greeting":          "file -r--r--r-- configmap-says-hello\n",
					"var/run/secrets/app/..2026_12_06/password": "file -r-------- s3cret",
					"var/run/secrets/app/password":              "-> ..data/password",
				}
				if tc.lands != nil {
					for k, v := range tc.lands {
						lands[k] = v
					}
					if strings.HasPrefix(tc.name, "symlink at a parent") {
						delete(lands, "var/run/secrets/app/..2026_12_06/password")
						delete(lands, "var/run/secrets/app/password")
					}
				}
				for p, want := range lands {
					full := filepath.Join(fx.root, p)
					st, err := os.Lstat(full)
					if err != nil {
						t.Errorf("%s: %v", p, err)
						continue
					}
					var got string
					switch {
					case st.IsDir():
						got = fmt.Sprintf("dir %v", st.Mode())
					case st.Mode()&os.ModeSymlink != 0:
						target, _ := os.Readlink(full)
						got = "-> " + target
					case st.Mode().IsRegular():
						data, _ := os.ReadFile(full)
						got = fmt.Sprintf("file %v %s", st.Mode(), data)
					default:
						got = fmt.Sprintf("%v", st.Mode())
					}
					if got != want {
						t.Errorf("%s: %q, want %q", p, got, want)
					}
				}
				// Read through the guest's eyes: the key resolves inside
				// the root to the ConfigMap's value.
				if data, err := os.ReadFile(filepath.Join(fx.root, "etc/config/greeting")); err != nil || string(data) != "configmap-says-hello\n" {
					t.Errorf("etc/config/greeting reads %q, %v", data, err)
				}
			}
			if after := treeOf(t, fx.outside); after != outsideBefore {
				t.Errorf("outside the rootfs changed:\nbefore:\n%s\nafter:\n%s", outsideBefore, after)
			}
			if after := treeOf(t, fx.volumes); after != volumesBefore {
				t.Errorf("the kubelet's volumes changed:\nbefore:\n%s\nafter:\n%s", volumesBefore, after)
			}
			if left, _ := filepath.Glob(filepath.Join(fx.root, "*", ".urunc-tmp-*")); len(left) > 0 {
				t.Errorf("left behind: %v", left)
			}
			if check != nil {
				check(t)
			}
		})
	}
}

// A block guest's directory volume that is no block device is copied when
// its root is the container's own snapshot; with the block annotation (the
// image's disk, never written by the shim) it is refused, naming it.
func TestBlockVolumesCopyDirectories(t *testing.T) {
	fx := newBlockCopyFixture(t)
	guest := fakeGuest{block: true, fs: map[string]bool{"ext4": true}}
	req := Request{Bundle: t.TempDir(), Kernel: "/k", Volumes: fx.mounts(), Guest: guest, Monitor: fakeMonitor{}}
	set, err := blockVolumes(req, true)
	if err != nil {
		t.Fatal(err)
	}
	if len(set.copies) != 3 || len(set.disks) != 0 || len(set.take) != 0 {
		t.Fatalf("mounted rootfs: %+v, want the three volumes copied", set)
	}
	req.Volumes = fx.mounts()[1:2]
	_, err = blockVolumes(req, false)
	if want := "volume /etc/config (from " + fx.configMap + "): guest g boots from a disk"; err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("block annotation: err = %v, want %q", err, want)
	}
}
