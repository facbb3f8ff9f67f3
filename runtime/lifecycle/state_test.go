package lifecycle

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/urunc-dev/containerd-shim-urunc-v2/rootfs"
	"github.com/urunc-dev/containerd-shim-urunc-v2/rootfs/hostmount"
)

func TestStateRoundTripAndVersion(t *testing.T) {
	dir := t.TempDir()
	if st, err := ReadState(dir); err != nil || st != nil {
		t.Fatalf("empty bundle: %v %v", st, err)
	}
	in := &PersistedState{ID: "c1", Pid: 42, PidStartTime: 7, Cgroup: "/default/c1",
		Taps: []Tap{{Name: "tap0", Netns: "/var/run/netns/x", Link: "eth0"}},
		Exit: &ExitStatus{Pid: 42, Status: 137, At: time.Unix(100, 0).UTC()},
		RootfsUndo: rootfs.Undo{HostMounts: []hostmount.Mount{{Device: "/dev/loop3", Major: 7, Minor: 3, Target: "/pods/a/vol",
			FSType: "ext4", Options: "ro,nosuid", SuperOptions: "ro,errors=continue", Propagation: "shared"}}}}
	if err := WriteState(dir, in); err != nil {
		t.Fatal(err)
	}
	out, err := ReadState(dir)
	if err != nil {
		t.Fatal(err)
	}
	if out.ID != "c1" || out.Pid != 42 || out.Exit.Status != 137 || out.Taps[0].Name != "tap0" || out.Version != stateVersion ||
		len(out.RootfsUndo.HostMounts) != 1 || out.RootfsUndo.HostMounts[0] != in.RootfsUndo.HostMounts[0] {
		t.Fatalf("round trip: %+v", out)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Fatalf("temp files left next to the state: %v", entries)
	}
	if err := os.WriteFile(StatePath(dir), []byte(`{"version":99}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadState(dir); err == nil || !strings.Contains(err.Error(), "version 99") {
		t.Fatalf("err = %v, want a version error", err)
	}
}
