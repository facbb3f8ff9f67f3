//go:build integration

package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// execIntoTheVM: kubectl exec into the VM of a pod, through its guest
// agent. The pod's exec readiness probe runs in the guest: it fails until
// a kubectl exec creates the file it tests, and then the pod turns Ready.
// kubectl exec reads the guest's own kernel, gives its exit status, takes
// stdin, and -it sizes a terminal in the guest.
func (n *k8sNode) execIntoTheVM(t *testing.T) {
	importAgentImage(t)
	if err := os.WriteFile(env.hostConfig, []byte(k8sHostConfig()+"\n[guests.linux]\nagent = true\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.WriteFile(env.hostConfig, []byte(k8sHostConfig()), 0o644) })
	n.apply(t, fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata: {name: execpod}
spec:
  nodeName: %s
  runtimeClassName: urunc
  terminationGracePeriodSeconds: 10
  containers:
  - name: guest
    image: %s
    imagePullPolicy: Never
    command: ["/init", "sleep"]
    readinessProbe:
      exec: {command: ["/bin/sh", "-c", "test -e /tmp/ready"]}
      periodSeconds: 1
      failureThreshold: 1
`, k8sNodeName, agentImage))
	n.waitPod(t, "execpod", 3*time.Minute, "the guest running and its probe failing", func(p *k8sPod) bool {
		cs := p.container("guest")
		return cs != nil && cs.State.Running != nil && n.probeCount("execpod", "guest", "Readiness", "failed") >= 1
	})
	if p, _ := n.pod(t, "execpod"); conditionTrue(p.Status.Conditions, "Ready") {
		t.Fatal("pod execpod Ready before its probe's file exists")
	}
	n.kubectl(t, "exec", "execpod", "--", "/bin/busybox", "touch", "/tmp/ready")
	n.waitPod(t, "execpod", time.Minute, "Ready once the exec made the probe's file", func(p *k8sPod) bool {
		return conditionTrue(p.Status.Conditions, "Ready")
	})

	// The guest's kernel, not the node's.
	host, _ := exec.Command("uname", "-r").Output()
	guestKernel := strings.TrimSpace(n.kubectl(t, "exec", "execpod", "--", "/bin/busybox", "uname", "-r"))
	if guestKernel == "" || guestKernel == strings.TrimSpace(string(host)) {
		t.Fatalf("kubectl exec uname -r: %q, the node's is %q", guestKernel, host)
	}
	if out, err := n.kubectlRaw("", "exec", "execpod", "--", "/bin/sh", "-c", "exit 3"); exitCode(err) != 3 {
		t.Fatalf("kubectl exec of a command that exits 3: %v\n%s", err, out)
	}
	if out, err := n.kubectlRaw("piped-in line\n", "exec", "-i", "execpod", "--", "/bin/sh", "-c", "cat; echo stdin-closed"); err != nil ||
		!strings.Contains(out, "piped-in line\nstdin-closed") {
		t.Fatalf("kubectl exec -i: %v\n%q", err, out)
	}
	line := "stty rows 33 cols 111; " + filepath.Join(k8sDir, "kubectl") + " --kubeconfig " + n.kubeconfig + " exec -it execpod -- " +
		`/bin/sh -c 'i=0; until [ -n "$(stty size 2>/dev/null)" ] || [ $i = 600 ]; do sleep 0.1; i=$((i+1)); done; stty size'`
	if out, err := exec.Command("script", "-qec", line, "/dev/null").CombinedOutput(); err != nil || !strings.Contains(string(out), "33 111") {
		t.Fatalf("kubectl exec -it: %v\n%q", err, out)
	}
	t.Logf("kubectl exec into the VM: kernel %s; readiness probes passed %d, failed %d", guestKernel,
		n.probeCount("execpod", "guest", "Readiness", "successful"), n.probeCount("execpod", "guest", "Readiness", "failed"))
	n.kubectl(t, "delete", "pod", "execpod", "--wait", "--timeout", "120s")
}
