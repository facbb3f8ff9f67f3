//go:build integration

package integration

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/urunc-dev/containerd-shim-urunc-v2/integration/testimage"
	"golang.org/x/sys/unix"
)

// firecracker, cloud-hypervisor and solo5-hvt need KVM, which this
// machine lacks (and the first two do not install here), so they are
// played by the stand-in, launched through containerd as the real ones
// would be: the shim builds the monitor's command line (and firecracker's
// config file), its confined root and its tap, and the stand-in opens what
// they name there. A stop of firecracker or cloud-hypervisor is their
// power-down request over their own API, firecracker's on the socket it
// binds in its root, cloud-hypervisor's on the one it inherits. What is
// not run is the monitors themselves.
func TestKVMMonitorsUnderTheStandIn(t *testing.T) {
	withKVMNode(t)
	var cfg strings.Builder
	for _, m := range []string{"firecracker", "clh", "hvt", "spt"} {
		fmt.Fprintf(&cfg, "[monitors.%s]\nbinary_path = %q\n\n", m, env.standin)
	}
	fmt.Fprintf(&cfg, "[runtime]\nstop_grace_s = 6\nstate_dir = %q\n", env.qmpDir)
	cfg.WriteString(virtiofsdHostConfig())
	withHostConfig(t, cfg.String())
	t.Run("with an API", testMonitorsWithAPI)
	t.Run("built by urunc", testBuiltImages)
	t.Run("firecracker's API socket a symlink out of its root", testFirecrackerSymlinkedAPI)
	t.Run("the guest agent over hybrid vsock", func(t *testing.T) {
		withHostConfig(t, cfg.String()+"\n[guests.linux]\nagent = true\n")
		testAgentOverHybridVsock(t)
	})
}

// The guest agent's channel under firecracker and cloud-hypervisor: the
// stand-in binds the vsock device's socket where each is told to, in its
// confined root, closes the shim's first CONNECT as a monitor does while
// the guest boots, and answers the next with a guest agent that reports
// status 7: the container's status is 7 while the monitor exits 0, so it
// came over the channel, reached through the monitor's root.
func testAgentOverHybridVsock(t *testing.T) {
	// The stand-in boots nothing: the kernel is a file that the shim's
	// Create-time check finds virtio's vsock transport built into.
	kernel := filepath.Join(t.TempDir(), "vmlinux")
	if err := os.WriteFile(kernel, []byte("\x7fELF\x02\x01\x01 vmw_vsock_virtio_transport\x00"), 0o644); err != nil {
		t.Fatal(err)
	}
	const vsockImage = "docker.io/urunc/test-guest-vsock:latest"
	o := guestImageOptions()
	o.Name, o.Kernel, o.ModulesDir, o.Modules = vsockImage, kernel, "", nil
	path := filepath.Join(t.TempDir(), "vsock-guest.tar")
	if err := testimage.WriteOCIArchive(path, o); err != nil {
		t.Fatal(err)
	}
	ctr(t, "images", "import", path)
	defer ctr(t, "images", "rm", vsockImage)
	for _, monitor := range []string{"firecracker", "clh"} {
		t.Run(monitor, func(t *testing.T) {
			id := newID(t)
			log := runDetachedImage(t, id, vsockImage, []string{"--annotation", "com.urunc.unikernel.hypervisor=" + monitor}, "/init", "sleep")
			waitFor(t, time.Minute, "the guest's end", func() bool { return taskStatus(t, id) == "STOPPED" })
			out, _ := os.ReadFile(log)
			for _, want := range []string{
				"STANDIN_VSOCK " + monitor + " CONNECT 1023\nSTANDIN_VSOCK " + monitor + " CONNECT 1023\n",
				"STANDIN_AGENT_SHUTDOWN", "STANDIN_AGENT_DONE",
			} {
				if !strings.Contains(string(out), want) {
					t.Errorf("the monitor's output lacks %q:\n%s", want, out)
				}
			}
			if _, code := taskState(t, id); code != 7 {
				t.Errorf("exit %d, want the agent's 7\n%s", code, out)
			}
			ctr(t, "task", "rm", id)
			ctr(t, "container", "rm", id)
			assertNoLeftovers(t, id)
		})
	}
}

// A firecracker whose guest took it over leaves a symlink to a host
// socket where its API socket goes (its /tmp is 1777). SIGTERM's
// power-down never reaches that host socket: the shim opens the socket
// inside the monitor's root without following symlinks, finds none, and
// passes the signal on to the monitor.
func testFirecrackerSymlinkedAPI(t *testing.T) {
	host := filepath.Join(t.TempDir(), "host-only.sock")
	ln, err := net.Listen("unix", host)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	reached := make(chan string, 1)
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		defer conn.Close()
		buf := make([]byte, 512)
		n, _ := conn.Read(buf)
		reached <- string(buf[:n])
	}()
	id := newID(t)
	log := runDetachedImage(t, id, image, []string{"--annotation", "com.urunc.unikernel.hypervisor=firecracker"}, "/init", "symlink-api", host)
	waitForOutput(t, log, "STANDIN_READY", 30*time.Second)
	ctr(t, "task", "kill", "-s", "SIGTERM", id)
	select {
	case req := <-reached:
		t.Errorf("the power-down reached a host socket outside the monitor's root: %q", req)
	case <-waitForOutputChan(log, "STANDIN_SIGTERM", 15*time.Second):
		if out, _ := os.ReadFile(log); !strings.Contains(string(out), "STANDIN_SIGTERM") {
			t.Errorf("SIGTERM never reached the monitor:\n%s", out)
		}
	}
	killAndRemove(t, id)
}

// waitForOutputChan closes its channel once the file holds want, or
// after timeout.
func waitForOutputChan(path, want string, timeout time.Duration) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		for deadline := time.Now().Add(timeout); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
			if data, _ := os.ReadFile(path); strings.Contains(string(data), want) {
				return
			}
		}
	}()
	return done
}

// firecracker and cloud-hypervisor boot a Linux guest, their monitor
// chosen by annotation, and stop it through their API. The initrd guest
// is the test image, with and without a network; the guest whose
// container rootfs is its root (testimage.RootfsImageName) gets it as a
// disk on the blockfile snapshotter, and over virtiofs from overlayfs
// under cloud-hypervisor (firecracker shares no directory).
func testMonitorsWithAPI(t *testing.T) {
	const grace = 6 * time.Second
	for _, tc := range []struct {
		name, monitor string
		subnet        int // a namespace with a veth of 198.18.subnet.0/24, or none
		snapshotter   string
		rootfsGuest   bool
		want          []string // lines of the monitor's output after STANDIN_MONITOR's
	}{
		{name: "initrd", monitor: "firecracker"},
		{name: "initrd network", monitor: "firecracker", subnet: 13},
		{name: "block", monitor: "firecracker", snapshotter: "blockfile", rootfsGuest: true,
			want: []string{"STANDIN_DRIVE firecracker rootfs /guest/disks/rootfs ext4"}},
		{name: "initrd", monitor: "clh"},
		{name: "initrd network", monitor: "clh", subnet: 14},
		{name: "block", monitor: "clh", snapshotter: "blockfile", rootfsGuest: true,
			want: []string{"STANDIN_DRIVE clh rootfs /guest/disks/rootfs ext4"}},
		{name: "virtiofs", monitor: "clh", rootfsGuest: true,
			want: []string{"STANDIN_FS clh fs0 connected memory size=256M,shared=on"}},
	} {
		t.Run(tc.monitor+" "+tc.name, func(t *testing.T) {
			flags := []string{"--annotation", "com.urunc.unikernel.hypervisor=" + tc.monitor}
			var n *testNet
			if tc.subnet != 0 {
				n = newTestNet(t, tc.subnet)
				flags = append(flags, n.withNS()...)
			}
			img, initrd := image, "/guest/initrd"
			if tc.rootfsGuest {
				img, initrd = testimage.RootfsImageName, ""
			}
			if tc.snapshotter != "" {
				flags = append(flags, "--snapshotter", tc.snapshotter)
			}
			id := newID(t)
			log := runDetachedImage(t, id, img, flags, "/init", "sleep")
			waitForOutput(t, log, "STANDIN_READY", 30*time.Second)
			// What it was told of, opened in its confined root: the
			// kernel, the initrd, /dev/kvm, its disk or shared directory
			// and, with a network, the tap.
			out, _ := os.ReadFile(log)
			want := append([]string{fmt.Sprintf("STANDIN_MONITOR %s kernel /guest/kernel initrd %s kvm yes seccomp 0", tc.monitor, initrd)}, tc.want...)
			for _, w := range want {
				if !strings.Contains(string(out), w) {
					t.Fatalf("the monitor's output lacks %q:\n%s", w, out)
				}
			}
			if n != nil {
				want := fmt.Sprintf(" attached ip=%s::%s:255.255.255.0:", n.guestIP, n.clientIP)
				if !strings.Contains(string(out), "STANDIN_NET "+tc.monitor+" ") || !strings.Contains(string(out), want) {
					t.Fatalf("the monitor attached no tap, or the guest lacks %q:\n%s", want, out)
				}
			} else if strings.Contains(string(out), "STANDIN_NET") {
				t.Fatalf("a NIC without a network:\n%s", out)
			}
			start := time.Now()
			ctr(t, "task", "kill", "-s", "SIGTERM", id)
			waitFor(t, 2*grace, "stop", func() bool { return taskStatus(t, id) == "STOPPED" })
			took := time.Since(start)
			out, _ = os.ReadFile(log)
			if !strings.Contains(string(out), "STANDIN_POWERDOWN "+tc.monitor) {
				t.Errorf("SIGTERM sent no power-down request over %s's API:\n%s", tc.monitor, out)
			}
			if _, code := taskState(t, id); code != 0 {
				t.Errorf("exit %d, want 0 from a clean power-down", code)
			}
			if took >= grace {
				t.Errorf("took %s, not before the %s grace period", took, grace)
			}
			ctr(t, "task", "rm", id)
			ctr(t, "container", "rm", id)
			if n != nil {
				n.assertNamespaceClean(t)
			}
		})
	}
}

// Unikernel images made by `urunc build`: mirage and rumprun under
// solo5's tenders, and unikraft under firecracker. Their guest's own exit
// is the container's. hvt alone of the tenders gets /dev/kvm. With or
// without --seccomp, an hvt that says it is 0.9 (the stand-in's --version,
// run by the shim through its reaper) does not filter itself and gets the
// project's filter. hvt also runs with a network (the tap, and the guest's
// --ipv4), and is stopped with SIGTERM, which it has no API for.
func testBuiltImages(t *testing.T) {
	kernel := filepath.Join(t.TempDir(), "unikernel")
	if err := os.WriteFile(kernel, testimage.MultibootKernel(), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		guest, monitor string
		played, kvm    string // the monitor the stand-in says it plays; /dev/kvm in its root
		seccomp        bool
		subnet         int
	}{
		{"mirage", "hvt", "solo5", "yes", true, 0},
		{"mirage", "hvt", "solo5", "yes", false, 15},
		{"mirage", "spt", "solo5", "no", false, 0},
		{"rumprun", "hvt", "solo5", "yes", false, 0},
		{"unikraft", "firecracker", "firecracker", "yes", false, 0},
	} {
		t.Run(fmt.Sprintf("%s %s network %v seccomp %v", tc.guest, tc.monitor, tc.subnet != 0, tc.seccomp), func(t *testing.T) {
			name := "docker.io/urunc/test-" + tc.guest + "-" + tc.monitor + ":latest"
			if out, err := urunc(t, "build", "-t", name, "-type", tc.guest, "-monitor", tc.monitor, "-kernel", kernel,
				"-import", "-address", env.socket(), "-namespace", namespace); err != nil {
				t.Fatalf("urunc build: %v\n%s", err, out)
			}
			t.Cleanup(func() { _, _ = ctrRaw("images", "rm", name) })
			id := newID(t)
			// hvt 0.9 gets the project's filter, with or without a
			// profile in the spec; the stand-in playing spt or
			// firecracker, which filter themselves, installs none.
			mode := "0"
			if tc.monitor == "hvt" {
				mode = "2"
			}
			run := []string{"run", "--rm", "--runtime", runtimeName}
			if tc.seccomp {
				run = append(run, "--seccomp")
			}
			want := fmt.Sprintf("STANDIN_MONITOR %s kernel /guest/kernel initrd  kvm %s seccomp %s", tc.played, tc.kvm, mode)
			if tc.subnet == 0 {
				out, err := ctrRaw(append(run, name, id, "exit", "7")...)
				if code := exitCode(err); code != 7 {
					t.Errorf("exit status %d (%v), want the guest's 7\n%s", code, err, out)
				}
				if !strings.Contains(out, want) {
					t.Errorf("the monitor's output lacks %q:\n%s", want, out)
				}
				return
			}
			n := newTestNet(t, tc.subnet)
			logFile := runDetachedImage(t, id, name, n.withNS(), "sleep")
			waitForOutput(t, logFile, "STANDIN_READY", 30*time.Second)
			out, _ := os.ReadFile(logFile)
			wantNet := fmt.Sprintf(" attached --ipv4=%s/24 --ipv4-gateway=%s", n.guestIP, n.clientIP)
			if !strings.Contains(string(out), want) || !strings.Contains(string(out), wantNet) {
				t.Errorf("the monitor's output lacks %q or %q:\n%s", want, wantNet, out)
			}
			// hvt has no API: SIGTERM is passed on to it, and it ends
			// as its tender does on the signal.
			ctr(t, "task", "kill", "-s", "SIGTERM", id)
			waitFor(t, 5*time.Second, "stop", func() bool { return taskStatus(t, id) == "STOPPED" })
			if _, code := taskState(t, id); code != 1 {
				t.Errorf("exit %d, want the tender's 1 on SIGTERM", code)
			}
			if out, _ := os.ReadFile(logFile); !strings.Contains(string(out), "Exiting on signal 15") {
				t.Errorf("SIGTERM did not reach the tender:\n%s", out)
			}
			ctr(t, "task", "rm", id)
			ctr(t, "container", "rm", id)
			n.assertNamespaceClean(t)
		})
	}
}

// withKVMNode gives a host without KVM a placeholder /dev/kvm (the real
// node's numbers, with no driver behind it) for the rest of the test:
// firecracker and cloud-hypervisor are refused at Create without one, and
// the stand-in that plays them never opens it. A host with KVM keeps its
// own.
func withKVMNode(t *testing.T) {
	t.Helper()
	if _, err := os.Stat("/dev/kvm"); err == nil {
		return
	}
	if err := unix.Mknod("/dev/kvm", unix.S_IFCHR|0o600, int(unix.Mkdev(10, 232))); err != nil {
		t.Fatalf("placeholder /dev/kvm: %v", err)
	}
	t.Cleanup(func() {
		if err := os.Remove("/dev/kvm"); err != nil {
			t.Errorf("remove the placeholder /dev/kvm: %v", err)
		}
	})
}
