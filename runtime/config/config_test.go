package config

import (
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/urunc-dev/containerd-shim-urunc-v2/internal/annotation"
	"github.com/urunc-dev/containerd-shim-urunc-v2/monitors"
	"golang.org/x/sys/unix"
)

func writeURuncJSON(t *testing.T, dir string, kv map[string]string) {
	t.Helper()
	var parts []string
	for k, v := range kv {
		parts = append(parts, `"`+annotation.Prefix+k+`":"`+base64.StdEncoding.EncodeToString([]byte(v))+`"`)
	}
	if err := os.WriteFile(filepath.Join(dir, "urunc.json"), []byte("{"+strings.Join(parts, ",")+"}"), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestResolveUnikernelConfigPrecedence(t *testing.T) {
	tests := []struct {
		name        string
		annotations map[string]string
		file        map[string]string
		want        UnikernelConfig
	}{
		{
			name: "file only",
			file: map[string]string{"unikernelType": "linux", "hypervisor": "qemu", "binary": "/k", "initrd": "/i", "mountRootfs": "true"},
			want: UnikernelConfig{UnikernelType: "linux", Hypervisor: "qemu", Binary: "/k", Initrd: "/i", MountRootfs: "true"},
		},
		{
			name:        "annotations win over the file",
			annotations: map[string]string{annotation.Prefix + "hypervisor": "firecracker", annotation.Prefix + "cmdline": "a b"},
			file:        map[string]string{"unikernelType": "linux", "hypervisor": "qemu", "binary": "/k"},
			want:        UnikernelConfig{UnikernelType: "linux", Hypervisor: "firecracker", Binary: "/k", Cmdline: "a b"},
		},
		{
			name:        "annotations only, other annotations ignored",
			annotations: map[string]string{annotation.Prefix + "unikernelType": "linux", "io.kubernetes.cri.sandbox-id": "x", annotation.Prefix + "block": "/b", annotation.Prefix + "useDMBlock": "true"},
			want:        UnikernelConfig{UnikernelType: "linux", Block: "/b", UseDMBlock: "true"},
		},
		{
			name: "neither: not a unikernel",
			want: UnikernelConfig{},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if tc.file != nil {
				writeURuncJSON(t, dir, tc.file)
			}
			got, err := ResolveUnikernelConfig(tc.annotations, dir)
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Fatalf("got %+v\nwant %+v", got, tc.want)
			}
			if got.IsUnikernel() != (tc.want.UnikernelType != "") {
				t.Fatalf("IsUnikernel = %v", got.IsUnikernel())
			}
		})
	}
}

func TestResolveUnikernelConfigBadFile(t *testing.T) {
	tests := []struct {
		name, content, want string
	}{
		{"not json", "{", "parse /urunc.json"},
		{"not base64", `{"com.urunc.unikernel.binary":"%%%"}`, `value of "com.urunc.unikernel.binary" is not base64`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, "urunc.json"), []byte(tc.content), 0o644); err != nil {
				t.Fatal(err)
			}
			_, err := ResolveUnikernelConfig(nil, dir)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
}

func TestParseHostConfig(t *testing.T) {
	tests := []struct {
		name    string
		toml    string
		wantErr string
		check   func(t *testing.T, c HostConfig)
	}{
		{
			name: "qemu table and defaults",
			toml: "[monitors.qemu]\npath = \"/opt/q\"\naccel = \"tcg\"\ndefault_memory_mb = 512\n",
			check: func(t *testing.T, c HostConfig) {
				m := c.Monitor("qemu")
				if m.Path != "/opt/q" || m.Accel != "tcg" || m.DefaultMemoryMB != 512 || m.DefaultVCPUs != 1 {
					t.Fatalf("qemu = %+v", m)
				}
				if fc := c.Monitor("firecracker"); fc.Accel != "kvm" || fc.DefaultMemoryMB != 256 {
					t.Fatalf("firecracker defaults = %+v", fc)
				}
				// No grace is enforced unless the host opts in.
				if c.StopGrace() != 0 {
					t.Fatalf("grace = %s", c.StopGrace())
				}
			},
		},
		{
			// A urunc host's own config.toml, as urunc documents it.
			name: "urunc's config unchanged",
			toml: `[log]
level = "info"
syslog = false

[timestamps]
enabled = false
destination = "/var/log/urunc/timestamps.log"

[monitors.qemu]
default_memory_mb = 256
default_vcpus = 1
binary_path = "/usr/local/bin/qemu-system-x86_64"
data_path = "/usr/local/share/qemu"
vhost = true

[extra_binaries.virtiofsd]
path = "/usr/libexec/virtiofsd"
options = "--cache always --sandbox none"
`,
			check: func(t *testing.T, c HostConfig) {
				m := c.Monitor("qemu")
				if m.Executable() != "/usr/local/bin/qemu-system-x86_64" || m.DataPath != "/usr/local/share/qemu" || !m.Vhost {
					t.Fatalf("qemu = %+v", m)
				}
				if v := c.Virtiofsd(); v.Path != "/usr/libexec/virtiofsd" || strings.Join(v.Options, " ") != "--cache always --sandbox none" {
					t.Fatalf("virtiofsd = %+v", v)
				}
			},
		},
		{name: "bad accel", toml: "[monitors.qemu]\naccel = \"hvf\"\n", wantErr: `monitors.qemu.accel = "hvf"`},
		{name: "unused key", toml: "[monitors.qemu]\nacel = \"tcg\"\naccel = \"tcg\"\n[future]\nx = 1\n", check: func(t *testing.T, c HostConfig) {
			if strings.Join(c.UnusedKeys, ", ") != "monitors.qemu.acel (line 2), future (line 4)" || c.Monitor("qemu").Accel != "tcg" {
				t.Fatalf("unused keys %q, qemu %+v", c.UnusedKeys, c.Monitor("qemu"))
			}
		}},
		{name: "bad value", toml: "[monitors.qemu]\ndefault_memory_mb = \"lots\"\n", wantErr: "parse host config test.toml: monitors.qemu.default_memory_mb (line 2): "},
		{name: "seccomp off for one monitor", toml: "[monitors.qemu]\nseccomp = false\n", check: func(t *testing.T, c HostConfig) {
			if c.Monitor("qemu").SeccompByDefault() || !c.Monitor("firecracker").SeccompByDefault() || len(c.UnusedKeys) != 0 {
				t.Fatalf("qemu %+v, firecracker %+v, unused %q", c.Monitor("qemu"), c.Monitor("firecracker"), c.UnusedKeys)
			}
		}},
		{name: "seccomp on by default", toml: "[monitors.qemu]\naccel = \"tcg\"\n", check: func(t *testing.T, c HostConfig) {
			if !c.Monitor("qemu").SeccompByDefault() {
				t.Fatal("qemu runs unfiltered by default")
			}
		}},
		{name: "memory overhead set for one monitor", toml: "[monitors.qemu]\naccel = \"tcg\"\nmemory_overhead_mb = 200\n", check: func(t *testing.T, c HostConfig) {
			if q := c.Monitor("qemu"); q.MemoryOverheadMB != 200 || len(c.UnusedKeys) != 0 {
				t.Fatalf("qemu %+v, unused %q", q, c.UnusedKeys)
			}
			if fc := c.Monitor("firecracker"); fc.MemoryOverheadMB != DefaultMemoryOverheadMB("firecracker", "kvm") {
				t.Fatalf("firecracker %+v", fc)
			}
		}},
		{name: "negative memory overhead", toml: "[monitors.qemu]\nmemory_overhead_mb = -1\n", wantErr: "monitors.qemu.memory_overhead_mb = -1"},
		{name: "grace", toml: "[runtime]\nstop_grace_s = 3\n", check: func(t *testing.T, c HostConfig) {
			if c.StopGrace().Seconds() != 3 {
				t.Fatalf("grace = %s", c.StopGrace())
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := ParseHostConfig("test.toml", []byte(tc.toml))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, c)
		})
	}
}

// Each monitor has a memory overhead by default; qemu's under TCG counts
// its bounded translation cache on top of its own.
func TestDefaultMemoryOverhead(t *testing.T) {
	for _, tc := range []struct {
		toml, monitor string
		want          int
	}{
		{"", "qemu", qemuOverheadMB},
		{"[monitors.qemu]\naccel = \"tcg\"\n", "qemu", qemuOverheadMB + monitors.TCGTranslationCacheMB},
		{"[monitors.qemu]\naccel = \"tcg\"\nmemory_overhead_mb = 0\n", "qemu", qemuOverheadMB + monitors.TCGTranslationCacheMB},
		{"[monitors.qemu]\naccel = \"tcg\"\nmemory_overhead_mb = 7\n", "qemu", 7},
		{"", "firecracker", 32},
		{"", "clh", 32},
		{"", "hvt", 16},
		{"", "spt", 16},
		{"", "unknown", qemuOverheadMB},
	} {
		c, err := ParseHostConfig("test.toml", []byte(tc.toml))
		if err != nil {
			t.Fatal(err)
		}
		if got := c.Monitor(tc.monitor).MemoryOverheadMB; got != tc.want {
			t.Errorf("%s with %q: overhead %d MiB, want %d", tc.monitor, tc.toml, got, tc.want)
		}
	}
}

func TestLoadHostConfigExplicitMissingFile(t *testing.T) {
	t.Setenv(HostConfigEnv, filepath.Join(t.TempDir(), "missing.toml"))
	if _, err := LoadHostConfig(); err == nil || !strings.Contains(err.Error(), "missing.toml") {
		t.Fatalf("err = %v, want one naming the file", err)
	}
}

// /urunc.json is untrusted: a FIFO, a device or a huge file gets a prompt
// error that names it, never a hang or an unbounded read.
func TestURuncJSONHostile(t *testing.T) {
	tests := []struct {
		name, want string
		make       func(path string) error
	}{
		{"fifo", `image config "/urunc.json" in the container rootfs is not a regular file (a FIFO)`,
			func(p string) error { return unix.Mkfifo(p, 0o644) }},
		{"char device", `image config "/urunc.json" in the container rootfs is not a regular file (a character device)`,
			func(p string) error { return unix.Mknod(p, unix.S_IFCHR|0o644, int(unix.Mkdev(1, 5))) }},
		{"too large", "/urunc.json in the container rootfs is larger than 1048576 bytes",
			func(p string) error { return os.WriteFile(p, make([]byte, 2<<20), 0o644) }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := tc.make(filepath.Join(dir, "urunc.json")); err != nil {
				t.Skipf("cannot make the file here: %v", err)
			}
			_, err := ResolveUnikernelConfig(nil, dir)
			if err == nil || err.Error() != tc.want {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
}

// urunc's solo5 device-name annotations: names a solo5 manifest accepts
// pass, anything else is refused naming the annotation (the name lands
// on the tender's command line).
func TestSolo5Devices(t *testing.T) {
	for _, tc := range []struct {
		net, blk, wantErr string
	}{
		{"", "", ""},
		{"service", "storage", ""},
		{"net0", "", ""},
		{"a=b", "", `com.urunc.unikernel.solo5NetDev = "a=b": want 1 to 67 letters or digits`},
		{"", "rootfs --mem=4096", `com.urunc.unikernel.solo5BlkDev = "rootfs --mem=4096"`},
		{strings.Repeat("x", 68), "", "com.urunc.unikernel.solo5NetDev"},
	} {
		net, blk, err := UnikernelConfig{Solo5NetDev: tc.net, Solo5BlkDev: tc.blk}.Solo5Devices()
		if tc.wantErr == "" && (err != nil || net != tc.net || blk != tc.blk) {
			t.Errorf("%q %q: %q %q %v", tc.net, tc.blk, net, blk, err)
		}
		if tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
			t.Errorf("%q %q: error %v, want %q", tc.net, tc.blk, err, tc.wantErr)
		}
	}
}
