package plain

import "testing"

// runc's kill of a container whose process just exited is the NotFound
// containerd expects, not a failure: a CRI StopPodSandbox failed on it
// (found by critest's HostNetwork spec).
func TestProcessGone(t *testing.T) {
	for msg, want := range map[string]bool{
		"runc did not terminate successfully: exit status 1: container not running": true,
		"os: process already finished":                                              true,
		"kill: no such process":                                                     true,
		// runc kill --all freezes a cgroup v1 container first; an init that
		// has just exited makes it refuse (critest again, a later run).
		"runc did not terminate successfully: exit status 1: invalid state transition from stopped to paused": true,
		"runc did not terminate successfully: exit status 1: permission denied":                               false,
	} {
		if got := processGone(msg); got != want {
			t.Errorf("processGone(%q) = %v, want %v", msg, got, want)
		}
	}
}
