//go:build integration

package integration

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// nerdctl runs nerdctl against the private daemon with its own data root
// and CNI config dir under the test's temp dir.
func nerdctl(t *testing.T, dataRoot string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	full := append([]string{
		"--address", env.socket(), "--namespace", namespace,
		"--data-root", filepath.Join(dataRoot, "data"),
		"--cni-path", "/usr/lib/cni",
		"--cni-netconfpath", filepath.Join(dataRoot, "cni"),
	}, args...)
	cmd := exec.CommandContext(ctx, "nerdctl", full...)
	cmd.Env = append(os.Environ(), "PATH="+env.bin+":"+os.Getenv("PATH"))
	out, err := cmd.CombinedOutput()
	return filterCtrNoise(string(out)), err
}

// nerdctl v1.7.7 runs the guest on a CNI bridge network it creates with a
// 198.18.x.0/24 subnet (its createRuntime hook sets up CNI, which this shim
// runs); the host reaches the guest's HTTP server over the bridge, and
// nerdctl rm leaves nothing behind.
func TestNerdctlBridgeNetwork(t *testing.T) {
	if _, err := exec.LookPath("nerdctl"); err != nil {
		t.Skip("nerdctl not installed (integration/setup.sh builds it)")
	}
	dataRoot := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dataRoot, "cni"), 0o755); err != nil {
		t.Fatal(err)
	}
	// The network is a plain CNI bridge with host-local IPAM: no IP
	// masquerade and no firewall rules, so nothing can be routed off the
	// machine and nothing is left in the host's iptables.
	netName, bridge := "urunc-it-net", "urunc-it-br0"
	conflist := fmt.Sprintf(`{"cniVersion": "1.0.0", "name": %q, "nerdctlID": "urunc-it-net-0001", "plugins": [
  {"type": "bridge", "bridge": %q, "isGateway": true, "ipMasq": false, "hairpinMode": true,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": "198.18.20.0/24", "gateway": "198.18.20.1"}]],
            "routes": [{"dst": "0.0.0.0/0"}]}}]}`, netName, bridge)
	if err := os.WriteFile(filepath.Join(dataRoot, "cni", "nerdctl-"+netName+".conflist"), []byte(conflist), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = exec.Command("ip", "link", "del", bridge).Run()
		_ = os.RemoveAll("/var/lib/cni/networks/" + netName)
	})
	id := newID(t)
	t.Cleanup(func() { _, _ = nerdctl(t, dataRoot, "rm", "-f", id) })
	out, err := nerdctl(t, dataRoot, "run", "-d", "--runtime", runtimeName, "--network", netName, "--name", id, image, "httpd")
	if err != nil {
		t.Fatalf("nerdctl run: %v\n%s", err, out)
	}
	var guestIP string
	waitFor(t, 90*time.Second, "the guest's HTTP server", func() bool {
		logs, _ := nerdctl(t, dataRoot, "logs", id)
		if m := regexp.MustCompile(`URUNC_GUEST_HTTPD (198\.18\.20\.\d+)`).FindStringSubmatch(logs); m != nil {
			guestIP = m[1]
			return true
		}
		return false
	})
	assertGuestPage(t, fmt.Sprintf("http://%s/", guestIP))
	if out, err := nerdctl(t, dataRoot, "rm", "-f", id); err != nil {
		t.Fatalf("nerdctl rm: %v\n%s", err, out)
	}
	assertNoIPAM(t, netName)

	// A one-shot guest through nerdctl run --rm: its output, then the
	// same teardown on the exit path.
	out, err = nerdctl(t, dataRoot, "run", "--rm", "--runtime", runtimeName, "--network", netName, image, "echo", "via", "nerdctl")
	if err != nil || !strings.Contains(out, "URUNC_GUEST_ARGS: via nerdctl") {
		t.Fatalf("nerdctl run --rm: %v\n%s", err, out)
	}
	if !strings.Contains(out, "ip=198.18.20.") {
		t.Fatalf("the one-shot guest got no address on its command line:\n%s", out)
	}
	assertNoIPAM(t, netName)
}

// assertNoIPAM checks that CNI's teardown (nerdctl's poststop hook, run by
// the shim) released every address.
func assertNoIPAM(t *testing.T, netName string) {
	t.Helper()
	ipam, _ := filepath.Glob("/var/lib/cni/networks/" + netName + "/198.18.*")
	if len(ipam) > 0 {
		t.Fatalf("IPAM reservations left: %v", ipam)
	}
}
