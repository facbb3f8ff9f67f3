//go:build integration

package integration

import (
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/urunc-dev/containerd-shim-urunc-v2/integration/testimage"
)

// TestExecLatencyFigures prints the latency of an exec (`ctr task exec`
// of /bin/busybox true, wall clock, median of 20) into a running Linux
// guest through its agent, against the same into a runc container under
// the same shim, alternating, with the ratio: make bench runs it
// (URUNC_BENCH_AGENT=1).
func TestExecLatencyFigures(t *testing.T) {
	if os.Getenv("URUNC_BENCH_AGENT") == "" {
		t.Skip("a measurement: URUNC_BENCH_AGENT=1 (make bench)")
	}
	importAgentImage(t)
	withAgent(t)
	r := startAgentGuest(t, agentImage, []string{"/init", "sleep"})
	waitFor(t, 3*time.Minute, "the app's ready line", func() bool { return strings.Contains(r.console(), "URUNC_GUEST_READY") })
	plain := newID(t)
	ctr(t, "run", "-d", "--runtime", runtimeName, testimage.PlainImageName, plain, "/bin/busybox", "sleep", "1000")
	defer killAndRemove(t, plain)

	const rounds = 20
	var guest, runc []time.Duration
	for i := 0; i < rounds; i++ {
		for _, target := range []string{r.id, plain} {
			start := time.Now()
			if out, err := ctrRaw("task", "exec", "--exec-id", fmt.Sprintf("bench%d", i), target, "/bin/busybox", "true"); err != nil {
				t.Fatalf("exec into %s: %v\n%s", target, err, out)
			}
			d := time.Since(start)
			if target == r.id {
				guest = append(guest, d)
			} else {
				runc = append(runc, d)
			}
		}
	}
	mg, mr := median(guest), median(runc)
	t.Logf("ctr task exec of true, median of %d: into the guest (agent, TCG) %s, into a runc container %s, ratio %.2f",
		rounds, mg.Round(100*time.Microsecond), mr.Round(100*time.Microsecond), float64(mg)/float64(mr))
	_, ctx := newClient(t)
	if err := r.task.Kill(ctx, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	r.exit()
}
