package unikernel

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/urunc-dev/containerd-shim-urunc-v2/rootfs"
	"github.com/urunc-dev/containerd-shim-urunc-v2/rootfs/hostmount"
	"github.com/urunc-dev/containerd-shim-urunc-v2/runtime/lifecycle"
)

// A host mount a guest took is not mounted back while the recorded
// monitor still runs: the guest may still write the device raw.
func TestReleaseKeepsHostMountsWhileMonitorRuns(t *testing.T) {
	start, err := lifecycle.ProcessStartTime(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	target := filepath.Join(t.TempDir(), "vol")
	st := &lifecycle.PersistedState{Pid: os.Getpid(), PidStartTime: start,
		RootfsUndo: rootfs.Undo{HostMounts: []hostmount.Mount{{Device: "/dev/nonexistent-disk", Major: 7, Minor: 99, Target: target, FSType: "ext4"}}}}
	errs := releaseUnikernel(nil, st)
	var msgs []string
	for _, e := range errs {
		if e != nil {
			msgs = append(msgs, e.Error())
		}
	}
	if want := "still runs: its disks are not mounted back"; len(msgs) != 1 || !strings.Contains(msgs[0], want) {
		t.Fatalf("errors %q, want one saying %q", msgs, want)
	}
	// Once it has exited, the undo is tried (and here fails: no such device).
	st.Exit = &lifecycle.ExitStatus{Pid: st.Pid}
	errs = releaseUnikernel(nil, st)
	msgs = msgs[:0]
	for _, e := range errs {
		if e != nil {
			msgs = append(msgs, e.Error())
		}
	}
	if want := "the device is no longer 7:99"; len(msgs) != 1 || !strings.Contains(msgs[0], want) {
		t.Fatalf("errors %q, want one saying %q", msgs, want)
	}
}
