package rootfs

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/urunc-dev/containerd-shim-urunc-v2/internal/testhost"
	"github.com/urunc-dev/containerd-shim-urunc-v2/rootfs/inroot"
)

// A FIFO or a device node in a pod's volume (an emptyDir a sidecar with
// CAP_MKNOD wrote into, a hostPath) or where the image names its kernel is
// refused without ever being opened: opening a device node as the shim's
// root runs its driver on the host, outside any device cgroup.
func TestSpecialNodesNeverOpened(t *testing.T) {
	t.Run("in a directory volume", func(t *testing.T) {
		dir := t.TempDir()
		vol := filepath.Join(dir, "vol")
		if err := os.Mkdir(vol, 0o755); err != nil {
			t.Fatal(err)
		}
		_, _, check := testhost.SpecialNodes(t, vol)
		for _, sink := range []string{"initrd", "block"} {
			var err error
			ms := []specs.Mount{bind(vol, "/data")}
			if sink == "initrd" {
				err = WritePodArchive(&bytes.Buffer{}, ms)
			} else {
				root := filepath.Join(dir, "root")
				if err := os.MkdirAll(root, 0o755); err != nil {
					t.Fatal(err)
				}
				err = copyPodVolumes(root, ms)
			}
			if err == nil || !strings.Contains(err.Error(), "is a character device") {
				t.Fatalf("%s: error %v, want the device named", sink, err)
			}
			check(t)
		}
	})
	t.Run("as the volume", func(t *testing.T) {
		fifo, dev, check := testhost.SpecialNodes(t, t.TempDir())
		for _, src := range []string{fifo, dev} {
			if err := WritePodArchive(&bytes.Buffer{}, []specs.Mount{bind(src, "/etc/hosts")}); err == nil {
				t.Fatalf("%s taken as a volume", src)
			}
			if _, _, err := inroot.OpenRegularSource(src, 0); err == nil {
				t.Fatalf("%s taken as a regular source", src)
			}
		}
		check(t)
	})
	t.Run("the image's kernel", func(t *testing.T) {
		root := t.TempDir()
		_, _, check := testhost.SpecialNodes(t, root)
		for _, p := range []string{"/fifo", "/dev"} {
			if _, err := RequireFile(root, p, "guest kernel"); err == nil || !strings.Contains(err.Error(), "not a regular file") {
				t.Fatalf("RequireFile(%s): %v, want it refused as not a regular file", p, err)
			}
		}
		check(t)
	})
}
