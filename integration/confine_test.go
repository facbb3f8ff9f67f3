//go:build integration

package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/urunc-dev/containerd-shim-urunc-v2/integration/testimage"
)

// procStatusField returns a field of /proc/PID/status.
func procStatusField(t *testing.T, pid int, field string) string {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(data), "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok && k == field {
			return strings.TrimSpace(v)
		}
	}
	t.Fatalf("no %s in /proc/%d/status", field, pid)
	return ""
}

// The monitor runs as confined as a container: no capabilities but the
// four a 9p server needs for the rootfs's files, no_new_privs, qemu's own
// seccomp filter whether or not the spec has seccomp, the spec's OOM score rather
// than the shim's, and a root that holds only its own files, on a nodev,
// noexec tmpfs.
func TestMonitorConfinement(t *testing.T) {
	for _, tc := range []struct {
		name, image, capEff, seccomp, uid string
		flags                             []string
	}{
		{"initrd with seccomp", image, "0000000000000000", "2", "0", []string{"--seccomp"}},
		// CAP_CHOWN, CAP_DAC_OVERRIDE, CAP_FOWNER, CAP_FSETID.
		{"9p without seccomp", testimage.RootfsImageName, "000000000000001b", "2", "0", nil},
		{"initrd as the spec's user", image, "0000000000000000", "2", "1000", []string{"--user", "1000:1000"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id := newID(t)
			logFile := filepath.Join(t.TempDir(), "console.log")
			args := append([]string{"run", "-d", "--log-uri", "file://" + logFile, "--runtime", runtimeName}, tc.flags...)
			ctr(t, append(args, tc.image, id, "/init", "sleep")...)
			waitForOutput(t, logFile, "URUNC_GUEST_READY", 60*time.Second)
			pid := taskPids(t, id)[0]
			for field, want := range map[string]string{"CapEff": tc.capEff, "CapPrm": tc.capEff, "CapBnd": tc.capEff, "NoNewPrivs": "1", "Seccomp": tc.seccomp,
				"Uid": strings.Repeat(tc.uid+"\t", 3) + tc.uid} {
				if got := procStatusField(t, pid, field); got != want {
					t.Errorf("monitor %s = %s, want %s", field, got, want)
				}
			}
			if adj, _ := os.ReadFile(fmt.Sprintf("/proc/%d/oom_score_adj", pid)); strings.TrimSpace(string(adj)) != "0" {
				t.Errorf("monitor oom_score_adj = %s, want 0 (not the shim's)", adj)
			}
			root := fmt.Sprintf("/proc/%d/root", pid)
			absent := []string{"etc/passwd", "root", "home", "proc/sys", "proc/kcore"}
			if !strings.HasPrefix(tc.name, "9p") {
				// Only qemu's 9p server gets a proc, of its own pids.
				absent = append(absent, "proc/self")
			}
			for _, p := range absent {
				if _, err := os.Lstat(filepath.Join(root, p)); err == nil {
					t.Errorf("the monitor's root holds /%s", p)
				}
			}
			if _, err := os.Stat(filepath.Join(root, "guest/kernel")); err != nil {
				t.Errorf("the monitor's root lacks its kernel: %v", err)
			}
			mi, _ := os.ReadFile(fmt.Sprintf("/proc/%d/mountinfo", pid))
			for _, l := range strings.Split(string(mi), "\n") {
				if f := strings.Fields(l); len(f) > 5 && f[4] == "/" && !(strings.Contains(f[5], "nodev") && strings.Contains(f[5], "noexec")) {
					t.Errorf("the monitor's root is mounted %s, want nodev,noexec", f[5])
				}
			}
			killAndRemove(t, id)
		})
	}
}

// The spec's user runs the monitor with roots that belong to root, and
// no owner on the host changes: qemu takes its disk open from the shim
// (-add-fd), virtiofsd's socket is the user's. A monitor serving 9p keeps
// no capability as a user, so a shared root is written where the user may:
// a volume of the user's, where the file lands owned by the user. The
// guest writes in each mode, which shows the monitor can.
func TestMonitorAsUserWithDiskOrSharedRoot(t *testing.T) {
	for _, tc := range []struct {
		name, hostConfig, image, capEff, cmdline string
		shared                                   bool
	}{
		{"disk", env.defaultHostConfig(), testimage.BlockImageName, "0000000000000000", "file=/dev/fdset/7", false}, // launch.FirstDiskFD
		{"9p", env.defaultHostConfig(), testimage.RootfsImageName, "0000000000000000", "virtio-9p-pci", true},
		{"virtiofs", env.virtiofsHostConfig(), testimage.RootfsImageName, "0000000000000000", "vhost-user-fs-pci", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			withHostConfig(t, tc.hostConfig)
			id := newID(t)
			logFile := filepath.Join(t.TempDir(), "console.log")
			args := []string{"run", "-d", "--log-uri", "file://" + logFile, "--runtime", runtimeName, "--user", "1000:1000"}
			target, vol := "/written.txt", ""
			if tc.shared {
				vol = t.TempDir()
				if err := os.Chown(vol, 1000, 1000); err != nil {
					t.Fatal(err)
				}
				target = "/data/written.txt"
				args = append(args, "--mount", "type=bind,src="+vol+",dst=/data,options=rbind")
			}
			ctr(t, append(args, tc.image, id, "/init", "write", target, "written-by-a-user-monitor")...)
			waitForOutput(t, logFile, "URUNC_GUEST_WROTE "+target+": written-by-a-user-monitor", 90*time.Second)
			pid := taskPids(t, id)[0]
			for field, want := range map[string]string{"Uid": "1000\t1000\t1000\t1000", "CapEff": tc.capEff, "NoNewPrivs": "1"} {
				if got := procStatusField(t, pid, field); got != want {
					t.Errorf("monitor %s = %q, want %q", field, got, want)
				}
			}
			if cmdline := monitorCmdline(t, id); !strings.Contains(cmdline, tc.cmdline) {
				t.Errorf("monitor lacks %s: %s", tc.cmdline, cmdline)
			}
			if vol != "" {
				var st unix.Stat_t
				if err := unix.Stat(filepath.Join(vol, "written.txt"), &st); err != nil || st.Uid != 1000 || st.Gid != 1000 {
					t.Errorf("the guest's file on the host: owner %d:%d (%v), want 1000:1000", st.Uid, st.Gid, err)
				}
			}
			killAndRemove(t, id)
		})
	}
}

// A monitor that installs no seccomp filter of its own gets this
// project's, and a call the filter denies fails in it. Here that monitor
// is the stand-in as qemu: a qemu built without libseccomp has no
// -sandbox. The filter comes by default, with no profile in the spec (as
// a pod without seccompProfile has); a profile that is explicitly
// unconfined, or the host config's seccomp = false with no profile, leaves
// it out. (A monitor that filters itself never gets a second one: stacked
// filters all apply, and a second one can kill it; monitors'
// TestFiltersItself covers which monitors filter themselves, and
// TestMonitorConfinement sees qemu's own -sandbox.)
func TestProjectSeccompFilter(t *testing.T) {
	unconfined := filepath.Join(t.TempDir(), "unconfined.json")
	if err := os.WriteFile(unconfined, []byte(`{"defaultAction":"SCMP_ACT_ALLOW"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	filtered, seccompOff := env.standinHostConfig(), strings.Replace(env.standinHostConfig(), "[monitors.qemu]\n", "[monitors.qemu]\nseccomp = false\n", 1)
	for _, tc := range []struct {
		name, hostConfig, seccomp, filters, keyctl string
		flags                                      []string
	}{
		{"spec with seccomp", filtered, "2", "1", "operation not permitted", []string{"--seccomp"}},
		{"spec without seccomp", filtered, "2", "1", "operation not permitted", nil},
		{"spec with an unconfined profile", filtered, "0", "0", "ok", []string{"--seccomp", "--seccomp-profile", unconfined}},
		{"host config seccomp = false", seccompOff, "0", "0", "ok", nil},
		{"host config seccomp = false, spec with seccomp", seccompOff, "2", "1", "operation not permitted", []string{"--seccomp"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			withHostConfig(t, tc.hostConfig)
			id := newID(t)
			logFile := filepath.Join(t.TempDir(), "console.log")
			args := append([]string{"run", "-d", "--log-uri", "file://" + logFile, "--runtime", runtimeName}, tc.flags...)
			ctr(t, append(args, image, id, "/init", "keyctl")...)
			waitForOutput(t, logFile, "STANDIN_READY", 30*time.Second)
			if out, _ := os.ReadFile(logFile); !strings.Contains(string(out), "STANDIN_KEYCTL: "+tc.keyctl) {
				t.Errorf("keyctl in the monitor: want %q, got:\n%s", tc.keyctl, out)
			}
			pid := taskPids(t, id)[0]
			for field, want := range map[string]string{"Seccomp": tc.seccomp, "Seccomp_filters": tc.filters} {
				if got := procStatusField(t, pid, field); got != want {
					t.Errorf("monitor %s = %s, want %s", field, got, want)
				}
			}
			if cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); strings.Contains(string(cmdline), "-sandbox") {
				t.Errorf("a qemu without libseccomp was given -sandbox: %q", cmdline)
			}
			killAndRemove(t, id)
		})
	}
}
