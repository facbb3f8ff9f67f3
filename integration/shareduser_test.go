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

// With a shared root, the spec's user holds on the host's files: a guest
// run as --user 1000:1000 cannot read a root-only 0600 file of a volume
// nor chmod a root-owned file setuid, over 9p (qemu serves it as the user,
// with no capability) and over virtiofs (virtiofsd runs as the user in a
// user namespace of its own), while it still reads what the user may.
func TestSharedRootSpecUserOnHostFiles(t *testing.T) {
	for _, tc := range []struct{ name, hostConfig, device string }{
		{"9p", env.defaultHostConfig(), "virtio-9p-pci"},
		{"virtiofs", env.virtiofsHostConfig(), "vhost-user-fs-pci"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			withHostConfig(t, tc.hostConfig)
			vol := t.TempDir()
			if err := os.Chmod(vol, 0o755); err != nil {
				t.Fatal(err)
			}
			for name, f := range map[string]struct {
				data string
				mode os.FileMode
			}{
				"secret": {"root-only-words", 0o600},
				"public": {"words-for-everyone", 0o644},
				"tool":   {"#!/bin/sh\n", 0o755},
			} {
				p := filepath.Join(vol, name)
				if err := os.WriteFile(p, []byte(f.data), f.mode); err != nil {
					t.Fatal(err)
				}
				if err := os.Chmod(p, f.mode); err != nil {
					t.Fatal(err)
				}
			}
			id := newID(t)
			logFile := filepath.Join(t.TempDir(), "console.log")
			ctr(t, "run", "-d", "--log-uri", "file://"+logFile, "--runtime", runtimeName, "--user", "1000:1000",
				"--mount", "type=bind,src="+vol+",dst=/data,options=rbind",
				testimage.RootfsImageName, id, "/init", "chmodcat", "4755", "/data/tool", "/data/secret", "/data/public")
			waitForOutput(t, logFile, "URUNC_GUEST_READY", 90*time.Second)
			if cmdline := monitorCmdline(t, id); !strings.Contains(cmdline, tc.device) {
				t.Fatalf("monitor lacks %s: %s", tc.device, cmdline)
			}
			if tc.name == "virtiofs" {
				helpers := processesOf(virtiofsd)
				pids := taskPids(t, id)
				for _, pid := range helpers {
					if !containsAny(pids, []int{pid}) {
						continue
					}
					for field, want := range map[string]string{"Uid": "1000\t1000\t1000\t1000", "Gid": "1000\t1000\t1000\t1000", "Groups": ""} {
						if got := procStatusField(t, pid, field); got != want {
							t.Errorf("virtiofsd %s = %q, want %q", field, got, want)
						}
					}
				}
				if !containsAny(pids, helpers) {
					t.Errorf("no virtiofsd among the task's processes %v", pids)
				}
			}
			out, _ := os.ReadFile(logFile)
			log := string(out)
			if !strings.Contains(log, "URUNC_GUEST_CAT /data/public: words-for-everyone") {
				t.Errorf("the guest did not read the user's readable file:\n%s", log)
			}
			if strings.Contains(log, "root-only-words") || !strings.Contains(log, "URUNC_GUEST_CAT /data/secret: cat: can't open '/data/secret': Permission denied") {
				t.Errorf("a guest run as user 1000 read a root-only file:\n%s", log)
			}
			if st, err := os.Stat(filepath.Join(vol, "tool")); err != nil || st.Mode() != 0o755 {
				t.Errorf("a guest run as user 1000 changed a root-owned file's mode to %v (%v); the guest said:\n%s", st.Mode(), err, grepLines(log, "URUNC_GUEST_CHMOD"))
			}
			killAndRemove(t, id)
		})
	}
}

// spec.root.readonly (ctr run --read-only) holds in every mode that could
// reach the host: a shared root is read-only to the guest over 9p and over
// virtiofs, and a block root disk is opened read-only; the guest prints
// its failed write, and nothing reaches the host's files.
func TestReadOnlyRoot(t *testing.T) {
	for _, tc := range []struct {
		name, hostConfig, image, device string
		shared                          bool
	}{
		{"9p", env.defaultHostConfig(), testimage.RootfsImageName, "readonly=on", true},
		{"virtiofs", env.virtiofsHostConfig(), testimage.RootfsImageName, "vhost-user-fs-pci", true},
		{"block", env.defaultHostConfig(), testimage.BlockImageName, "id=rootfs,readonly=on", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			withHostConfig(t, tc.hostConfig)
			id := newID(t)
			logFile := filepath.Join(t.TempDir(), "console.log")
			ctr(t, "run", "-d", "--log-uri", "file://"+logFile, "--runtime", runtimeName, "--read-only",
				tc.image, id, "/init", "write", "/written.txt", "written-into-a-read-only-root")
			waitForOutput(t, logFile, "can't create /written.txt: Read-only file system", 90*time.Second)
			out, _ := os.ReadFile(logFile)
			if strings.Contains(string(out), "URUNC_GUEST_WROTE") {
				t.Errorf("the guest wrote into its read-only root:\n%s", out)
			}
			if cmdline := monitorCmdline(t, id); !strings.Contains(cmdline, tc.device) {
				t.Errorf("monitor lacks %s: %s", tc.device, cmdline)
			}
			if tc.shared {
				if _, err := os.Stat(filepath.Join(env.bundle(id), "rootfs", "written.txt")); err == nil {
					t.Errorf("the guest's write reached the container rootfs on the host")
				}
			}
			killAndRemove(t, id)
		})
	}
}

// grepLines returns the lines of s that hold word.
func grepLines(s, word string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, word) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
