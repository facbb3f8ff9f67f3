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

	"github.com/google/nftables"
	"golang.org/x/sys/unix"

	"github.com/urunc-dev/containerd-shim-urunc-v2/integration/testimage"
)

// nftTablesIn lists the nftables tables of the network namespace at path.
func nftTablesIn(t *testing.T, path string) []string {
	t.Helper()
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("open network namespace %s: %v", path, err)
	}
	defer unix.Close(fd)
	conn, err := nftables.New(nftables.WithNetNSFd(fd))
	if err != nil {
		t.Fatalf("nftables in %s: %v", path, err)
	}
	tables, err := conn.ListTables()
	if err != nil {
		t.Fatalf("nftables tables in %s: %v", path, err)
	}
	var names []string
	for _, tb := range tables {
		names = append(names, tb.Name)
	}
	return names
}

// guestPortsAnnotation is what the kubelet records for a container whose
// spec declares port 80.
var guestPortsAnnotation = map[string]string{"io.kubernetes.container.ports": `[{"name":"http","containerPort":80,"protocol":"TCP"}]`}

// A sidecar reaches the guest's server as containers of one pod reach
// each other: at the pod IP, and at 127.0.0.1 on the port the pod
// declares for the guest; sidecar-to-sidecar localhost still works on
// other ports, and the host still reaches the guest at the pod IP. The
// pod-local path is the guest's container's: its two nftables tables go
// when the container is deleted while the pod lives on, a second guest in
// the same sandbox makes two again (never four), and nothing stays once
// the pod goes.
func TestCRISidecarReachesGuest(t *testing.T) {
	criNetwork(t)

	pod := startCRIPod(t, "urunc", "sidecar-pod", nil)
	dir, logDir, podConfig, podID, podIP := pod.dir, pod.logDir, pod.config, pod.id, pod.ip
	nsPath := podNetns(t, "sidecar-pod")

	container := func(name, image string, command []string, annotations map[string]string) string {
		return writeJSON(t, filepath.Join(dir, name+".json"), map[string]any{
			"metadata": map[string]string{"name": name}, "image": map[string]string{"image": image},
			"command": command, "log_path": name + ".log", "linux": map[string]any{}, "annotations": annotations,
		})
	}
	// The sidecar runs before the guest, as pods often start.
	sidecar := crictl(t, "create", "--no-pull", podID, container("sidecar", testimage.PlainImageName, []string{"/bin/busybox", "sleep", "1000"}, nil), podConfig)
	crictl(t, "start", sidecar)
	inSidecar := func(script string) (string, error) {
		out, errOut, err := crictlRaw("exec", "--sync", sidecar, "/bin/busybox", "sh", "-c", script)
		if err != nil {
			return out, fmt.Errorf("%w: %s", err, errOut)
		}
		return out, nil
	}
	// The sidecar's own server at localhost, on a port the guest does not
	// declare.
	if out, err := inSidecar("mkdir -p /tmp/www && echo the-sidecars-page > /tmp/www/index.html && /bin/busybox httpd -p 127.0.0.1:8080 -h /tmp/www"); err != nil {
		t.Fatalf("the sidecar's httpd: %v\n%s", err, out)
	}

	startGuest := func(name string) string {
		t.Helper()
		id := crictl(t, "create", "--no-pull", podID, container(name, testimage.ImageName, []string{"/init", "httpd"}, guestPortsAnnotation), podConfig)
		crictl(t, "start", id)
		waitForOutput(t, filepath.Join(logDir, name+".log"), "URUNC_GUEST_HTTPD "+podIP, 90*time.Second)
		return id
	}
	fromSidecar := func(url, want string) {
		t.Helper()
		var out string
		var err error
		// The guest's httpd listens a moment after its line. busybox
		// 1.35's wget -T crashes (status 139): timeout bounds it instead.
		for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); {
			if out, err = inSidecar("/bin/busybox timeout 10 /bin/busybox wget -qO- " + url); err == nil && strings.Contains(out, want) {
				return
			}
			time.Sleep(time.Second)
		}
		diag, _ := exec.Command("nsenter", "--net="+nsPath, "sh", "-c",
			"ip -br addr; ip route; ip neigh; for l in $(ip -o link | cut -d: -f2 | cut -d@ -f1); do tc -s filter show dev $l ingress; done; cat /proc/net/nf_conntrack; nstat -az | grep -v ' 0 '").CombinedOutput()
		probe, perr := inSidecar("/bin/busybox ping -c 1 -W 2 " + podIP + "; printf 'GET / HTTP/1.0\\r\\n\\r\\n' | /bin/busybox nc -w 3 " + podIP + " 80; echo nc=$?")
		t.Fatalf("the sidecar's fetch of %s: %v\n%s\nping and nc from the sidecar (%v):\n%s\nthe pod's network namespace:\n%s", url, err, out, perr, probe, diag)
	}
	assertPodLocal := func(guest string) {
		t.Helper()
		assertGuestPage(t, "http://"+podIP+"/")
		fromSidecar("http://"+podIP+"/", "hello from the urunc guest")
		fromSidecar("http://127.0.0.1:80/", "hello from the urunc guest")
		fromSidecar("http://127.0.0.1:8080/", "the-sidecars-page")
		if tables := nftTablesIn(t, nsPath); len(tables) != 2 {
			t.Fatalf("nftables tables in the pod with guest %s: %v, want its two", guest, tables)
		}
	}
	removeGuest := func(guest string) {
		t.Helper()
		crictl(t, "stop", "-t", "20", guest)
		crictl(t, "rm", guest)
		if tables := nftTablesIn(t, nsPath); len(tables) != 0 {
			t.Fatalf("nftables tables left in the pod after guest %s was deleted: %v", guest, tables)
		}
		fromSidecar("http://127.0.0.1:8080/", "the-sidecars-page")
	}

	guest := startGuest("guest")
	assertPodLocal(guest)
	// A figure: a request from the sidecar to the guest at the pod IP,
	// against one to the sidecar's own server at localhost.
	perRequest := func(url string) time.Duration {
		const n = 20
		start := time.Now()
		if out, err := inSidecar(fmt.Sprintf("for i in $(/bin/busybox seq %d); do /bin/busybox timeout 10 /bin/busybox wget -qO- %s >/dev/null || exit 1; done", n, url)); err != nil {
			t.Fatalf("%d fetches of %s: %v\n%s", n, url, err, out)
		}
		return time.Since(start) / n
	}
	t.Logf("a sidecar's request (wget, crictl exec amortised over 20): to the guest at the pod IP %s, at 127.0.0.1 %s; to the sidecar's own server at 127.0.0.1 %s",
		perRequest("http://"+podIP+"/").Round(time.Microsecond), perRequest("http://127.0.0.1:80/").Round(time.Microsecond),
		perRequest("http://127.0.0.1:8080/").Round(time.Microsecond))
	removeGuest(guest)

	// The pod's next guest, as a restart in the same sandbox: its own
	// path, nothing of the first's.
	again := startGuest("again")
	assertPodLocal(again)
	removeGuest(again)

	crictl(t, "stop", "-t", "2", sidecar)
	crictl(t, "rm", sidecar)
	pod.remove(t)
	if _, err := os.Stat(nsPath); err == nil {
		t.Errorf("the pod's network namespace %s is left", nsPath)
	}
}
