package main

import (
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/urunc-dev/containerd-shim-urunc-v2/inventory"
	"github.com/urunc-dev/containerd-shim-urunc-v2/runtime/lifecycle"
)

func TestRowOf(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	running := lifecycle.Summary{ID: "a", Namespace: "ns", GuestType: "linux", Monitor: "qemu", Pid: 42, Alive: true, Started: now.Add(-90 * time.Second)}
	for _, tc := range []struct {
		name  string
		entry inventory.Entry
		want  psRow
	}{
		{"running, shim answers", inventory.Entry{Bundle: "/s/ns/a", Summary: running, Shim: inventory.ShimAnswers},
			psRow{Namespace: "ns", ID: "a", Kind: "unikernel", Guest: "linux", Monitor: "qemu", Pid: 42, State: "running", Shim: "answers", Uptime: "1m30s", Bundle: "/s/ns/a"}},
		{"running, shim hung and stopped: an orphan", inventory.Entry{Bundle: "/s/ns/a", Summary: running, Shim: inventory.ShimHung, ShimProcess: inventory.ShimProcessStopped},
			psRow{Namespace: "ns", ID: "a", Kind: "unikernel", Guest: "linux", Monitor: "qemu", Pid: 42, State: "running", Shim: "hung", Orphan: true, Uptime: "1m30s", Bundle: "/s/ns/a"}},
		{"running, shim hung but running: no orphan", inventory.Entry{Bundle: "/s/ns/a", Summary: running, Shim: inventory.ShimHung, ShimProcess: inventory.ShimProcessRunning},
			psRow{Namespace: "ns", ID: "a", Kind: "unikernel", Guest: "linux", Monitor: "qemu", Pid: 42, State: "running", Shim: "hung", Uptime: "1m30s", Bundle: "/s/ns/a"}},
		{"exited, shim gone", inventory.Entry{Bundle: "/s/ns/b", Summary: lifecycle.Summary{ID: "b", Namespace: "ns", Plain: true, Pid: 7, Exit: &lifecycle.ExitStatus{Status: 3}}, Shim: inventory.ShimGone},
			psRow{Namespace: "ns", ID: "b", Kind: "plain", Guest: "(runc)", Pid: 7, State: "exited 3", Shim: "gone", Orphan: true, Bundle: "/s/ns/b"}},
		{"unreadable state: named by its bundle", inventory.Entry{Bundle: "/s/k8s.io/c/", Err: errors.New("parse state"), Shim: inventory.ShimUnknown},
			psRow{Namespace: "k8s.io", ID: "c", Kind: "unikernel", State: "unknown", Shim: "unknown", Error: "parse state", Bundle: "/s/k8s.io/c/"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := rowOf(tc.entry, now); got != tc.want {
				t.Errorf("rowOf:\n%+v\nwant\n%+v", got, tc.want)
			}
		})
	}
}

func TestPsNamesWhatIsMissing(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "config.toml")
	var stdout, stderr bytes.Buffer
	if code := psMain(context.Background(), []string{"-containerd-config", missing}, &stdout, &stderr); code != 1 ||
		!strings.Contains(stderr.String(), missing) || !strings.Contains(stderr.String(), "no such file") {
		t.Errorf("exit %d, stderr %q", code, stderr.String())
	}
	stdout.Reset()
	stderr.Reset()
	dir := filepath.Join(t.TempDir(), "tasks")
	if code := psMain(context.Background(), []string{"-state-dir", dir}, &stdout, &stderr); code != 1 || !strings.Contains(stderr.String(), dir) {
		t.Errorf("exit %d, stderr %q", code, stderr.String())
	}
}
