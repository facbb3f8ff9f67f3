//go:build integration

package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/urunc-dev/containerd-shim-urunc-v2/integration/testimage"
)

const criBridge = "urunc-cri0"

// crictlRaw runs crictl (cri-tools, built by setup.sh) against the test
// daemon's CRI and returns its stdout and stderr apart: IDs come on
// stdout, crictl's own warnings on stderr.
func crictlRaw(args ...string) (string, string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "crictl", append([]string{"--runtime-endpoint", "unix://" + env.socket(),
		"--image-endpoint", "unix://" + env.socket(), "--timeout", "60s"}, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	return strings.TrimSpace(stdout.String()), stderr.String(), err
}

func crictl(t *testing.T, args ...string) string {
	t.Helper()
	out, errOut, err := crictlRaw(args...)
	if err != nil {
		t.Fatalf("crictl %s: %v\n%s%s", strings.Join(args, " "), err, out, errOut)
	}
	return out
}

// crictlJSON runs a crictl command with -o json (right after the command:
// crictl takes flags only before the arguments) and decodes the answer.
func crictlJSON(t *testing.T, v any, command string, args ...string) {
	t.Helper()
	out := crictl(t, append([]string{command, "-o", "json"}, args...)...)
	if err := json.Unmarshal([]byte(out), v); err != nil {
		t.Fatalf("crictl %s %s: %v\n%s", command, strings.Join(args, " "), err, out)
	}
}

func writeJSON(t *testing.T, path string, v any) string {
	t.Helper()
	data, _ := json.Marshal(v)
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// A Kubernetes pod as its users drive it, through crictl (a client nobody
// here wrote) against containerd's CRI with runtime handler "urunc" (a
// RuntimeClass's handler mapped to io.containerd.urunc.v2): the pause
// container and a busybox sidecar go to runc, the unikernel boots as a VM
// in the pod's network namespace, takes the pod's IP from CNI and serves
// HTTP to the host, all in one shim. Then: logs, stats of the container and
// of the pod, inspect, exec in the sidecar (sync, streamed, failing), stop
// with a timeout of a guest that powers down (0 at once) and of one that
// ignores the power button (killed by the caller at the timeout, 137),
// stopp, rmp, and nothing left.
func TestCRIPodWithCrictl(t *testing.T) {
	criNetwork(t)

	pod := startCRIPod(t, "urunc", "unikernel-pod", nil)
	dir, logDir, podConfig, podID, podIP := pod.dir, pod.logDir, pod.config, pod.id, pod.ip
	if !strings.HasPrefix(podIP, "198.18.30.") {
		t.Fatalf("pod IP %q, want one from 198.18.30.0/24", podIP)
	}

	container := func(name, image string, command []string) string {
		return writeJSON(t, filepath.Join(dir, name+".json"), map[string]any{
			"metadata": map[string]string{"name": name}, "image": map[string]string{"image": image},
			"command": command, "log_path": name + ".log", "linux": map[string]any{},
		})
	}
	guest := crictl(t, "create", "--no-pull", podID, container("guest", testimage.ImageName, []string{"/init", "httpd"}), podConfig)
	crictl(t, "start", guest)
	waitForOutput(t, filepath.Join(logDir, "guest.log"), "URUNC_GUEST_HTTPD "+podIP, 90*time.Second)
	if logs := crictl(t, "logs", guest); !strings.Contains(logs, "URUNC_GUEST_HTTPD "+podIP) {
		t.Fatalf("crictl logs lacks the guest's line:\n%s", logs)
	}
	// One shim serves the pod: the pause container (runc) and the VM.
	if shims := processesOf(env.shimPath); len(shims) != 1 {
		t.Fatalf("%d shim processes for one pod, want 1: %v", len(shims), shims)
	}
	assertGuestPage(t, "http://"+podIP+"/")
	var inspect struct {
		Status struct {
			State    string
			ExitCode int32
		}
	}
	crictlJSON(t, &inspect, "inspect", guest)
	if inspect.Status.State != "CONTAINER_RUNNING" {
		t.Fatalf("crictl inspect: state %s", inspect.Status.State)
	}
	var stats struct {
		Stats []struct {
			Memory struct {
				WorkingSetBytes struct{ Value string }
			}
		}
	}
	crictlJSON(t, &stats, "stats", "--id", guest)
	if len(stats.Stats) != 1 || stats.Stats[0].Memory.WorkingSetBytes.Value == "" || stats.Stats[0].Memory.WorkingSetBytes.Value == "0" {
		t.Fatalf("crictl stats: %+v", stats)
	}
	var podStats struct {
		Stats []struct {
			Linux struct {
				Memory struct {
					WorkingSetBytes struct{ Value string }
				}
				Containers []struct {
					Attributes struct{ ID string }
				}
			}
		}
	}
	crictlJSON(t, &podStats, "statsp", "--id", podID)
	if len(podStats.Stats) != 1 || podStats.Stats[0].Linux.Memory.WorkingSetBytes.Value == "" {
		t.Fatalf("crictl statsp: %+v", podStats)
	}
	t.Logf("pod stats: working set %s bytes, container working set %s bytes",
		podStats.Stats[0].Linux.Memory.WorkingSetBytes.Value, stats.Stats[0].Memory.WorkingSetBytes.Value)

	// A second unikernel container in the pod is refused at its start
	// (when containerd creates its task), naming the guest that holds
	// the pod's interface; the guest keeps its network.
	second := crictl(t, "create", "--no-pull", podID, container("second", testimage.ImageName, []string{"/init", "sleep"}), podConfig)
	if out, errOut, err := crictlRaw("start", second); err == nil || !strings.Contains(errOut, "FailedPrecondition") ||
		!strings.Contains(errOut, "one unikernel container per pod network") || !strings.Contains(errOut, "container "+guest) {
		t.Fatalf("a second unikernel container in the pod: %v\n%s%s", err, out, errOut)
	}
	crictl(t, "rm", second)
	assertGuestPage(t, "http://"+podIP+"/")

	// A plain sidecar beside the VM, run by runc in the same shim: exec
	// into it (a probe, kubectl exec) works, synchronous and streamed.
	sidecar := crictl(t, "create", "--no-pull", podID, container("sidecar", testimage.PlainImageName, []string{"/bin/busybox", "sleep", "1000"}), podConfig)
	crictl(t, "start", sidecar)
	if out := crictl(t, "exec", "--sync", sidecar, "/bin/busybox", "echo", "hello-sync"); !strings.Contains(out, "hello-sync") {
		t.Fatalf("crictl exec --sync: %q", out)
	}
	if out := crictl(t, "exec", sidecar, "/bin/busybox", "echo", "hello-streamed"); !strings.Contains(out, "hello-streamed") {
		t.Fatalf("crictl exec: %q", out)
	}
	// A failing command's status reaches crictl, which reports it (and
	// exits 1 itself), synchronous or streamed.
	if out, errOut, err := crictlRaw("exec", "--sync", sidecar, "/bin/sh", "-c", "echo failing; exit 3"); err == nil || !strings.Contains(errOut, "exited with 3") {
		t.Fatalf("crictl exec --sync of a failing command: %v\n%s%s", err, out, errOut)
	}
	if out, errOut, err := crictlRaw("exec", sidecar, "/bin/sh", "-c", "echo failing; exit 3"); err == nil || !strings.Contains(errOut, "command terminated with exit code 3") {
		t.Fatalf("crictl exec of a failing command: %v\n%s%s", err, out, errOut)
	}
	crictl(t, "stop", "-t", "2", sidecar)
	crictl(t, "rm", sidecar)

	// Stop with the pod's grace period: the guest powers down at once
	// and exits 0.
	crictl(t, "stop", "-t", "20", guest)
	crictlJSON(t, &inspect, "inspect", guest)
	if inspect.Status.State != "CONTAINER_EXITED" || inspect.Status.ExitCode != 0 {
		t.Fatalf("a guest that powered down: %+v, want exited 0", inspect.Status)
	}
	crictl(t, "rm", guest)
	// The pod's network is free again once the guest is gone: a new
	// guest takes it. Log rotation as the kubelet does it: rename the file, then
	// ReopenContainerLog (which crictl lacks: the CRI API directly). The
	// running guest's next lines go to a new file, none to the old one.
	counter := crictl(t, "create", "--no-pull", podID, container("counter", testimage.ImageName, []string{"/init", "count"}), podConfig)
	crictl(t, "start", counter)
	counterLog := filepath.Join(logDir, "counter.log")
	waitForOutput(t, counterLog, "count 2", 90*time.Second)
	if err := os.Rename(counterLog, counterLog+".1"); err != nil {
		t.Fatal(err)
	}
	reopenContainerLog(t, counter)
	waitForOutput(t, counterLog, "count", 30*time.Second)
	rotated, _ := os.ReadFile(counterLog + ".1")
	time.Sleep(2 * time.Second)
	if again, _ := os.ReadFile(counterLog + ".1"); len(again) != len(rotated) {
		t.Errorf("the rotated log still grows: %d then %d bytes", len(rotated), len(again))
	}
	crictl(t, "stop", "-t", "10", counter)
	crictl(t, "rm", counter)

	// A guest that ignores the power button runs until the caller's
	// timeout and is then killed by it (the shim enforces no grace of
	// its own): the stop returns no sooner than the timeout, with 137.
	stubborn := crictl(t, "create", "--no-pull", podID, container("stubborn", testimage.ImageName, []string{"/init", "noacpi", "sleep"}), podConfig)
	crictl(t, "start", stubborn)
	waitForOutput(t, filepath.Join(logDir, "stubborn.log"), "URUNC_GUEST_READY", 90*time.Second)
	start := time.Now()
	crictl(t, "stop", "-t", "4", stubborn)
	if d := time.Since(start); d < 4*time.Second {
		t.Errorf("stop -t 4 of a guest that ignores the power button returned after %s: killed before the caller's timeout", d)
	}
	crictlJSON(t, &inspect, "inspect", stubborn)
	if inspect.Status.ExitCode != 137 {
		t.Fatalf("a guest killed at the timeout: %+v, want 137", inspect.Status)
	}
	crictl(t, "rm", stubborn)

	pod.remove(t)
	waitFor(t, 15*time.Second, "the pod's shim to exit", func() bool { return len(processesOf(env.shimPath)) == 0 })
	if left := leftovers(guest); left != "" {
		t.Fatalf("leftovers: %s", left)
	}
	if m := regexp.MustCompile(`\S*` + podID[:12] + `\S*`).FindString(strings.Join(mountsUnder(env.dir), " ")); m != "" {
		t.Fatalf("pod mount left: %s", m)
	}
	if ipam, _ := filepath.Glob("/var/lib/cni/networks/urunc-cri/198.18.*"); len(ipam) > 0 {
		t.Fatalf("IPAM reservations left: %v", ipam)
	}
}

// reopenContainerLog calls the CRI's ReopenContainerLog, as the kubelet
// does after it renames a container's log file.
func reopenContainerLog(t *testing.T, id string) {
	t.Helper()
	conn, err := grpc.NewClient("unix://"+env.socket(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := runtimeapi.NewRuntimeServiceClient(conn).ReopenContainerLog(ctx, &runtimeapi.ReopenContainerLogRequest{ContainerId: id}); err != nil {
		t.Fatalf("ReopenContainerLog: %v", err)
	}
}

// criNetwork gives the CRI a bridge network (198.18.30.0/24) for the test
// criPod is a pod sandbox a test runs through crictl.
type criPod struct {
	id, ip  string
	config  string // the pod's config file, for crictl create
	dir     string // the test's temporary directory, holding config
	logDir  string // the pod's log directory
	removed bool
}

// startCRIPod runs a pod sandbox named name under runtime handler with
// its logs in a temporary directory; extra adds to its config. Whether the
// test passes or not, the pod is removed at the end (unless the test
// removed it) and leaves nothing: no shim, monitor, mount or socket, and
// no network namespace.
func startCRIPod(t *testing.T, handler, name string, extra map[string]any) *criPod {
	t.Helper()
	p := &criPod{dir: t.TempDir()}
	p.logDir = filepath.Join(p.dir, "logs")
	netnsBefore, _ := filepath.Glob("/var/run/netns/cni-*")
	cfg := map[string]any{
		"metadata":      map[string]string{"name": name, "namespace": "default", "uid": fmt.Sprint(time.Now().UnixNano())},
		"log_directory": p.logDir,
		"linux":         map[string]any{"cgroup_parent": "/urunc-cri-test"},
	}
	for k, v := range extra {
		cfg[k] = v
	}
	p.config = writeJSON(t, filepath.Join(p.dir, "pod.json"), cfg)
	p.id = crictl(t, "runp", "--runtime", handler, p.config)
	t.Cleanup(func() {
		if !p.removed {
			_, _, _ = crictlRaw("stopp", p.id)
			_, _, _ = crictlRaw("rmp", "-f", p.id)
		}
		assertNoLeftovers(t, p.id)
		if after, _ := filepath.Glob("/var/run/netns/cni-*"); len(after) > len(netnsBefore) {
			t.Errorf("pod network namespaces left: %v (before: %v)", after, netnsBefore)
		}
	})
	var status struct {
		Status struct {
			Network struct{ IP string }
		}
	}
	crictlJSON(t, &status, "inspectp", p.id)
	p.ip = status.Status.Network.IP
	return p
}

// remove stops and removes the pod, as a kubelet does.
func (p *criPod) remove(t *testing.T) {
	t.Helper()
	crictl(t, "stopp", p.id)
	crictl(t, "rmp", p.id)
	p.removed = true
}

// and waits until the CRI reports it ready; it is removed afterwards.
func criNetwork(t *testing.T) {
	t.Helper()
	if err := os.MkdirAll(env.criCNIDir(), 0o755); err != nil {
		t.Fatal(err)
	}
	conflist := fmt.Sprintf(`{"cniVersion": "1.0.0", "name": "urunc-cri", "plugins": [
  {"type": "bridge", "bridge": %q, "isGateway": true, "ipMasq": false,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": "198.18.30.0/24", "gateway": "198.18.30.1"}]],
            "routes": [{"dst": "0.0.0.0/0"}]}},
  {"type": "portmap", "capabilities": {"portMappings": true}},
  {"type": "loopback"}]}`, criBridge)
	if err := os.WriteFile(filepath.Join(env.criCNIDir(), "10-urunc-cri.conflist"), []byte(conflist), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = exec.Command("ip", "link", "del", criBridge).Run()
		_ = os.RemoveAll("/var/lib/cni/networks/urunc-cri")
	})
	// CRI reloads its CNI config asynchronously; wait until it is ready.
	waitFor(t, 30*time.Second, "CRI network ready", func() bool {
		var info struct {
			Status struct {
				Conditions []struct {
					Type   string
					Status bool
				}
			}
		}
		out, _, err := crictlRaw("info", "-o", "json")
		if err != nil || json.Unmarshal([]byte(out), &info) != nil {
			return false
		}
		for _, c := range info.Status.Conditions {
			if c.Type == "NetworkReady" {
				return c.Status
			}
		}
		return false
	})
}
