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

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/urunc-dev/containerd-shim-urunc-v2/integration/testimage"
)

const criBridge = "urunc-cri0"

// A Kubernetes-style pod through the CRI API with runtime handler "urunc"
// (a RuntimeClass's handler mapped to io.containerd.urunc.v2): the pause
// container goes to runc, the unikernel container boots as a VM in the
// pod's network namespace, takes the pod's IP from CNI and serves HTTP to
// the host; both are served by one shim, and stopping and removing the
// pod leaves nothing.
func TestCRIPodWithUnikernel(t *testing.T) {
	if err := os.MkdirAll(env.criCNIDir(), 0o755); err != nil {
		t.Fatal(err)
	}
	conflist := fmt.Sprintf(`{"cniVersion": "1.0.0", "name": "urunc-cri", "plugins": [
  {"type": "bridge", "bridge": %q, "isGateway": true, "ipMasq": false,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": "198.18.30.0/24", "gateway": "198.18.30.1"}]],
            "routes": [{"dst": "0.0.0.0/0"}]}},
  {"type": "loopback"}]}`, criBridge)
	if err := os.WriteFile(filepath.Join(env.criCNIDir(), "10-urunc-cri.conflist"), []byte(conflist), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = exec.Command("ip", "link", "del", criBridge).Run()
		_ = os.RemoveAll("/var/lib/cni/networks/urunc-cri")
	})

	conn, err := grpc.NewClient("unix://"+env.socket(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	rs := runtimeapi.NewRuntimeServiceClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	// CRI reloads its CNI config asynchronously; wait until it is ready.
	waitFor(t, 30*time.Second, "CRI network ready", func() bool {
		st, err := rs.Status(ctx, &runtimeapi.StatusRequest{})
		if err != nil {
			return false
		}
		for _, c := range st.Status.Conditions {
			if c.Type == runtimeapi.NetworkReady {
				return c.Status
			}
		}
		return false
	})

	netnsBefore, _ := filepath.Glob("/var/run/netns/cni-*")
	logDir := t.TempDir()
	podConfig := &runtimeapi.PodSandboxConfig{
		Metadata:     &runtimeapi.PodSandboxMetadata{Name: "unikernel-pod", Namespace: "default", Uid: fmt.Sprint(time.Now().UnixNano())},
		LogDirectory: logDir,
		Linux:        &runtimeapi.LinuxPodSandboxConfig{},
	}
	pod, err := rs.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: podConfig, RuntimeHandler: "urunc"})
	if err != nil {
		t.Fatalf("RunPodSandbox: %v", err)
	}
	podID := pod.PodSandboxId
	removed := false
	t.Cleanup(func() {
		if !removed {
			_, _ = rs.StopPodSandbox(context.Background(), &runtimeapi.StopPodSandboxRequest{PodSandboxId: podID})
			_, _ = rs.RemovePodSandbox(context.Background(), &runtimeapi.RemovePodSandboxRequest{PodSandboxId: podID})
		}
		// Whether the test passed or not, the pod leaves nothing: no
		// shim, monitor, mount or socket, and no network namespace.
		assertNoLeftovers(t, podID)
		if after, _ := filepath.Glob("/var/run/netns/cni-*"); len(after) > len(netnsBefore) {
			t.Errorf("pod network namespaces left: %v (before: %v)", after, netnsBefore)
		}
	})
	podStatus, err := rs.PodSandboxStatus(ctx, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: podID})
	if err != nil {
		t.Fatal(err)
	}
	podIP := podStatus.Status.GetNetwork().GetIp()
	if !strings.HasPrefix(podIP, "198.18.30.") {
		t.Fatalf("pod IP %q, want one from 198.18.30.0/24", podIP)
	}

	created, err := rs.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{
		PodSandboxId: podID,
		Config: &runtimeapi.ContainerConfig{
			Metadata: &runtimeapi.ContainerMetadata{Name: "guest"},
			Image:    &runtimeapi.ImageSpec{Image: testimage.ImageName},
			Command:  []string{"/init"},
			Args:     []string{"httpd"},
			LogPath:  "guest.log",
			Linux:    &runtimeapi.LinuxContainerConfig{},
		},
		SandboxConfig: podConfig,
	})
	if err != nil {
		t.Fatalf("CreateContainer: %v", err)
	}
	cid := created.ContainerId
	if _, err := rs.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: cid}); err != nil {
		t.Fatalf("StartContainer: %v", err)
	}
	logFile := filepath.Join(logDir, "guest.log")
	waitForOutput(t, logFile, "URUNC_GUEST_HTTPD "+podIP, 90*time.Second)

	// One shim serves the pod: the pause container (runc) and the VM.
	if shims := processesOf(env.shimPath); len(shims) != 1 {
		t.Fatalf("%d shim processes for one pod, want 1: %v", len(shims), shims)
	}
	assertGuestPage(t, "http://"+podIP+"/")
	st, err := rs.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: cid})
	if err != nil || st.Status.State != runtimeapi.ContainerState_CONTAINER_RUNNING {
		t.Fatalf("container status: %v %v", st, err)
	}
	stats, err := rs.ContainerStats(ctx, &runtimeapi.ContainerStatsRequest{ContainerId: cid})
	if err != nil || stats.Stats.GetMemory().GetWorkingSetBytes().GetValue() == 0 {
		t.Fatalf("container stats: %v %v", stats, err)
	}

	// A plain sidecar beside the VM, run by runc in the same shim: exec
	// into it (a probe, kubectl exec) works through the CRI.
	sidecar, err := rs.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{
		PodSandboxId: podID,
		Config: &runtimeapi.ContainerConfig{
			Metadata: &runtimeapi.ContainerMetadata{Name: "sidecar"},
			Image:    &runtimeapi.ImageSpec{Image: testimage.PlainImageName},
			Command:  []string{"/bin/busybox", "sleep", "1000"},
			LogPath:  "sidecar.log",
			Linux:    &runtimeapi.LinuxContainerConfig{},
		},
		SandboxConfig: podConfig,
	})
	if err != nil {
		t.Fatalf("CreateContainer sidecar: %v", err)
	}
	if _, err := rs.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: sidecar.ContainerId}); err != nil {
		t.Fatalf("StartContainer sidecar: %v", err)
	}
	execd, err := rs.ExecSync(ctx, &runtimeapi.ExecSyncRequest{ContainerId: sidecar.ContainerId,
		Cmd: []string{"/bin/sh", "-c", "echo hello-from-the-sidecar; exit 3"}, Timeout: 30})
	if err != nil || execd.ExitCode != 3 || !strings.Contains(string(execd.Stdout), "hello-from-the-sidecar") {
		t.Fatalf("ExecSync in the sidecar: %v %+v", err, execd)
	}
	// The same through crictl, the client Kubernetes users reach for.
	out, err := exec.CommandContext(ctx, "crictl", "--runtime-endpoint", "unix://"+env.socket(),
		"exec", sidecar.ContainerId, "/bin/busybox", "echo", "hello-through-crictl").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "hello-through-crictl") {
		t.Fatalf("crictl exec into the sidecar: %v\n%s", err, out)
	}
	if _, err := rs.StopContainer(ctx, &runtimeapi.StopContainerRequest{ContainerId: sidecar.ContainerId, Timeout: 2}); err != nil {
		t.Fatalf("StopContainer sidecar: %v", err)
	}
	if _, err := rs.RemoveContainer(ctx, &runtimeapi.RemoveContainerRequest{ContainerId: sidecar.ContainerId}); err != nil {
		t.Fatalf("RemoveContainer sidecar: %v", err)
	}

	if _, err := rs.StopContainer(ctx, &runtimeapi.StopContainerRequest{ContainerId: cid, Timeout: 10}); err != nil {
		t.Fatalf("StopContainer: %v", err)
	}
	if _, err := rs.RemoveContainer(ctx, &runtimeapi.RemoveContainerRequest{ContainerId: cid}); err != nil {
		t.Fatalf("RemoveContainer: %v", err)
	}
	if _, err := rs.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: podID}); err != nil {
		t.Fatalf("StopPodSandbox: %v", err)
	}
	if _, err := rs.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: podID}); err != nil {
		t.Fatalf("RemovePodSandbox: %v", err)
	}
	removed = true
	waitFor(t, 15*time.Second, "the pod's shim to exit", func() bool { return len(processesOf(env.shimPath)) == 0 })
	if left := leftovers(cid); left != "" {
		t.Fatalf("leftovers: %s", left)
	}
	if m := regexp.MustCompile(`\S*` + podID[:12] + `\S*`).FindString(strings.Join(mountsUnder(env.dir), " ")); m != "" {
		t.Fatalf("pod mount left: %s", m)
	}
	if ipam, _ := filepath.Glob("/var/lib/cni/networks/urunc-cri/198.18.*"); len(ipam) > 0 {
		t.Fatalf("IPAM reservations left: %v", ipam)
	}
}
