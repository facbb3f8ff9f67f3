//go:build integration

package integration

import (
	"strings"
	"testing"
	"time"
)

// The guest's tap may be opened by the monitor's user and group only:
// with the spec's user 1000:2000 the tap's owner is 1000 and its group
// 2000, where the group used to be the uid taken for a gid (1000), which
// is another principal's group.
func TestTapBelongsToTheMonitorsUserAndGroup(t *testing.T) {
	n := newTestNet(t, 27)
	id := newID(t)
	log := runDetachedWith(t, id, append(n.withNS(), "--user", "1000:2000"), "httpd")
	waitForOutput(t, log, "URUNC_GUEST_HTTPD "+n.guestIP, 90*time.Second)
	got := mustRun(t, "ip", "netns", "exec", n.container, "sh", "-c", "cat /sys/class/net/urtap*/owner /sys/class/net/urtap*/group")
	if f := strings.Fields(got); len(f) != 2 || f[0] != "1000" || f[1] != "2000" {
		t.Fatalf("tap owner and group %q, want 1000 2000", got)
	}
	ctr(t, "task", "kill", "-s", "SIGKILL", id)
	waitFor(t, 10*time.Second, "stop", func() bool { return taskStatus(t, id) == "STOPPED" })
	ctr(t, "task", "rm", id)
	ctr(t, "container", "rm", id)
	n.assertNamespaceClean(t)
}
