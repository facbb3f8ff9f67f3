//go:build integration

package integration

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/urunc-dev/containerd-shim-urunc-v2/integration/testimage"
)

// What a pod hands a container reaches the guest, in each rootfs mode,
// through crictl as the kubelet would drive it: the pod's DNS config
// (CRI writes resolv.conf), an /etc/hosts the kubelet wrote with a host
// alias (a bind of a file at /etc/hosts), an environment variable with
// spaces, and a ConfigMap-like bind of a file. The guest prints each.
func TestCRIPodFilesReachTheGuest(t *testing.T) {
	criNetwork(t)
	for _, tc := range []struct {
		name, handler, image string
		// kernelHostname: the guest's kernel sets its hostname from ip=
		// (CONFIG_IP_PNP, built into the rootfs guests' kernel; the
		// initrd guest's Debian kernel has it off).
		kernelHostname bool
	}{
		{"initrd", "urunc", testimage.ImageName, false},
		{"shared", "urunc", testimage.RootfsImageName, true},
		{"block", "urunc-block", testimage.RootfsImageName, true},
	} {
		t.Run(tc.name, func(t *testing.T) { podFilesReachGuest(t, tc.handler, tc.image, tc.kernelHostname) })
	}
}

func podFilesReachGuest(t *testing.T, handler, image string, kernelHostname bool) {
	dir := t.TempDir()
	hosts := filepath.Join(dir, "etc-hosts")
	// As the kubelet writes it for hostAliases.
	if err := os.WriteFile(hosts, []byte("127.0.0.1\tlocalhost\n# Entries added by HostAliases.\n198.18.7.7\tpod-alias.example\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	configMap := filepath.Join(dir, "configmap", "greeting")
	if err := os.MkdirAll(filepath.Dir(configMap), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(configMap, []byte("configmap-says-hello\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	pod := startCRIPod(t, handler, "podfiles-"+handler, map[string]any{
		"hostname":   "podfiles-host",
		"dns_config": map[string]any{"servers": []string{"198.18.30.53"}, "searches": []string{"podfiles.example"}},
	})
	logDir, podConfig, podID := pod.logDir, pod.config, pod.id
	containerConfig := writeJSON(t, filepath.Join(dir, "guest.json"), map[string]any{
		"metadata": map[string]string{"name": "guest"}, "image": map[string]string{"image": image},
		"command": []string{"/init", "envcat", "POD_GREETING", "/etc/resolv.conf", "/etc/hosts", "/etc/config/greeting", "/etc/hostname"},
		"envs":    []map[string]string{{"key": "POD_GREETING", "value": "hello from the pod"}},
		"mounts": []map[string]any{
			{"container_path": "/etc/hosts", "host_path": hosts},
			{"container_path": "/etc/config/greeting", "host_path": configMap, "readonly": true},
		},
		"log_path": "guest.log", "linux": map[string]any{},
	})
	guest := crictl(t, "create", "--no-pull", podID, containerConfig, podConfig)
	crictl(t, "start", guest)
	logFile := filepath.Join(logDir, "guest.log")
	waitForOutput(t, logFile, "URUNC_GUEST_DONE", 120*time.Second)
	data, _ := os.ReadFile(logFile)
	log := string(data)
	t.Logf("guest's output:\n%s", guestLines(log))
	wants := []string{
		"URUNC_GUEST_ENV POD_GREETING=hello from the pod",
		"nameserver 198.18.30.53",
		"search podfiles.example",
		"198.18.7.7\tpod-alias.example",
		"URUNC_GUEST_CAT /etc/config/greeting: configmap-says-hello",
		"URUNC_GUEST_CAT /etc/hostname: podfiles-host",
	}
	if kernelHostname {
		wants = append(wants, "URUNC_GUEST_HOSTNAME podfiles-host")
	}
	for _, want := range wants {
		if !strings.Contains(log, want) {
			t.Errorf("the guest did not print %q", want)
		}
	}
}

// guestLines keeps the guest's own lines of a CRI log, without the
// kernel's.
func guestLines(log string) string {
	var out []string
	for _, l := range strings.Split(log, "\n") {
		if strings.Contains(l, "URUNC_GUEST") || strings.Contains(l, "nameserver") || strings.Contains(l, "search ") || strings.Contains(l, "options ") || strings.Contains(l, "pod-alias") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
