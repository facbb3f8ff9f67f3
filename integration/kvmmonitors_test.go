//go:build integration

package integration

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// firecracker and cloud-hypervisor need KVM, which this machine lacks, so
// they are played by the stand-in, launched through containerd as the
// real ones would be: an image's annotation picks the monitor, the shim
// builds its command line (and firecracker's config file) and confined
// root, and a stop is the monitor's power-down request over its own API,
// firecracker's on the socket it binds in its root, cloud-hypervisor's on
// the one it inherits. What is not run is the monitors themselves.
func TestKVMMonitorsUnderTheStandIn(t *testing.T) {
	withKVMNode(t)
	withHostConfig(t, fmt.Sprintf("[monitors.firecracker]\nbinary_path = %q\n\n[monitors.clh]\nbinary_path = %q\n\n[runtime]\nstop_grace_s = 6\nstate_dir = %q\n",
		env.standin, env.standin, env.qmpDir))
	const grace = 6 * time.Second
	for _, tc := range []struct {
		monitor string
		subnet  int // a namespace with a veth of 198.18.subnet.0/24, or none
	}{
		{"firecracker", 0},
		{"firecracker", 13},
		{"clh", 0},
		{"clh", 14},
	} {
		t.Run(fmt.Sprintf("%s network %v", tc.monitor, tc.subnet != 0), func(t *testing.T) {
			flags := []string{"--annotation", "com.urunc.unikernel.hypervisor=" + tc.monitor}
			var n *testNet
			if tc.subnet != 0 {
				n = newTestNet(t, tc.subnet)
				flags = append(flags, n.withNS()...)
			}
			id := newID(t)
			log := runDetachedWith(t, id, flags, "sleep")
			waitForOutput(t, log, "STANDIN_READY", 30*time.Second)
			// The kernel and initrd it was told of, /dev/kvm and, with a
			// network, the tap, opened in its confined root.
			out, _ := os.ReadFile(log)
			want := "STANDIN_MONITOR " + tc.monitor + " kernel /guest/kernel initrd /guest/initrd /dev/kvm"
			if !strings.Contains(string(out), want) {
				t.Fatalf("the monitor's output lacks %q:\n%s", want, out)
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
