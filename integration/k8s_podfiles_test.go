//go:build integration

package integration

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/urunc-dev/containerd-shim-urunc-v2/integration/testimage"
)

// podFilesObjects are what the pods of podFilesEachMode refer to: a
// ConfigMap (a volume and env values), one for envFrom, a Secret, a
// service account for the projected token and the CA a projected volume
// takes from a ConfigMap (the controller manager that makes
// kube-root-ca.crt does not run here).
const podFilesObjects = `apiVersion: v1
kind: ConfigMap
metadata: {name: podfiles}
data: {greeting: configmap-says-hello}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: podfiles-env}
data: {COLOR: deep blue}
---
apiVersion: v1
kind: Secret
metadata: {name: podfiles}
stringData: {password: s3cret-value}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: podfiles}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: podfiles-ca}
data: {ca.crt: podfiles-test-ca}
`

// podFilesPaths are the files the guest prints, in this order.
var podFilesPaths = []string{
	"/proc/cmdline", "/etc/resolv.conf", "/etc/hosts", "/etc/hostname",
	"/etc/config/greeting", "/etc/secret/password",
	"/var/run/secrets/kubernetes.io/serviceaccount/namespace",
	"/var/run/secrets/kubernetes.io/serviceaccount/ca.crt",
	"/var/run/secrets/kubernetes.io/serviceaccount/token",
}

// podFilesPod is a pod as a user writes it, run by runtimeClass from
// image: env values (one with spaces, one from the ConfigMap, one from
// the Secret, and envFrom a ConfigMap), DNS of its own, host aliases, a
// ConfigMap and a Secret volume, and the service-account token as the
// ServiceAccount admission plugin would project it (that plugin is off
// here). The guest prints each value and file, then powers off.
func podFilesPod(name, runtimeClass, image string) string {
	args := append([]string{"envcat", "POD_GREETING,POD_CM_GREETING,COLOR,POD_SECRET"}, podFilesPaths...)
	return fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata: {name: %s}
spec:
  nodeName: %s
  runtimeClassName: %s
  restartPolicy: Never
  terminationGracePeriodSeconds: 10
  serviceAccountName: podfiles
  dnsPolicy: None
  dnsConfig:
    nameservers: [198.18.43.53]
    searches: [podfiles.example, svc.podfiles.example]
    options: [{name: ndots, value: "2"}, {name: edns0}]
  hostAliases:
  - ip: 198.18.43.7
    hostnames: [pod-alias.example, pod-alias-two]
  containers:
  - name: guest
    image: %s
    imagePullPolicy: Never
    command: ["/init"]
    args: %s
    env:
    - {name: POD_GREETING, value: hello from the pod}
    - name: POD_CM_GREETING
      valueFrom: {configMapKeyRef: {name: podfiles, key: greeting}}
    - name: POD_SECRET
      valueFrom: {secretKeyRef: {name: podfiles, key: password}}
    envFrom:
    - configMapRef: {name: podfiles-env}
    volumeMounts:
    - {name: config, mountPath: /etc/config}
    - {name: secret, mountPath: /etc/secret}
    - {name: token, mountPath: /var/run/secrets/kubernetes.io/serviceaccount, readOnly: true}
  volumes:
  - name: config
    configMap: {name: podfiles}
  - name: secret
    secret: {secretName: podfiles, defaultMode: 0400}
  - name: token
    projected:
      sources:
      - serviceAccountToken: {path: token, expirationSeconds: 3600}
      - configMap: {name: podfiles-ca, items: [{key: ca.crt, path: ca.crt}]}
      - downwardAPI: {items: [{path: namespace, fieldRef: {fieldPath: metadata.namespace}}]}
`, name, k8sNodeName, runtimeClass, image, yamlList(args))
}

// podFilesEachMode runs podFilesPod in each rootfs mode a Linux guest has
// here: initrd (the test guest's initrd, the pod's files appended), block
// (RuntimeClass urunc-block: the container's blockfile snapshot as its
// disk, the files copied in), 9p and virtiofs (the container's rootfs
// shared, the volumes bound into it). virtiofs is chosen by the host
// config naming virtiofsd, which the shim reads at each Create: that pod
// runs last, alone, under it. Each pod must end Succeeded, exit code 0,
// with no restart, and its guest must have printed every value.
func (n *k8sNode) podFilesEachMode(t *testing.T) {
	n.apply(t, podFilesObjects)
	type mode struct {
		name, runtimeClass, image string
		root                      string // what the guest's /proc/cmdline shows of its root
		copied                    bool   // the pod's files are a copy (initrd, block)
		virtiofs                  bool
	}
	modes := []mode{
		{"initrd", "urunc", testimage.ImageName, "root=/dev/ram0", true, false},
		{"block", "urunc-block", testimage.RootfsImageName, "root=/dev/vda", true, false},
		{"9p", "urunc", testimage.RootfsImageName, "rootfstype=9p", false, false},
	}
	if _, err := os.Stat(virtiofsd); err == nil {
		modes = append(modes, mode{"virtiofs", "urunc", testimage.RootfsImageName, "rootfstype=virtiofs", false, true})
	} else {
		t.Logf("no virtiofsd at %s: the shared root is tested over 9p only", virtiofsd)
	}
	run := func(ms []mode) {
		for _, m := range ms {
			n.apply(t, podFilesPod("podfiles-"+m.name, m.runtimeClass, m.image))
		}
		for _, m := range ms {
			n.checkPodFiles(t, "podfiles-"+m.name, m.root, m.copied)
		}
		// Once the pods are gone: no helper, no loop device of a
		// blockfile snapshot.
		if v := processesOf(virtiofsd); len(v) > 0 {
			t.Errorf("virtiofsd left: %v", v)
		}
		if l := loopDevicesUnder(env.dir); len(l) > 0 {
			t.Errorf("loop devices left: %v", l)
		}
	}
	var shared9p []mode
	var withVirtiofs []mode
	for _, m := range modes {
		if m.virtiofs {
			withVirtiofs = append(withVirtiofs, m)
		} else {
			shared9p = append(shared9p, m)
		}
	}
	run(shared9p)
	if len(withVirtiofs) > 0 {
		if err := os.WriteFile(env.hostConfig, []byte(k8sHostConfig()+virtiofsdHostConfig()), 0o644); err != nil {
			t.Fatal(err)
		}
		defer func() { _ = os.WriteFile(env.hostConfig, []byte(k8sHostConfig()), 0o644) }()
		run(withVirtiofs)
	}
}

// checkPodFiles waits for the pod to end, asserts its status and what its
// guest printed, deletes it and checks that nothing of it is left.
func (n *k8sNode) checkPodFiles(t *testing.T, name, root string, copied bool) {
	t.Helper()
	p := n.waitPod(t, name, 4*time.Minute, "the guest to end", func(p *k8sPod) bool {
		return p.Status.Phase == "Succeeded" || p.Status.Phase == "Failed"
	})
	cs := p.container("guest")
	if p.Status.Phase != "Succeeded" || cs == nil || cs.State.Terminated == nil || cs.State.Terminated.ExitCode != 0 || cs.RestartCount != 0 {
		status, _ := json.MarshalIndent(p.Status, "", " ")
		t.Errorf("pod %s: want Succeeded, exit code 0, no restart; status:\n%s", name, status)
	}
	logs := n.kubectl(t, "logs", name)
	mode := "644"
	if copied {
		// A copy of a read-only volume has no write bit.
		mode = "444"
	}
	wants := []string{
		root,
		"URUNC_GUEST_ENV POD_GREETING=hello from the pod",
		"URUNC_GUEST_ENV POD_CM_GREETING=configmap-says-hello",
		"URUNC_GUEST_ENV COLOR=deep blue",
		"URUNC_GUEST_ENV POD_SECRET=s3cret-value",
		"nameserver 198.18.43.53",
		"search podfiles.example svc.podfiles.example",
		"198.18.43.7\tpod-alias.example\tpod-alias-two",
		"URUNC_GUEST_CAT /etc/hostname: " + name,
		"URUNC_GUEST_CAT /etc/config/greeting: configmap-says-hello",
		"URUNC_GUEST_MODE /etc/config/greeting: " + mode,
		"URUNC_GUEST_CAT /etc/secret/password: s3cret-value",
		"URUNC_GUEST_MODE /etc/secret/password: 400",
		"URUNC_GUEST_CAT /var/run/secrets/kubernetes.io/serviceaccount/namespace: default",
		"URUNC_GUEST_CAT /var/run/secrets/kubernetes.io/serviceaccount/ca.crt: podfiles-test-ca",
		// A JWT: its header is base64url JSON.
		"URUNC_GUEST_CAT /var/run/secrets/kubernetes.io/serviceaccount/token: eyJ",
		"URUNC_GUEST_DONE",
	}
	var missing []string
	for _, w := range wants {
		if !strings.Contains(logs, w) {
			missing = append(missing, w)
		}
	}
	// The kubelet gathers the options in a map: their order varies.
	if !regexp.MustCompile(`options (ndots:2 edns0|edns0 ndots:2)`).MatchString(logs) {
		missing = append(missing, "options ndots:2 edns0 (either order)")
	}
	if len(missing) > 0 {
		t.Errorf("pod %s: the guest did not print %q; its lines:\n%s", name, missing, guestLines(logs))
	} else {
		t.Logf("pod %s (%s): %s, exit code 0; env, resolv.conf, hosts, hostname, ConfigMap (mode %s), Secret and projected token reached the guest",
			name, root, p.Status.Phase, mode)
	}
	id := strings.TrimPrefix(cs.ContainerID, "containerd://")
	n.kubectl(t, "delete", "pod", name, "--wait", "--timeout", "120s")
	waitFor(t, 30*time.Second, "the pod's monitor to exit", func() bool { return len(podMonitors(p.Metadata.UID)) == 0 })
	bundle := filepath.Join(env.stateDir(), "io.containerd.runtime.v2.task", criNamespace, id)
	waitFor(t, 30*time.Second, "the container's bundle to go", func() bool {
		_, err := os.Stat(bundle)
		return id != "" && os.IsNotExist(err)
	})
	if m := mountsUnder(bundle); len(m) > 0 {
		t.Errorf("pod %s: mounts left under its bundle: %v", name, m)
	}
}
