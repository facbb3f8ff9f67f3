//go:build integration

package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/oci"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// testNet is a pair of network namespaces the test makes itself: the
// container's, whose eth0 is one end of a veth, and a client's, holding the
// other end. Addresses come from 198.18.0.0/15 and nothing is routed off
// the machine.
type testNet struct {
	container, client string // namespace names under /var/run/netns
	guestIP, clientIP string
}

func mustRun(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func newTestNet(t *testing.T, subnet int) *testNet {
	t.Helper()
	n := &testNet{
		container: fmt.Sprintf("urunc-it-c%d", subnet),
		client:    fmt.Sprintf("urunc-it-cl%d", subnet),
		guestIP:   fmt.Sprintf("198.18.%d.2", subnet),
		clientIP:  fmt.Sprintf("198.18.%d.1", subnet),
	}
	for _, ns := range []string{n.container, n.client} {
		_ = exec.Command("ip", "netns", "del", ns).Run()
		mustRun(t, "ip", "netns", "add", ns)
	}
	t.Cleanup(func() {
		for _, ns := range []string{n.container, n.client} {
			_ = exec.Command("ip", "netns", "del", ns).Run()
		}
	})
	veth := fmt.Sprintf("urv%d", subnet)
	mustRun(t, "ip", "link", "add", veth, "type", "veth", "peer", "name", veth+"p")
	mustRun(t, "ip", "link", "set", veth, "netns", n.container)
	mustRun(t, "ip", "link", "set", veth+"p", "netns", n.client)
	in := func(ns string, args ...string) {
		mustRun(t, "ip", append([]string{"netns", "exec", ns, "ip"}, args...)...)
	}
	in(n.container, "link", "set", veth, "name", "eth0")
	in(n.container, "addr", "add", n.guestIP+"/24", "dev", "eth0")
	in(n.container, "link", "set", "eth0", "up")
	in(n.container, "link", "set", "lo", "up")
	in(n.container, "route", "add", "default", "via", n.clientIP)
	in(n.client, "addr", "add", n.clientIP+"/24", "dev", veth+"p")
	in(n.client, "link", "set", veth+"p", "up")
	in(n.client, "link", "set", "lo", "up")
	return n
}

func (n *testNet) path() string { return "/var/run/netns/" + n.container }

// withNS are the ctr run flags that put a container in the namespace.
func (n *testNet) withNS() []string { return []string{"--with-ns", "network:" + n.path()} }

// inClient runs a command in the client namespace.
func (n *testNet) inClient(args ...string) (string, error) {
	out, err := exec.Command("ip", append([]string{"netns", "exec", n.client}, args...)...).CombinedOutput()
	return string(out), err
}

// leftovers describes what of a guest is left in the container namespace:
// a tap, an ingress qdisc or a tc filter on eth0, or eth0's lost address.
func (n *testNet) leftovers(t *testing.T) string {
	t.Helper()
	var found []string
	if links := mustRun(t, "ip", "netns", "exec", n.container, "ip", "-o", "link"); strings.Contains(links, "urtap") {
		found = append(found, "tap: "+links)
	}
	if q := mustRun(t, "ip", "netns", "exec", n.container, "tc", "qdisc", "show", "dev", "eth0"); strings.Contains(q, "ingress") {
		found = append(found, "ingress qdisc on eth0: "+q)
	}
	if f := mustRun(t, "ip", "netns", "exec", n.container, "tc", "filter", "show", "dev", "eth0", "ingress"); strings.TrimSpace(f) != "" {
		found = append(found, "tc filters on eth0: "+f)
	}
	if a := mustRun(t, "ip", "netns", "exec", n.container, "ip", "-4", "-o", "addr", "show", "dev", "eth0"); !strings.Contains(a, n.guestIP) {
		found = append(found, "eth0 lost its address: "+a)
	}
	return strings.Join(found, "\n")
}

// assertNamespaceClean fails if the namespace still holds anything of a
// guest a few seconds after its container is gone (the dead-shim cleanup
// runs asynchronously in containerd).
func (n *testNet) assertNamespaceClean(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		left := n.leftovers(t)
		if left == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("left in the container namespace:\n%s", left)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// httpGet fetches the guest's page from the client namespace.
func (n *testNet) httpGet() (string, error) {
	return n.inClient("wget", "-q", "-T", "5", "-O", "-", "http://"+n.guestIP+"/")
}

// A guest in a network namespace with a veth: the client reaches its HTTP
// server and it answers ping; afterwards nothing is left in the namespace.
func TestGuestNetworkHTTPAndPing(t *testing.T) {
	n := newTestNet(t, 10)
	id := newID(t)
	log := runDetachedWith(t, id, n.withNS(), "httpd")
	waitForOutput(t, log, "URUNC_GUEST_HTTPD "+n.guestIP, 90*time.Second)

	// The guest took eth0's MAC and the tap is joined to eth0.
	links := mustRun(t, "ip", "netns", "exec", n.container, "ip", "-o", "link")
	if !strings.Contains(links, "urtap") {
		t.Fatalf("no tap in the namespace:\n%s", links)
	}
	// The tap belongs to the user the monitor runs as (the shim's).
	owner := mustRun(t, "ip", "netns", "exec", n.container, "sh", "-c", "cat /sys/class/net/urtap*/owner")
	if strings.TrimSpace(owner) != strconv.Itoa(os.Geteuid()) {
		t.Fatalf("tap owner %q, want %d", owner, os.Geteuid())
	}
	var body string
	waitFor(t, 30*time.Second, "the HTTP page", func() bool {
		var err error
		body, err = n.httpGet()
		return err == nil
	})
	if !strings.Contains(body, "hello from the urunc guest") {
		t.Fatalf("page: %q", body)
	}
	out, err := n.inClient("ping", "-c", "5", "-i", "0.2", "-W", "2", n.guestIP)
	if err != nil {
		t.Fatalf("ping: %v\n%s", err, out)
	}
	if m := regexp.MustCompile(`= [\d.]+/([\d.]+)/`).FindStringSubmatch(out); m != nil {
		t.Logf("ping round trip to the guest (TCG): %s ms average", m[1])
	}
	// A simple loop of HTTP requests, for a request rate figure.
	start := time.Now()
	const requests = 50
	for i := 0; i < requests; i++ {
		if _, err := n.httpGet(); err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
	}
	t.Logf("HTTP: %d sequential requests (one wget each) in %s: %.1f req/s",
		requests, time.Since(start).Round(time.Millisecond), requests/time.Since(start).Seconds())

	ctr(t, "task", "kill", "-s", "SIGKILL", id)
	waitFor(t, 10*time.Second, "stop", func() bool { return taskStatus(t, id) == "STOPPED" })
	ctr(t, "task", "rm", id)
	ctr(t, "container", "rm", id)
	n.assertNamespaceClean(t)
}

// After a shim killed with SIGKILL, the delete command removes the tap
// and the tc setup from the namespace.
func TestGuestNetworkCleanedAfterShimKilled(t *testing.T) {
	n := newTestNet(t, 11)
	id := newID(t)
	log := runDetachedWith(t, id, n.withNS(), "httpd")
	waitForOutput(t, log, "URUNC_GUEST_HTTPD", 90*time.Second)
	if err := syscall.Kill(shimOf(id), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 15*time.Second, "the task to stop", func() bool { return taskStatus(t, id) != "RUNNING" })
	n.assertNamespaceClean(t)
}

// A container with only loopback runs with no guest network (-nic none).
func TestGuestWithoutNetwork(t *testing.T) {
	id := newID(t)
	log := runDetached(t, id, "sleep")
	waitForOutput(t, log, "URUNC_GUEST_READY", 60*time.Second)
	pid := taskPids(t, id)[0]
	cmdline, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "cmdline"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(cmdline), "-nic\x00none") || strings.Contains(string(cmdline), "ip=") {
		t.Fatalf("monitor command line: %q", strings.ReplaceAll(string(cmdline), "\x00", " "))
	}
}

// linkTaken is the refusal a second unikernel container in one network
// namespace gets at Create.
const linkTaken = "one unikernel container per pod network"

// A second unikernel container in a namespace whose interface already
// carries a guest is refused at Create, naming the first; the first keeps
// its network, before and after the refusal, and nothing of the second is
// left.
func TestTwoGuestsInOneNamespace(t *testing.T) {
	n := newTestNet(t, 12)
	a, b := newID(t), newID(t)
	logA := runDetachedWith(t, a, n.withNS(), "httpd")
	waitForOutput(t, logA, "URUNC_GUEST_HTTPD", 90*time.Second)
	waitFor(t, 30*time.Second, "the HTTP page", func() bool { _, err := n.httpGet(); return err == nil })
	out, err := ctrRaw(append(append([]string{"run", "-d", "--runtime", runtimeName}, n.withNS()...), image, b, "/init", "sleep")...)
	if err == nil || !strings.Contains(out, linkTaken) || !strings.Contains(out, "container "+a) {
		t.Fatalf("the second guest's run: %v\n%s\nwant a refusal naming container %s", err, out, a)
	}
	_, _ = ctrRaw("container", "rm", b)
	if body, err := n.httpGet(); err != nil || !strings.Contains(body, "hello from the urunc guest") {
		t.Fatalf("the first guest lost its network after the second's refusal: %v %q", err, body)
	}
	killAndRemove(t, a)
	n.assertNamespaceClean(t)
}

// Two unikernel Creates racing in one namespace: of each pair, one gets
// the network and the other is refused; the refused one's undo removes
// nothing of the winner's (its tap still joined to eth0), and the
// winner's guest, started after the race, serves HTTP.
func TestTwoGuestsRacingInOneNamespace(t *testing.T) {
	n := newTestNet(t, 16)
	c, ctx := newClient(t)
	img, err := c.GetImage(ctx, image)
	if err != nil {
		t.Fatal(err)
	}
	const rounds = 4
	for round := 1; round <= rounds; round++ {
		ids := []string{newID(t), newID(t)}
		var conts [2]containerd.Container
		for i, id := range ids {
			conts[i], err = c.NewContainer(ctx, id, containerd.WithRuntime(runtimeName, nil), containerd.WithNewSnapshot(id, img),
				containerd.WithNewSpec(oci.WithImageConfig(img), oci.WithProcessArgs("/init", "httpd"),
					oci.WithLinuxNamespace(specs.LinuxNamespace{Type: specs.NetworkNamespace, Path: n.path()})))
			if err != nil {
				t.Fatal(err)
			}
		}
		logFile := filepath.Join(t.TempDir(), "winner.log")
		var tasks [2]containerd.Task
		var errs [2]error
		var wg sync.WaitGroup
		for i := range conts {
			wg.Add(1)
			go func() {
				defer wg.Done()
				tasks[i], errs[i] = conts[i].NewTask(ctx, cio.LogFile(logFile))
			}()
		}
		wg.Wait()
		winner := -1
		for i := range errs {
			switch {
			case errs[i] == nil:
				if winner >= 0 {
					t.Fatalf("round %d: both Creates got the network", round)
				}
				winner = i
			case !strings.Contains(errs[i].Error(), linkTaken):
				t.Fatalf("round %d: %s refused for another reason: %v", round, ids[i], errs[i])
			}
		}
		if winner < 0 {
			t.Fatalf("round %d: both Creates refused: %v", round, errs)
		}
		loser := 1 - winner
		t.Logf("round %d: %s refused: %v", round, ids[loser], errs[loser])
		// The winner's tap is still joined to eth0.
		tap := strings.TrimSpace(mustRun(t, "ip", "netns", "exec", n.container, "sh", "-c", "ls /sys/class/net | grep urtap"))
		filters := mustRun(t, "ip", "netns", "exec", n.container, "tc", "filter", "show", "dev", "eth0", "ingress")
		if tap == "" || !strings.Contains(filters, "Egress Redirect to device "+tap) {
			t.Fatalf("round %d: after the loser's refusal, eth0's ingress:\n%s\ntap %q", round, filters, tap)
		}
		if err := conts[loser].Delete(ctx, containerd.WithSnapshotCleanup); err != nil {
			t.Fatal(err)
		}
		if round == rounds {
			if err := tasks[winner].Start(ctx); err != nil {
				t.Fatal(err)
			}
			waitForOutput(t, logFile, "URUNC_GUEST_HTTPD", 90*time.Second)
			waitFor(t, 30*time.Second, "the winner's HTTP page", func() bool { _, err := n.httpGet(); return err == nil })
		}
		killAndRemove(t, ids[winner])
		n.assertNamespaceClean(t)
	}
}
