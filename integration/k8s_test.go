//go:build integration

package integration

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/urunc-dev/containerd-shim-urunc-v2/runtime/config"
)

// k8sDir holds the control plane and node binaries integration/setup-k8s.sh
// builds: etcd, kube-apiserver, kubelet, kubectl (off PATH).
var k8sDir = envOr("URUNC_K8S_DIR", "/usr/local/lib/urunc-test/k8s")

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

const (
	k8sNodeName = "urunc-k8s-node"
	// k8sNodeBridge is an empty bridge that only carries the node's IP:
	// the kubelet refuses a loopback node IP, and this kernel has no dummy
	// links.
	k8sNodeBridge = "urunc-k8s0"
	k8sNodeIP     = "198.18.41.1"
	// k8sServiceRange is the API server's service range.
	k8sServiceRange = "198.18.42.0/24"
	k8sToken        = "urunc-test-token"
)

// kernelTunables are the sysctls a kubelet sets at start (unless told to
// refuse to start instead): the node restores them when it stops.
var kernelTunables = []string{
	"vm/overcommit_memory", "vm/panic_on_oom", "kernel/panic", "kernel/panic_on_oops",
	"kernel/keys/root_maxkeys", "kernel/keys/root_maxbytes",
}

// k8sNode is a single-node Kubernetes control plane (etcd, an API server)
// and a kubelet on the test containerd's CRI, all on this machine only.
type k8sNode struct {
	dir        string
	apiURL     string
	kubeconfig string
	kubeletDir string
	podLogsDir string
	api        *http.Client
	kubelet    *exec.Cmd
	procs      []*exec.Cmd // every process started, stopped in reverse order
}

// startK8sNode brings the node up and returns once it is Ready, with the
// RuntimeClass urunc applied. It skips the test when setup-k8s.sh has not
// built the binaries.
func startK8sNode(t *testing.T) *k8sNode {
	t.Helper()
	for _, b := range []string{"etcd", "kube-apiserver", "kubelet", "kubectl"} {
		if _, err := os.Stat(filepath.Join(k8sDir, b)); err != nil {
			t.Skipf("no %s in %s: run integration/setup-k8s.sh (setup.sh runs it) to build the Kubernetes node", b, k8sDir)
		}
	}
	criNetwork(t)
	dir, err := os.MkdirTemp("", "urunc-k8s-")
	if err != nil {
		t.Fatal(err)
	}
	n := &k8sNode{
		dir:        dir,
		kubeconfig: filepath.Join(dir, "kubeconfig"),
		kubeletDir: filepath.Join(dir, "kubelet"),
		podLogsDir: filepath.Join(dir, "pods-logs"),
		api: &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{
			// The API server's serving certificate is self-signed.
			TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}},
	}
	t.Cleanup(func() { n.stop(t) })

	// The node's IP on an empty bridge of its own.
	_ = exec.Command("ip", "link", "del", k8sNodeBridge).Run()
	for _, args := range [][]string{
		{"link", "add", k8sNodeBridge, "type", "bridge"},
		{"addr", "add", k8sNodeIP + "/32", "dev", k8sNodeBridge},
		{"link", "set", k8sNodeBridge, "up"},
	} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}

	etcdPort, etcdPeerPort, apiPort, kubeletPort := freePort(t), freePort(t), freePort(t), freePort(t)
	etcdURL := fmt.Sprintf("http://127.0.0.1:%d", etcdPort)
	peerURL := fmt.Sprintf("http://127.0.0.1:%d", etcdPeerPort)
	n.start(t, "etcd", filepath.Join(k8sDir, "etcd"), "--name", "node", "--data-dir", filepath.Join(dir, "etcd"),
		"--listen-client-urls", etcdURL, "--advertise-client-urls", etcdURL,
		"--listen-peer-urls", peerURL, "--initial-advertise-peer-urls", peerURL,
		"--initial-cluster", "node="+peerURL, "--unsafe-no-fsync")

	// A static token, no authorization, loopback only.
	saKey := filepath.Join(dir, "sa.key")
	writeRSAKey(t, saKey)
	tokens := filepath.Join(dir, "tokens.csv")
	writeFile(t, tokens, k8sToken+",admin,admin,system:masters\n")
	n.apiURL = fmt.Sprintf("https://127.0.0.1:%d", apiPort)
	n.start(t, "kube-apiserver", filepath.Join(k8sDir, "kube-apiserver"),
		"--etcd-servers", etcdURL, "--bind-address", "127.0.0.1", "--advertise-address", "127.0.0.1",
		"--secure-port", strconv.Itoa(apiPort), "--cert-dir", filepath.Join(dir, "apiserver-pki"),
		"--token-auth-file", tokens, "--authorization-mode", "AlwaysAllow",
		"--service-account-issuer", "https://kubernetes.default.svc", "--service-account-key-file", saKey,
		"--service-account-signing-key-file", saKey,
		// No DNS and no endpoints controller here: the kubelet is reached
		// at the node's IP, and the apiserver's own endpoints are not kept.
		"--endpoint-reconciler-type", "none", "--disable-admission-plugins", "ServiceAccount",
		"--service-cluster-ip-range", k8sServiceRange, "--kubelet-preferred-address-types", "InternalIP")
	writeFile(t, n.kubeconfig, fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: local
  cluster: {server: %q, insecure-skip-tls-verify: true}
users:
- name: admin
  user: {token: %q}
contexts:
- name: local
  context: {cluster: local, user: admin}
current-context: local
`, n.apiURL, k8sToken))
	waitFor(t, 120*time.Second, "the API server to be ready", func() bool {
		code, _ := n.get("/readyz")
		return code == http.StatusOK
	})

	n.saveKernelTunables(t)
	kubeletConfig := filepath.Join(dir, "kubelet.yaml")
	writeFile(t, kubeletConfig, fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: %s
port: %d
readOnlyPort: 0
healthzPort: 0
cgroupDriver: cgroupfs
# These machines have cgroup v1.
failCgroupV1: false
failSwapOn: false
containerRuntimeEndpoint: unix://%s
authentication:
  anonymous: {enabled: true}
  webhook: {enabled: false}
authorization: {mode: AlwaysAllow}
podLogsDir: %s
# The test's images are imported, never pulled: never collect them, and
# never evict for a disk shared with other work.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: "1Mi", nodefs.available: "1%%", imagefs.available: "1%%"}
registerNode: true
`, k8sNodeIP, kubeletPort, env.socket(), n.podLogsDir))
	n.kubelet = n.start(t, "kubelet", filepath.Join(k8sDir, "kubelet"), "--config", kubeletConfig,
		"--kubeconfig", n.kubeconfig, "--root-dir", n.kubeletDir, "--node-ip", k8sNodeIP,
		"--hostname-override", k8sNodeName, "--v", "2")
	waitFor(t, 120*time.Second, "the node to be Ready", func() bool {
		var node struct {
			Status struct{ Conditions []k8sCondition }
		}
		return n.getJSON("/api/v1/nodes/"+k8sNodeName, &node) == nil && conditionTrue(node.Status.Conditions, "Ready")
	})
	n.kubectl(t, "apply", "-f", "k8s/runtimeclass.yaml", "-f", "k8s/runtimeclass-block.yaml")
	return n
}

// start runs a node process with its output in dir/NAME.log, in its own
// process group.
func (n *k8sNode) start(t *testing.T, name, bin string, args ...string) *exec.Cmd {
	t.Helper()
	log, err := os.Create(filepath.Join(n.dir, name+".log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	log.Close()
	n.procs = append(n.procs, cmd)
	return cmd
}

// stopProcess ends cmd with SIGTERM, or SIGKILL after 20 s.
func stopProcess(cmd *exec.Cmd) {
	if cmd.ProcessState != nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		_ = cmd.Process.Kill()
		<-done
	}
}

// stopKubelet stops the kubelet (what the pods left is then the
// runtime's).
func (n *k8sNode) stopKubelet() {
	if n.kubelet != nil {
		stopProcess(n.kubelet)
	}
}

// stop tears the node down: the kubelet, the control plane, what CRI
// still holds of the node's pods, the bridge, the kubelet's cgroups and
// files; and restores the kernel tunables the kubelet set.
func (n *k8sNode) stop(t *testing.T) {
	for i := len(n.procs) - 1; i >= 0; i-- {
		stopProcess(n.procs[i])
	}
	// Pods the kubelet had not removed yet (a failed test's).
	if ids, _, err := crictlRaw("pods", "-q"); err == nil {
		for _, id := range strings.Fields(ids) {
			_, _, _ = crictlRaw("stopp", id)
			_, _, _ = crictlRaw("rmp", "-f", id)
		}
	}
	_ = exec.Command("ip", "link", "del", k8sNodeBridge).Run()
	if left := removeKubepodsCgroups(); left != "" {
		t.Errorf("the kubelet's cgroups could not be removed: %s", left)
	}
	n.restoreKernelTunables()
	for _, mp := range mountsUnder(n.dir) {
		_ = syscall.Unmount(mp, syscall.MNT_DETACH)
	}
	// The kubelet's links to its container logs, in a fixed place.
	if links, _ := filepath.Glob("/var/log/containers/*"); len(links) > 0 {
		for _, l := range links {
			if target, err := os.Readlink(l); err == nil && strings.HasPrefix(target, n.podLogsDir) {
				os.Remove(l)
			}
		}
	}
	_ = os.Remove("/var/log/containers")
	if t.Failed() || os.Getenv("URUNC_KEEP_TEST_DIR") != "" {
		for _, name := range []string{"kubelet", "kube-apiserver"} {
			if data, err := os.ReadFile(filepath.Join(n.dir, name+".log")); err == nil {
				t.Logf("last of %s's log:\n%s", name, tail(string(data), 40))
			}
		}
		t.Logf("node dir kept: %s", n.dir)
		return
	}
	os.RemoveAll(n.dir)
}

func tail(s string, lines int) string {
	l := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(l) > lines {
		l = l[len(l)-lines:]
	}
	return strings.Join(l, "\n")
}

// kubepodsCgroups lists the kubelet's cgroup directories (kubepods and
// below, in every v1 hierarchy or the v2 tree), deepest first.
func kubepodsCgroups() []string {
	var dirs []string
	roots, _ := filepath.Glob("/sys/fs/cgroup/*/kubepods")
	if _, err := os.Stat("/sys/fs/cgroup/kubepods"); err == nil {
		roots = append(roots, "/sys/fs/cgroup/kubepods")
	}
	for _, root := range roots {
		_ = filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
	}
	for i, j := 0, len(dirs)-1; i < j; i, j = i+1, j-1 {
		dirs[i], dirs[j] = dirs[j], dirs[i]
	}
	return dirs
}

// podCgroups lists the pod cgroups (kubepods/.../pod<UID>) that exist.
func podCgroups() []string {
	var pods []string
	for _, d := range kubepodsCgroups() {
		if strings.HasPrefix(filepath.Base(d), "pod") {
			pods = append(pods, d)
		}
	}
	return pods
}

// removeKubepodsCgroups removes the kubelet's cgroups; a cgroup that still
// holds a process cannot be removed, and is reported.
func removeKubepodsCgroups() string {
	var left []string
	for _, d := range kubepodsCgroups() {
		if err := syscall.Rmdir(d); err != nil && !os.IsNotExist(err) {
			left = append(left, d+": "+err.Error())
		}
	}
	return strings.Join(left, "; ")
}

func (n *k8sNode) saveKernelTunables(t *testing.T) {
	saved := map[string]string{}
	for _, k := range kernelTunables {
		if v, err := os.ReadFile(filepath.Join("/proc/sys", k)); err == nil {
			saved[k] = string(v)
		}
	}
	writeFile(t, filepath.Join(n.dir, "sysctls.json"), string(must(json.Marshal(saved))))
}

func (n *k8sNode) restoreKernelTunables() {
	data, err := os.ReadFile(filepath.Join(n.dir, "sysctls.json"))
	if err != nil {
		return
	}
	saved := map[string]string{}
	if json.Unmarshal(data, &saved) != nil {
		return
	}
	for k, v := range saved {
		_ = os.WriteFile(filepath.Join("/proc/sys", k), []byte(v), 0o644)
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

func writeRSAKey(t *testing.T, path string) {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	block := &pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}
	writeFile(t, path, string(pem.EncodeToMemory(block)))
}

// freePort returns a loopback TCP port free at the time of the call.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// get asks the API server for path and returns the status and body.
func (n *k8sNode) get(path string) (int, []byte) {
	req, _ := http.NewRequest(http.MethodGet, n.apiURL+path, nil)
	req.Header.Set("Authorization", "Bearer "+k8sToken)
	resp, err := n.api.Do(req)
	if err != nil {
		return 0, nil
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, body
}

func (n *k8sNode) getJSON(path string, v any) error {
	code, body := n.get(path)
	if code != http.StatusOK {
		return fmt.Errorf("GET %s: %d %s", path, code, body)
	}
	return json.Unmarshal(body, v)
}

// kubectlRaw runs kubectl against the node with stdin.
func (n *k8sNode) kubectlRaw(stdin string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(k8sDir, "kubectl"), append([]string{"--kubeconfig", n.kubeconfig}, args...)...)
	cmd.Stdin = strings.NewReader(stdin)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

func (n *k8sNode) kubectl(t *testing.T, args ...string) string {
	t.Helper()
	out, err := n.kubectlRaw("", args...)
	if err != nil {
		t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// apply applies a manifest given as text.
func (n *k8sNode) apply(t *testing.T, manifest string) {
	t.Helper()
	if out, err := n.kubectlRaw(manifest, "apply", "-f", "-"); err != nil {
		t.Fatalf("kubectl apply: %v\n%s\n%s", err, out, manifest)
	}
}

type k8sCondition struct{ Type, Status, Reason, Message string }

func conditionTrue(conds []k8sCondition, typ string) bool {
	for _, c := range conds {
		if c.Type == typ {
			return c.Status == "True"
		}
	}
	return false
}

type k8sContainerState struct {
	Running    *struct{ StartedAt string }
	Terminated *struct {
		ExitCode    int
		Reason      string
		ContainerID string
	}
	Waiting *struct{ Reason, Message string }
}

type k8sContainerStatus struct {
	Name         string
	Ready        bool
	RestartCount int
	ContainerID  string
	State        k8sContainerState
	LastState    k8sContainerState
}

// k8sPod is what the tests read of a pod from the API server.
type k8sPod struct {
	Metadata struct{ Name, UID string }
	Status   struct {
		Phase             string
		Reason, Message   string // why the kubelet failed the pod (OutOfcpu, Evicted...)
		PodIP             string
		Conditions        []k8sCondition
		ContainerStatuses []k8sContainerStatus
	}
}

func (p *k8sPod) container(name string) *k8sContainerStatus {
	for i := range p.Status.ContainerStatuses {
		if p.Status.ContainerStatuses[i].Name == name {
			return &p.Status.ContainerStatuses[i]
		}
	}
	return nil
}

// pod returns the pod from the API server; false if it does not exist.
func (n *k8sNode) pod(t *testing.T, name string) (k8sPod, bool) {
	t.Helper()
	var p k8sPod
	code, body := n.get("/api/v1/namespaces/default/pods/" + name)
	if code == http.StatusNotFound {
		return p, false
	}
	if code != http.StatusOK {
		t.Logf("GET pod %s: %d %s", name, code, body)
		return p, true
	}
	if err := json.Unmarshal(body, &p); err != nil {
		t.Fatalf("pod %s: %v", name, err)
	}
	return p, true
}

// waitPod polls the API server until cond holds for the pod, and returns
// it; on timeout it fails with the pod's last status.
func (n *k8sNode) waitPod(t *testing.T, name string, timeout time.Duration, what string, cond func(*k8sPod) bool) k8sPod {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		p, ok := n.pod(t, name)
		if ok && cond(&p) {
			return p
		}
		if time.Now().After(deadline) {
			status, _ := json.MarshalIndent(p.Status, "", " ")
			t.Fatalf("pod %s: timed out after %s waiting for %s; status:\n%s", name, timeout, what, status)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// unikernelPod is a pod of one test-guest container on the node, run by
// urunc, with the given restart policy, command and args.
func unikernelPod(name, restart string, command, args []string) string {
	return fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata: {name: %s}
spec:
  nodeName: %s
  runtimeClassName: urunc
  restartPolicy: %s
  terminationGracePeriodSeconds: 10
  containers:
  - name: guest
    image: docker.io/urunc/test-guest:latest
    imagePullPolicy: Never
    command: %s
    args: %s
`, name, k8sNodeName, restart, yamlList(command), yamlList(args))
}

func yamlList(l []string) string {
	if l == nil {
		return "null"
	}
	return string(must(json.Marshal(l)))
}

// withK8sHostConfig gives the shim the host config a node has by
// default: qemu under TCG, 256 MB for a guest without a memory limit, and
// no grace period of the shim's own (the other tests' 6 s would cut the
// pods' short), so that the kubelet's grace period decides when a guest
// is killed.
func withK8sHostConfig(t *testing.T) {
	t.Helper()
	withHostConfig(t, k8sHostConfig())
}

// k8sHostConfig is the text of withK8sHostConfig's host config.
func k8sHostConfig() string {
	return fmt.Sprintf("[monitors.qemu]\naccel = \"tcg\"\ndefault_memory_mb = %d\n\n[runtime]\nstate_dir = %q\n", k8sGuestMemoryMB, env.qmpDir)
}

// k8sGuestMemoryMB is the RAM of a node's guest whose pod sets no memory
// limit (withK8sHostConfig).
const k8sGuestMemoryMB = 256

// webPodManifest is k8s/web-pod.yaml named name: the unikernel web server
// beside its busybox sidecar, or, onRunc, the same pod shape on runc:
// busybox's httpd in place of the guest, the same sidecar and the same
// readiness probe, no RuntimeClass.
func webPodManifest(t *testing.T, name string, onRunc bool) string {
	t.Helper()
	manifest, err := os.ReadFile("k8s/web-pod.yaml")
	if err != nil {
		t.Fatal(err)
	}
	m := strings.ReplaceAll(string(manifest), "NODE_NAME", k8sNodeName)
	m = strings.Replace(m, "  name: web\n", "  name: "+name+"\n", 1)
	if !onRunc {
		return m
	}
	m = strings.Replace(m, "  runtimeClassName: urunc\n", "", 1)
	// busybox's httpd as PID 1 ignores SIGTERM: no need to wait 30 s.
	m = strings.Replace(m, "terminationGracePeriodSeconds: 30", "terminationGracePeriodSeconds: 2", 1)
	m = strings.Replace(m, `    image: docker.io/urunc/test-guest:latest
    imagePullPolicy: Never
    args: ["httpd"]`, `    image: docker.io/urunc/test-plain:latest
    imagePullPolicy: Never
    command: ["/bin/busybox", "sh", "-c", "mkdir -p /www && echo hello > /www/index.html && exec /bin/busybox httpd -f -p 80 -h /www"]`, 1)
	if strings.Contains(m, "test-guest") || strings.Contains(m, "runtimeClassName") {
		t.Fatalf("the runc web pod's manifest:\n%s", m)
	}
	return m
}

// A real kubelet drives the shim through containerd's CRI: the node comes
// up with the RuntimeClass urunc, and pods written as users write them
// run as VMs. Each behaviour is asserted from what the API server
// reports, and from what the guest printed (kubectl logs). Last, the node
// is drained and its kubelet stopped, and nothing is left on the host.
func TestKubernetesNode(t *testing.T) {
	netnsBefore, _ := filepath.Glob("/var/run/netns/cni-*")
	withK8sHostConfig(t)
	n := startK8sNode(t)

	// A guest's own exit status is the container's, and a pod that will
	// not restart it ends Failed or Succeeded by it; a guest whose kernel
	// panics (no init) fails, it does not succeed.
	t.Run("ExitCodes", func(t *testing.T) {
		cases := []struct {
			name, phase, logLine string
			command, args        []string
			exit                 int
		}{
			{"exit3", "Failed", "exitcode=0x00000300", nil, []string{"exit", "3"}, 3},
			{"exit0", "Succeeded", "exitcode=0x00000000", nil, []string{"exit", "0"}, 0},
			{"noinit", "Failed", "Kernel panic - not syncing", []string{"/nonexistent-init"}, nil, 134},
		}
		for _, c := range cases {
			n.apply(t, unikernelPod(c.name, "Never", c.command, c.args))
		}
		for _, c := range cases {
			p := n.waitPod(t, c.name, 3*time.Minute, "phase "+c.phase, func(p *k8sPod) bool {
				return p.Status.Phase == "Succeeded" || p.Status.Phase == "Failed"
			})
			cs := p.container("guest")
			if p.Status.Phase != c.phase || cs == nil || cs.State.Terminated == nil || cs.State.Terminated.ExitCode != c.exit {
				status, _ := json.MarshalIndent(p.Status, "", " ")
				t.Errorf("pod %s: want phase %s, exit code %d; status:\n%s", c.name, c.phase, c.exit, status)
				continue
			}
			if cs.RestartCount != 0 || conditionTrue(p.Status.Conditions, "Ready") {
				t.Errorf("pod %s: restartCount %d, conditions %+v", c.name, cs.RestartCount, p.Status.Conditions)
			}
			logs := n.kubectl(t, "logs", c.name)
			if !strings.Contains(logs, c.logLine) {
				t.Errorf("pod %s: kubectl logs lack the guest's %q:\n%s", c.name, c.logLine, tail(logs, 20))
			}
			t.Logf("pod %s: %s, exit code %d (%s)", c.name, p.Status.Phase, cs.State.Terminated.ExitCode, cs.State.Terminated.Reason)
		}
		for _, c := range cases {
			n.kubectl(t, "delete", "pod", c.name, "--wait", "--timeout", "120s")
		}
	})

	// A unikernel web server beside a busybox sidecar: Ready through the
	// kubelet's HTTP probe on the guest, served at the pod IP, its console
	// in kubectl logs, kubectl exec into the sidecar, the sidecar's exec
	// liveness probe, and kubectl delete powers the guest down well within
	// the grace period.
	t.Run("WebPodWithSidecar", func(t *testing.T) {
		n.apply(t, webPodManifest(t, "web", false))
		p := n.waitPod(t, "web", 3*time.Minute, "Ready", func(p *k8sPod) bool {
			return conditionTrue(p.Status.Conditions, "Ready")
		})
		t.Logf("pod web: Ready, IP %s", p.Status.PodIP)
		if p.Status.Phase != "Running" || !strings.HasPrefix(p.Status.PodIP, "198.18.30.") {
			t.Fatalf("pod web: phase %s, IP %q", p.Status.Phase, p.Status.PodIP)
		}
		for _, c := range []string{"guest", "sidecar"} {
			if cs := p.container(c); cs == nil || !cs.Ready || cs.RestartCount != 0 || cs.State.Running == nil {
				t.Fatalf("pod web: container %s: %+v", c, cs)
			}
		}
		assertGuestPage(t, "http://"+p.Status.PodIP+"/")
		if logs := n.kubectl(t, "logs", "web", "-c", "guest"); !strings.Contains(logs, "URUNC_GUEST_HTTPD "+p.Status.PodIP) {
			t.Fatalf("kubectl logs of the guest lack its server's line:\n%s", tail(logs, 20))
		}
		if out := n.kubectl(t, "exec", "web", "-c", "sidecar", "--", "/bin/busybox", "echo", "hello-from-sidecar"); !strings.Contains(out, "hello-from-sidecar") {
			t.Fatalf("kubectl exec into the sidecar: %q", out)
		}
		if out, err := n.kubectlRaw("", "exec", "web", "-c", "sidecar", "--", "/bin/busybox", "sh", "-c", "exit 3"); exitCode(err) != 3 {
			t.Fatalf("kubectl exec of a command that exits 3: %v\n%s", err, out)
		}
		// The sidecar reaches the guest as containers of one pod reach
		// each other: at the pod IP, and at localhost on the port the
		// guest declares; its own localhost stays its own.
		if out, err := n.kubectlRaw("", "exec", "web", "-c", "sidecar", "--", "/bin/busybox", "sh", "-c",
			"mkdir -p /tmp/www && echo the-sidecars-page > /tmp/www/index.html && /bin/busybox httpd -p 127.0.0.1:8080 -h /tmp/www"); err != nil {
			t.Fatalf("the sidecar's own httpd: %v\n%s", err, out)
		}
		for url, want := range map[string]string{
			"http://" + p.Status.PodIP + "/": "hello from the urunc guest",
			"http://127.0.0.1:80/":           "hello from the urunc guest",
			"http://127.0.0.1:8080/":         "the-sidecars-page",
		} {
			if out, err := n.kubectlRaw("", "exec", "web", "-c", "sidecar", "--", "/bin/busybox", "timeout", "10", "/bin/busybox", "wget", "-qO-", url); err != nil || !strings.Contains(out, want) {
				t.Fatalf("kubectl exec into the sidecar, wget %s: %v\n%s", url, err, out)
			}
		}
		// The kubelet's own count of probes (its /metrics/probes, through
		// the API server's node proxy): the sidecar's exec liveness probe
		// has passed a few times, the guest's HTTP readiness probe too,
		// and neither container has been restarted.
		waitFor(t, 90*time.Second, "three passed liveness probes of the sidecar", func() bool {
			return n.probeCount("web", "sidecar", "Liveness", "successful") >= 3
		})
		if failed := n.probeCount("web", "sidecar", "Liveness", "failed"); failed != 0 {
			t.Errorf("the sidecar's liveness probe failed %d times", failed)
		}
		if ok := n.probeCount("web", "guest", "Readiness", "successful"); ok < 1 {
			t.Errorf("the guest's readiness probe passed %d times", ok)
		}
		p, _ = n.pod(t, "web")
		for _, c := range []string{"guest", "sidecar"} {
			if cs := p.container(c); cs == nil || !cs.Ready || cs.RestartCount != 0 {
				t.Fatalf("pod web after its probes ran: container %s: %+v", c, cs)
			}
		}
		n.logVMCost(t)

		// The grace period is 30 s: a guest that powers down on the
		// ACPI button is gone in a few seconds.
		start := time.Now()
		n.kubectl(t, "delete", "pod", "web", "--wait", "--timeout", "120s")
		took := time.Since(start)
		t.Logf("kubectl delete pod web: %s (grace period 30s)", took.Round(time.Millisecond))
		if took > 20*time.Second {
			t.Errorf("kubectl delete took %s: the guest was killed at the grace period rather than powered down", took)
		}
		waitFor(t, 30*time.Second, "the pod's monitor to exit", func() bool { return len(podMonitors(p.Metadata.UID)) == 0 })
	})

	// A guest deaf to the power button runs on through the pod's grace
	// period (10 s) and is killed at its end, not before.
	t.Run("DeafGuestKilledAtGrace", func(t *testing.T) {
		n.apply(t, unikernelPod("deaf", "Always", nil, []string{"noacpi", "sleep"}))
		p := n.waitPod(t, "deaf", 3*time.Minute, "the guest running", func(p *k8sPod) bool {
			cs := p.container("guest")
			return cs != nil && cs.State.Running != nil
		})
		waitFor(t, 120*time.Second, "the guest's ready line", func() bool {
			logs, _ := n.kubectlRaw("", "logs", "deaf")
			return strings.Contains(logs, "URUNC_GUEST_READY")
		})
		start := time.Now()
		n.kubectl(t, "delete", "pod", "deaf", "--wait", "--timeout", "120s")
		took := time.Since(start)
		t.Logf("kubectl delete of a guest deaf to the power button: %s (grace period 10s)", took.Round(time.Millisecond))
		if took < 10*time.Second || took > 40*time.Second {
			t.Errorf("kubectl delete took %s, want the 10 s grace period and a kill", took)
		}
		waitFor(t, 30*time.Second, "the pod's monitor to exit", func() bool { return len(podMonitors(p.Metadata.UID)) == 0 })
	})

	// restartPolicy Always and a guest that exits: the kubelet starts it
	// again in the same sandbox, again and again, and nothing piles up.
	t.Run("RestartAlways", func(t *testing.T) {
		n.apply(t, unikernelPod("again", "Always", nil, []string{"echo", "again"}))
		p, footprints, firstIP := n.sampleRestarts(t, "again", 5*time.Minute, 3)
		cs := p.container("guest")
		if cs.LastState.Terminated == nil || cs.LastState.Terminated.ExitCode != 0 {
			t.Errorf("lastState after a clean power-off: %+v", cs.LastState)
		}
		if p.Status.PodIP != firstIP {
			t.Errorf("the pod IP changed across restarts: %s then %s (a new sandbox)", firstIP, p.Status.PodIP)
		}
		sandboxes, _, err := crictlRaw("pods", "--name", "again", "-q")
		if err != nil || len(strings.Fields(sandboxes)) != 1 {
			t.Errorf("sandboxes of pod again: %q (%v), want one", sandboxes, err)
		}
		if logs := n.kubectl(t, "logs", "again", "--previous"); !strings.Contains(logs, "URUNC_GUEST_ARGS: again") {
			t.Errorf("kubectl logs --previous lacks the guest's line:\n%s", tail(logs, 10))
		}
		// Restart 1 and 2 are whole runs of the guest.
		footprints.checkNoPileUp(t, "again", 1, 2)
	})

	// A pod's limits size its VM: the memory limit is the guest's RAM,
	// the CPU limit its vCPUs (1.5 CPUs: 2). The monitor runs in the
	// container's cgroup beside the guest's RAM, so the shim gives that
	// cgroup the limit plus the monitor's memory overhead, and the
	// RuntimeClass declares at least as much for the kubelet to add to the
	// pod's cgroup: a guest that touches most of its RAM runs on, its
	// monitor not OOM-killed. The kubelet's stats summary (what kubectl
	// top reads) shows the VM's memory.
	t.Run("LimitsSizeTheVM", func(t *testing.T) {
		const limitMi = 200
		// The node's host config sets no memory_overhead_mb: qemu's
		// default under TCG holds.
		overheadMi := config.DefaultMemoryOverheadMB("qemu", "tcg")
		n.apply(t, fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata: {name: sized}
spec:
  nodeName: %s
  runtimeClassName: urunc
  restartPolicy: Never
  terminationGracePeriodSeconds: 10
  containers:
  - name: guest
    image: docker.io/urunc/test-guest:latest
    imagePullPolicy: Never
    args: ["memhog", "16", "/proc/meminfo", "/sys/devices/system/cpu/online"]
    resources:
      limits: {memory: %dMi, cpu: 1500m}
`, k8sNodeName, limitMi))
		p := n.waitPod(t, "sized", 3*time.Minute, "the guest running", func(p *k8sPod) bool {
			cs := p.container("guest")
			return cs != nil && cs.State.Running != nil
		})
		var logs string
		waitFor(t, 180*time.Second, "the guest's ready line, after it touched its RAM", func() bool {
			// An OOM kill of the monitor ends the container.
			if p, _ := n.pod(t, "sized"); p.container("guest") != nil && p.container("guest").State.Terminated != nil {
				l, _ := n.kubectlRaw("", "logs", "sized")
				t.Fatalf("the guest ended before its ready line: %+v\n%s", *p.container("guest").State.Terminated, tail(l, 10))
			}
			logs, _ = n.kubectlRaw("", "logs", "sized")
			return strings.Contains(logs, "URUNC_GUEST_READY")
		})
		var memTotalKB, hogMi int
		for _, l := range strings.Split(logs, "\n") {
			f := strings.Fields(l)
			if len(f) >= 4 && f[0] == "URUNC_GUEST_CAT" && f[2] == "MemTotal:" {
				memTotalKB, _ = strconv.Atoi(f[3])
			}
			if len(f) >= 3 && f[0] == "URUNC_GUEST_MEMHOG" {
				hogMi, _ = strconv.Atoi(f[1])
			}
		}
		// Debian's guest kernel keeps about 47 MiB of its RAM for itself
		// whatever the RAM (its image, page structures): MemTotal is the
		// limit less that, never more than the limit.
		if memTotalKB <= (limitMi-64)<<10 || memTotalKB > limitMi<<10 {
			t.Errorf("guest MemTotal %d kB under a %dMi limit, want within (%d, %d] MiB:\n%s", memTotalKB, limitMi, limitMi-64, limitMi, tail(logs, 10))
		}
		if hogMi < memTotalKB>>10*6/10 {
			t.Errorf("the guest touched %d MiB of its %d kB, want most of it:\n%s", hogMi, memTotalKB, tail(logs, 10))
		}
		if !strings.Contains(logs, "URUNC_GUEST_CAT /sys/devices/system/cpu/online: 0-1") {
			t.Errorf("a CPU limit of 1.5 did not give 2 vCPUs:\n%s", tail(logs, 10))
		}
		// The RuntimeClass's overhead covers the monitor's, and the pod's
		// cgroup holds the limit and that overhead.
		var spec struct {
			Spec struct{ Overhead map[string]string }
		}
		if err := n.getJSON("/api/v1/namespaces/default/pods/sized", &spec); err != nil {
			t.Fatal(err)
		}
		podOverheadMi, err := strconv.Atoi(strings.TrimSuffix(spec.Spec.Overhead["memory"], "Mi"))
		if err != nil || podOverheadMi < overheadMi {
			t.Errorf("pod overhead from the RuntimeClass: %v, want at least the monitor's %dMi", spec.Spec.Overhead, overheadMi)
		}
		podCg, _ := filepath.Glob("/sys/fs/cgroup/memory/kubepods/*pod" + p.Metadata.UID)
		more, _ := filepath.Glob("/sys/fs/cgroup/memory/kubepods/*/pod" + p.Metadata.UID)
		podCg = append(podCg, more...)
		if len(podCg) != 1 {
			t.Fatalf("pod cgroup of %s: %v", p.Metadata.UID, podCg)
		}
		if got := cgroupValue(t, podCg[0], "memory.limit_in_bytes"); got != int64(limitMi+podOverheadMi)<<20 {
			t.Errorf("pod cgroup memory limit %d, want %dMi + the RuntimeClass's %dMi", got, limitMi, podOverheadMi)
		}
		// The container's cgroup: the guest's RAM and the monitor's
		// overhead.
		ctrCg := filepath.Join(podCg[0], strings.TrimPrefix(p.container("guest").ContainerID, "containerd://"))
		if got := cgroupValue(t, ctrCg, "memory.limit_in_bytes"); got != int64(limitMi+overheadMi)<<20 {
			t.Errorf("container cgroup memory limit %d, want %dMi + the monitor's %dMi", got, limitMi, overheadMi)
		}
		var summary struct {
			Pods []struct {
				PodRef     struct{ Name string }
				Containers []struct {
					Name   string
					Memory struct{ WorkingSetBytes int64 }
				}
			}
		}
		var ws int64
		waitFor(t, 60*time.Second, "the guest's touched RAM in the kubelet's stats summary", func() bool {
			if n.getJSON("/api/v1/nodes/"+k8sNodeName+"/proxy/stats/summary", &summary) != nil {
				return false
			}
			for _, sp := range summary.Pods {
				for _, c := range sp.Containers {
					if sp.PodRef.Name == "sized" && c.Name == "guest" {
						ws = c.Memory.WorkingSetBytes
					}
				}
			}
			return ws >= int64(hogMi)<<20
		})
		// The monitor was not OOM-killed: the guest runs on, never
		// restarted, and its cgroup saw no OOM kill.
		p, _ = n.pod(t, "sized")
		if cs := p.container("guest"); cs == nil || cs.State.Running == nil || cs.RestartCount != 0 {
			t.Errorf("the guest after touching its RAM: %+v", cs)
		}
		if oom := cgroupStat(t, ctrCg, "memory.oom_control", "oom_kill"); oom != 0 {
			t.Errorf("OOM kills in the container's cgroup: %d", oom)
		}
		// What the VM took beyond its guest's RAM: the most the cgroup
		// held, and the resident memory that cannot be reclaimed (the
		// guest's pages are resident anonymous memory too).
		maxUsage := cgroupValue(t, ctrCg, "memory.max_usage_in_bytes")
		rss := cgroupStat(t, ctrCg, "memory.stat", "total_rss")
		t.Logf("pod sized: guest MemTotal %d kB under a %dMi limit, %d MiB touched; container cgroup limit %dMi + %dMi, its most %.1f MiB (%.1f MiB beyond the guest's RAM), resident anonymous %.1f MiB (%.1f beyond); pod cgroup %dMi + %dMi; stats summary working set %d MiB",
			memTotalKB, limitMi, hogMi, limitMi, overheadMi, float64(maxUsage)/(1<<20), float64(maxUsage-limitMi<<20)/(1<<20),
			float64(rss)/(1<<20), float64(rss-limitMi<<20)/(1<<20), limitMi, podOverheadMi, ws>>20)
		n.logVMCost(t)
		n.kubectl(t, "delete", "pod", "sized", "--wait", "--timeout", "120s")
	})

	// The pod's env, DNS, host aliases, a ConfigMap, a Secret and a
	// projected service-account token reach a Linux guest in each rootfs
	// mode (k8s_podfiles_test.go).
	t.Run("PodFilesEachMode", func(t *testing.T) { n.podFilesEachMode(t) })
	t.Run("ExecIntoTheVM", func(t *testing.T) { n.execIntoTheVM(t) })

	// A liveness probe that fails on the guest (a page its web server
	// does not serve; the startup probe on its page holds the liveness
	// probe back until it serves): the kubelet powers the guest down and
	// starts it again in its sandbox, again, and nothing piles up.
	t.Run("LivenessProbeRestarts", func(t *testing.T) {
		n.apply(t, fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata: {name: unlive}
spec:
  nodeName: %s
  runtimeClassName: urunc
  restartPolicy: Always
  terminationGracePeriodSeconds: 5
  containers:
  - name: guest
    image: docker.io/urunc/test-guest:latest
    imagePullPolicy: Never
    args: ["httpd"]
    startupProbe:
      httpGet: {path: /, port: 80}
      periodSeconds: 1
      failureThreshold: 120
    livenessProbe:
      httpGet: {path: /no-such-page, port: 80}
      periodSeconds: 2
      failureThreshold: 2
`, k8sNodeName))
		p, footprints, _ := n.sampleRestarts(t, "unlive", 4*time.Minute, 2)
		// The API server's events say why: the page's 404, and the kill.
		var events struct {
			Items []struct{ Reason, Message string }
		}
		if err := n.getJSON("/api/v1/namespaces/default/events?fieldSelector=involvedObject.name%3Dunlive", &events); err != nil {
			t.Fatal(err)
		}
		var unhealthy, killed bool
		for _, e := range events.Items {
			unhealthy = unhealthy || e.Reason == "Unhealthy" && strings.Contains(e.Message, "Liveness probe failed: HTTP probe failed with statuscode: 404")
			killed = killed || e.Reason == "Killing" && strings.Contains(e.Message, "failed liveness probe, will be restarted")
		}
		if !unhealthy || !killed {
			t.Errorf("events of pod unlive lack the liveness probe's 404 (%v) or the kill it caused (%v): %+v", unhealthy, killed, events.Items)
		}
		if failed := n.probeCount("unlive", "guest", "Liveness", "failed"); failed < 4 {
			t.Errorf("the kubelet counted %d failed liveness probes of the guest, want at least 2 per restart", failed)
		}
		if ok := n.probeCount("unlive", "guest", "Startup", "successful"); ok < 2 {
			t.Errorf("the guest's startup probe passed %d times, want once per run", ok)
		}
		cs := p.container("guest")
		if cs.LastState.Terminated == nil {
			t.Errorf("lastState after a liveness kill: %+v", cs.LastState)
		}
		// The kill was the guest's power button, pressed by the kubelet's
		// stop, not a crash: the kernel's own last line.
		if logs := n.kubectl(t, "logs", "unlive", "--previous"); !strings.Contains(logs, "URUNC_GUEST_HTTPD") || !strings.Contains(logs, "reboot: Power down") {
			t.Errorf("kubectl logs --previous lack the guest's server or its power-down:\n%s", tail(logs, 10))
		}
		if sandboxes := strings.Fields(crictl(t, "pods", "--name", "unlive", "-q")); len(sandboxes) != 1 {
			t.Errorf("sandboxes of pod unlive: %v, want one", sandboxes)
		}
		footprints.checkNoPileUp(t, "unlive", 0, 1)
		t.Logf("pod unlive: restartCount %d, last terminated %+v", cs.RestartCount, *cs.LastState.Terminated)
		n.kubectl(t, "delete", "pod", "unlive", "--wait", "--timeout", "120s")
		waitFor(t, 30*time.Second, "the pod's monitor to exit", func() bool { return len(podMonitors(p.Metadata.UID)) == 0 })
	})

	// The node drained and its kubelet stopped: no shim, monitor,
	// launcher, mount, socket, network namespace or pod cgroup is left.
	t.Run("DrainLeavesNothing", func(t *testing.T) { n.drainLeavesNothing(t, netnsBefore) })
}

// drainLeavesNothing deletes every pod, stops the kubelet and fails the
// test if anything of the pods is left on the host: a shim, monitor,
// launcher, mount, socket, network namespace (beyond netnsBefore, those
// that existed before the node) or pod cgroup.
func (n *k8sNode) drainLeavesNothing(t *testing.T, netnsBefore []string) {
	t.Helper()
	n.kubectl(t, "delete", "pod", "--all", "--wait", "--timeout", "180s")
	waitFor(t, 60*time.Second, "the pods' cgroups to go", func() bool { return len(podCgroups()) == 0 })
	n.stopKubelet()
	if left := leftovers("k8s-node"); left != "" {
		t.Errorf("leftovers after the drain: %s", left)
		for _, pid := range monitorProcesses() {
			cg, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
			t.Logf("monitor %d: %s; cgroups %s", pid, procStatus(pid, "State", "PPid"), strings.ReplaceAll(tail(string(cg), 3), "\n", " "))
		}
	}
	if after, _ := filepath.Glob("/var/run/netns/cni-*"); len(after) > len(netnsBefore) {
		t.Errorf("pod network namespaces left: %v (before: %v)", after, netnsBefore)
	}
	// The kubelet bind-mounts its root dir on itself (to make it a
	// shared mount) and leaves that at exit: only pods' mounts count.
	if m := mountsUnder(n.kubeletDir + "/"); len(m) > 0 {
		t.Errorf("mounts left under the kubelet's root: %v", m)
	}
	if running, _, _ := crictlRaw("ps", "-q"); running != "" {
		t.Errorf("containers still running: %s", running)
	}
}

// probeCount reads the kubelet's prober_probe_total for a container's
// probe of a type (Liveness, Readiness, Startup) with a result.
func (n *k8sNode) probeCount(pod, container, probeType, result string) int {
	code, body := n.get("/api/v1/nodes/" + k8sNodeName + "/proxy/metrics/probes")
	if code != http.StatusOK {
		return -1
	}
	total := 0
	for _, l := range strings.Split(string(body), "\n") {
		if !strings.HasPrefix(l, "prober_probe_total{") {
			continue
		}
		if !strings.Contains(l, `pod="`+pod+`"`) || !strings.Contains(l, `container="`+container+`"`) ||
			!strings.Contains(l, `probe_type="`+probeType+`"`) || !strings.Contains(l, `result="`+result+`"`) {
			continue
		}
		f := strings.Fields(l)
		if v, err := strconv.ParseFloat(f[len(f)-1], 64); err == nil {
			total += int(v)
		}
	}
	return total
}

// podNetns returns the network namespace CRI made for the pod's sandbox.
func podNetns(t *testing.T, pod string) string {
	t.Helper()
	id := strings.Fields(crictl(t, "pods", "--name", pod, "-q"))
	if len(id) != 1 {
		t.Fatalf("sandboxes of pod %s: %v", pod, id)
	}
	var inspect struct {
		Info struct {
			RuntimeSpec struct {
				Linux struct {
					Namespaces []struct{ Type, Path string }
				}
			}
		}
	}
	crictlJSON(t, &inspect, "inspectp", id[0])
	for _, ns := range inspect.Info.RuntimeSpec.Linux.Namespaces {
		if ns.Type == "network" && ns.Path != "" {
			return ns.Path
		}
	}
	t.Fatalf("pod %s: no network namespace in %+v", pod, inspect)
	return ""
}

// netnsLinks counts the links in a network namespace: lo, eth0 and what
// the shim adds for its guest.
func netnsLinks(t *testing.T, path string) int {
	t.Helper()
	out, err := exec.Command("nsenter", "--net="+path, "ip", "-o", "link").CombinedOutput()
	if err != nil {
		t.Fatalf("links of %s: %v: %s", path, err, out)
	}
	return len(strings.Split(strings.TrimSpace(string(out)), "\n"))
}

// restartFootprint is the most a pod held on the host during one run of
// its container: what a restart that left something behind would add to.
type restartFootprint struct{ links, tables, mounts, shims, monitors int }

// restartFootprints are a pod's footprints by restartCount, one per run.
type restartFootprints map[int]*restartFootprint

// sampleRestarts waits until the pod's container "guest" has restarted
// restarts times in its sandbox, sampling at each poll what the pod holds
// on the host, and returns the pod, the most held in each run and the
// pod's first IP.
func (n *k8sNode) sampleRestarts(t *testing.T, pod string, timeout time.Duration, restarts int) (k8sPod, restartFootprints, string) {
	t.Helper()
	footprints := restartFootprints{}
	var firstIP, netnsPath, sandbox string
	p := n.waitPod(t, pod, timeout, fmt.Sprintf("restartCount >= %d", restarts), func(p *k8sPod) bool {
		cs := p.container("guest")
		// The container's status comes before its sandbox: the pod has
		// an IP once CRI has made its network namespace.
		if cs == nil || p.Status.PodIP == "" {
			return false
		}
		if firstIP == "" {
			firstIP = p.Status.PodIP
			netnsPath = podNetns(t, pod)
			sandbox = strings.TrimSpace(crictl(t, "pods", "--name", pod, "-q"))
		}
		f := footprints[cs.RestartCount]
		if f == nil {
			f = &restartFootprint{}
			footprints[cs.RestartCount] = f
		}
		f.links = max(f.links, netnsLinks(t, netnsPath))
		f.tables = max(f.tables, len(nftTablesIn(t, netnsPath)))
		f.mounts = max(f.mounts, len(mountsUnder(env.stateDir())))
		f.shims = max(f.shims, len(podShims(sandbox)))
		mons := podMonitors(p.Metadata.UID)
		f.monitors = max(f.monitors, len(mons))
		if len(mons) > 1 {
			// Which monitor outlived its run, and in what state.
			for _, pid := range mons {
				cg, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
				t.Logf("restartCount %d, guest state %+v: monitor %d, %s; cgroups %s", cs.RestartCount, cs.State, pid,
					procStatus(pid, "State", "VmRSS"), strings.ReplaceAll(tail(string(cg), 2), "\n", " "))
			}
		}
		return cs.RestartCount >= restarts
	})
	return p, footprints, firstIP
}

// checkNoPileUp fails the test if the pod's run later held more on the
// host than its run earlier, or more than one pod's worth (one shim, one
// monitor, the two pod-local nftables tables), or either run went unseen.
func (footprints restartFootprints) checkNoPileUp(t *testing.T, pod string, earlier, later int) {
	t.Helper()
	e, l := footprints[earlier], footprints[later]
	if e == nil || l == nil {
		t.Fatalf("pod %s: restartCount went past %d or %d unseen: %v", pod, earlier, later, footprints)
	}
	if l.links > e.links || l.tables > e.tables || l.tables > 2 || l.mounts > e.mounts || l.shims > 1 || l.monitors > 1 {
		t.Errorf("pod %s: restarts accumulate: most held during restartCount %d %+v, during %d %+v", pod, earlier, *e, later, *l)
	}
	t.Logf("pod %s: most held on the host during restartCount %d %+v, during %d %+v", pod, earlier, *e, later, *l)
}

// shimDaemons lists the shim processes of this run that serve containers:
// each new container also runs the shim's short-lived "start" command.
func shimDaemons() []int {
	var pids []int
	for _, pid := range processesOf(env.shimPath) {
		cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if !strings.HasSuffix(string(cmdline), "\x00start\x00") {
			pids = append(pids, pid)
		}
	}
	return pids
}

// podShims lists the shim daemons serving the pod whose sandbox has this
// ID: its shim was started for the sandbox's container, whose ID is the
// sandbox's.
func podShims(sandbox string) []int {
	var pids []int
	for _, pid := range shimDaemons() {
		cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if strings.Contains(string(cmdline), "\x00-id\x00"+sandbox+"\x00") {
			pids = append(pids, pid)
		}
	}
	return pids
}

// cgroupValue reads a cgroup file holding one number.
func cgroupValue(t *testing.T, dir, file string) int64 {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, file))
	if err != nil {
		t.Fatal(err)
	}
	v, err := strconv.ParseInt(strings.TrimSpace(string(data)), 10, 64)
	if err != nil {
		t.Fatalf("%s/%s: %v", dir, file, err)
	}
	return v
}

// cgroupStat reads one "key value" line of a cgroup file (memory.stat,
// memory.oom_control); -1 if it is not there.
func cgroupStat(t *testing.T, dir, file, key string) int64 {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, file))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(data), "\n") {
		if f := strings.Fields(l); len(f) == 2 && f[0] == key {
			v, _ := strconv.ParseInt(f[1], 10, 64)
			return v
		}
	}
	return -1
}

// podMonitors lists the monitor processes in the cgroups of the pod with
// this UID (other work on the machine may run guests of its own).
func podMonitors(uid string) []int {
	var pids []int
	for _, pid := range monitorProcesses() {
		cg, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
		if strings.Contains(string(cg), "pod"+uid) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// logVMCost logs what the running guest's VM costs on the host beside the
// RAM its guest was given: the monitor's resident memory and the shim's.
func (n *k8sNode) logVMCost(t *testing.T) {
	for _, pid := range monitorProcesses() {
		t.Logf("monitor %d: %s", pid, procStatus(pid, "VmRSS", "RssAnon", "RssFile"))
	}
	for _, pid := range processesOf(env.shimPath) {
		t.Logf("shim %d: %s", pid, procStatus(pid, "VmRSS"))
	}
}

func procStatus(pid int, fields ...string) string {
	data, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	var out []string
	for _, l := range strings.Split(string(data), "\n") {
		for _, f := range fields {
			if strings.HasPrefix(l, f+":") {
				out = append(out, strings.Join(strings.Fields(l), " "))
			}
		}
	}
	return strings.Join(out, ", ")
}

// TestKubernetesDemo is make k8s-demo: the node, one unikernel web pod of
// RuntimeClass urunc, its page fetched at the pod IP, the pod deleted and
// the node torn down, each step printed.
func TestKubernetesDemo(t *testing.T) {
	if os.Getenv("URUNC_K8S_DEMO") == "" {
		t.Skip("make k8s-demo runs this (URUNC_K8S_DEMO=1)")
	}
	n := startK8sNode(t)
	t.Logf("kubectl get nodes -o wide:\n%s", n.kubectl(t, "get", "nodes", "-o", "wide"))
	t.Logf("kubectl get runtimeclass urunc:\n%s", n.kubectl(t, "get", "runtimeclass", "urunc"))
	created := time.Now()
	n.apply(t, webPodManifest(t, "web", false))
	p := n.waitPod(t, "web", 3*time.Minute, "Ready", func(p *k8sPod) bool {
		return conditionTrue(p.Status.Conditions, "Ready")
	})
	t.Logf("pod web Ready %s after kubectl apply", time.Since(created).Round(time.Millisecond))
	t.Logf("kubectl get pods -o wide:\n%s", n.kubectl(t, "get", "pods", "-o", "wide"))
	resp, err := http.Get("http://" + p.Status.PodIP + "/")
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	t.Logf("GET http://%s/: %s %s", p.Status.PodIP, resp.Status, page)
	t.Logf("kubectl logs web -c guest (last lines):\n%s", tail(n.kubectl(t, "logs", "web", "-c", "guest"), 5))
	start := time.Now()
	n.kubectl(t, "delete", "pod", "web", "--wait", "--timeout", "120s")
	t.Logf("kubectl delete pod web: %s", time.Since(start).Round(time.Millisecond))
}
