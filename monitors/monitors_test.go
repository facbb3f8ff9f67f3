package monitors

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/urunc-dev/containerd-shim-urunc-v2/rootfs"
)

var testGuest = Guest{
	Kernel: "/guest/kernel", Initrd: "/guest/initrd", Cmdline: "panic=-1 console=ttyS0",
	MemoryMB: 256, VCPUs: 2,
}

// Each firecracker drive is read-only exactly when its disk is.
func TestFirecrackerReadOnlyDrives(t *testing.T) {
	g := withStorage(testGuest, []Disk{{ID: "rootfs", Path: "/guest/disks/rootfs"}, {ID: "vol2", Path: "/guest/disks/vol2", ReadOnly: true}}, nil)
	data, err := newFirecracker("/fc", Config{}).(ConfigFileWriter).ConfigFile(g)
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		Drives []struct {
			ID       string `json:"drive_id"`
			Path     string `json:"path_on_host"`
			Root     bool   `json:"is_root_device"`
			ReadOnly *bool  `json:"is_read_only"`
		} `json:"drives"`
	}
	if err := json.Unmarshal(data, &cfg); err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{"rootfs": false, "vol2": true}
	if len(cfg.Drives) != len(want) {
		t.Fatalf("drives: %s", data)
	}
	for _, d := range cfg.Drives {
		if d.ReadOnly == nil || *d.ReadOnly != want[d.ID] || d.Root || d.Path != "/guest/disks/"+d.ID {
			t.Errorf("drive %s: %s", d.ID, data)
		}
	}
}

// The exact command lines each monitor gets. firecracker, solo5 and
// cloud-hypervisor cannot run on the test hosts; these are their known-good
// forms.
func TestMonitorArgs(t *testing.T) {
	withNet := testGuest
	withNet.Net = &NIC{Tap: "tap0_abc", MAC: "02:00:00:00:00:01"}
	withNet.ControlFD = 5
	noInitrd := testGuest
	noInitrd.Initrd = ""
	withAgent := testGuest
	withAgent.Agent = &AgentChannel{Transport: AgentVirtioSerial, FD: 6, Port: "urunc.agent"}
	withVsock := withNet
	withVsock.Agent = &AgentChannel{Transport: AgentHybridVsock, GuestCID: AgentGuestCID, Socket: AgentVsockSocketInRoot}
	tests := []struct {
		name    string
		monitor Monitor
		guest   Guest
		want    string
		wantErr string
	}{
		{
			name: "qemu tcg", monitor: newQemu("/usr/bin/qemu-system-x86_64", Config{Accel: "tcg"}), guest: testGuest,
			want: "/usr/bin/qemu-system-x86_64 -accel tcg,tb-size=32 -m 256M -smp 2 -nodefaults -no-user-config -display none -vga none -no-reboot " +
				"-chardev stdio,id=console,signal=off -serial chardev:console -kernel /guest/kernel -initrd /guest/initrd " +
				"-append panic=-1 console=ttyS0 -nic none",
		},
		{
			// The agent's code gets its own room in the translation cache.
			name: "qemu with the guest agent's channel", monitor: newQemu("/q", Config{Accel: "tcg"}), guest: withAgent,
			want: "/q -accel tcg,tb-size=48 -m 256M -smp 2 -nodefaults -no-user-config -display none -vga none -no-reboot " +
				"-chardev stdio,id=console,signal=off -serial chardev:console -kernel /guest/kernel -initrd /guest/initrd " +
				"-append panic=-1 console=ttyS0 -nic none " +
				"-device virtio-serial-pci,id=agent-serial -chardev socket,id=agent,fd=6,server=on,wait=off " +
				"-device virtserialport,bus=agent-serial.0,chardev=agent,name=urunc.agent",
		},
		{
			name: "qemu kvm with net and qmp", monitor: newQemu("/q", Config{}), guest: withNet,
			want: "/q -accel kvm -m 256M -smp 2 -nodefaults -no-user-config -display none -vga none -no-reboot " +
				"-chardev stdio,id=console,signal=off -serial chardev:console -kernel /guest/kernel -cpu host -initrd /guest/initrd " +
				"-append panic=-1 console=ttyS0 -netdev tap,id=net0,ifname=tap0_abc,script=no,downscript=no " +
				"-device virtio-net-pci,netdev=net0,mac=02:00:00:00:00:01,romfile= " +
				"-chardev socket,id=qmp,fd=5,server=on,wait=off -mon chardev=qmp,mode=control",
		},
		{
			name: "qemu tcg with vhost-net", monitor: newQemu("/q", Config{Accel: "tcg", Vhost: true}),
			guest: func() Guest { g := noInitrd; g.Net = &NIC{Tap: "t", MAC: "m", Vhost: true}; return g }(),
			want: "/q -accel tcg,tb-size=32 -m 256M -smp 2 -nodefaults -no-user-config -display none -vga none -no-reboot " +
				"-chardev stdio,id=console,signal=off -serial chardev:console -kernel /guest/kernel " +
				"-append panic=-1 console=ttyS0 -netdev tap,id=net0,ifname=t,script=no,downscript=no,vhost=on " +
				"-device virtio-net-pci,netdev=net0,mac=m,romfile=",
		},
		{
			name: "solo5-hvt", monitor: newHvt("/usr/bin/solo5-hvt", Config{}), guest: func() Guest { g := noInitrd; g.Net = withNet.Net; return g }(),
			want: "/usr/bin/solo5-hvt --mem=256 --net:service=tap0_abc --net-mac:service=02:00:00:00:00:01 /guest/kernel panic=-1 console=ttyS0",
		},
		{name: "solo5-spt refuses an initrd", monitor: newSpt("/usr/bin/solo5-spt", Config{}), guest: testGuest, wantErr: "cannot boot an initrd"},
		{
			name: "cloud-hypervisor", monitor: newCloudHypervisor("/usr/bin/cloud-hypervisor", Config{}), guest: withNet,
			want: "/usr/bin/cloud-hypervisor --kernel /guest/kernel --cpus boot=2 --memory size=256M --serial tty --console off --seccomp false " +
				"--initramfs /guest/initrd --cmdline panic=-1 console=ttyS0 --net tap=tap0_abc,mac=02:00:00:00:00:01 --api-socket fd=5",
		},
		{
			name: "cloud-hypervisor with the guest agent's hybrid vsock", monitor: newCloudHypervisor("/usr/bin/cloud-hypervisor", Config{}), guest: withVsock,
			want: "/usr/bin/cloud-hypervisor --kernel /guest/kernel --cpus boot=2 --memory size=256M --serial tty --console off --seccomp false " +
				"--initramfs /guest/initrd --cmdline panic=-1 console=ttyS0 --net tap=tap0_abc,mac=02:00:00:00:00:01 " +
				"--vsock cid=3,socket=/tmp/agent.vsock --api-socket fd=5",
		},
		{
			name: "cloud-hypervisor refuses a virtio-serial agent channel", monitor: newCloudHypervisor("/ch", Config{}), guest: withAgent,
			wantErr: "can only be hybrid vsock",
		},
		{
			name: "firecracker", monitor: newFirecracker("/usr/bin/firecracker", Config{}), guest: testGuest,
			want: "/usr/bin/firecracker --api-sock /tmp/control.sock --config-file /guest/firecracker.json",
		},
		{
			name: "qemu block root and a volume disk", monitor: newQemu("/q", Config{Accel: "tcg"}), guest: withStorage(noInitrd,
				[]Disk{{ID: "rootfs", Path: "/guest/disks/rootfs"}, {ID: "vol3", Path: "/guest/disks/vol3"}}, nil),
			want: "/q -accel tcg,tb-size=32 -m 256M -smp 2 -nodefaults -no-user-config -display none -vga none -no-reboot " +
				"-chardev stdio,id=console,signal=off -serial chardev:console -kernel /guest/kernel -append panic=-1 console=ttyS0 " +
				"-drive file=/guest/disks/rootfs,format=raw,if=none,id=rootfs -device virtio-blk-pci,drive=rootfs,serial=rootfs " +
				"-drive file=/guest/disks/vol3,format=raw,if=none,id=vol3 -device virtio-blk-pci,drive=vol3,serial=vol3 -nic none",
		},
		{
			name: "qemu disk inherited by a monitor running as a user", monitor: newQemu("/q", Config{Accel: "tcg"}), guest: withStorage(noInitrd,
				[]Disk{{ID: "rootfs", Path: "/guest/disks/rootfs", FD: 6, ReadOnlyFD: 7}}, nil),
			want: "/q -accel tcg,tb-size=32 -m 256M -smp 2 -nodefaults -no-user-config -display none -vga none -no-reboot " +
				"-chardev stdio,id=console,signal=off -serial chardev:console -kernel /guest/kernel -append panic=-1 console=ttyS0 " +
				"-add-fd fd=6,set=6,opaque=rootfs-rw -add-fd fd=7,set=6,opaque=rootfs-ro " +
				"-drive file=/dev/fdset/6,format=raw,if=none,id=rootfs -device virtio-blk-pci,drive=rootfs,serial=rootfs -nic none",
		},
		{
			name: "qemu 9p root", monitor: newQemu("/q", Config{Accel: "tcg"}), guest: withStorage(noInitrd, nil,
				[]Share{{Kind: rootfs.Kind9p, Tag: "fs0", Path: "/guest/shares/fs0"}}),
			want: "/q -accel tcg,tb-size=32 -m 256M -smp 2 -nodefaults -no-user-config -display none -vga none -no-reboot " +
				"-chardev stdio,id=console,signal=off -serial chardev:console -kernel /guest/kernel -append panic=-1 console=ttyS0 " +
				"-fsdev local,id=fsdev-fs0,path=/guest/shares/fs0,security_model=none -device virtio-9p-pci,fsdev=fsdev-fs0,mount_tag=fs0 -nic none",
		},
		{
			name: "qemu read-only 9p root", monitor: newQemu("/q", Config{Accel: "tcg"}), guest: withStorage(noInitrd, nil,
				[]Share{{Kind: rootfs.Kind9p, Tag: "fs0", Path: "/guest/shares/fs0", ReadOnly: true}}),
			want: "/q -accel tcg,tb-size=32 -m 256M -smp 2 -nodefaults -no-user-config -display none -vga none -no-reboot " +
				"-chardev stdio,id=console,signal=off -serial chardev:console -kernel /guest/kernel -append panic=-1 console=ttyS0 " +
				"-fsdev local,id=fsdev-fs0,path=/guest/shares/fs0,security_model=none,readonly=on -device virtio-9p-pci,fsdev=fsdev-fs0,mount_tag=fs0 -nic none",
		},
		{
			name: "qemu read-only block root", monitor: newQemu("/q", Config{Accel: "tcg"}), guest: withStorage(noInitrd,
				[]Disk{{ID: "rootfs", Path: "/guest/disks/rootfs", ReadOnly: true}}, nil),
			want: "/q -accel tcg,tb-size=32 -m 256M -smp 2 -nodefaults -no-user-config -display none -vga none -no-reboot " +
				"-chardev stdio,id=console,signal=off -serial chardev:console -kernel /guest/kernel -append panic=-1 console=ttyS0 " +
				"-drive file=/guest/disks/rootfs,format=raw,if=none,id=rootfs,readonly=on -device virtio-blk-pci,drive=rootfs,serial=rootfs -nic none",
		},
		{
			name: "qemu virtiofs root maps guest RAM shared", monitor: newQemu("/q", Config{Accel: "tcg"}), guest: withStorage(noInitrd, nil,
				[]Share{{Kind: rootfs.KindVirtiofs, Tag: "fs0", Socket: "/run/virtiofsd.sock"}}),
			want: "/q -accel tcg,tb-size=32 -m 256M -smp 2 -nodefaults -no-user-config -display none -vga none -no-reboot " +
				"-chardev stdio,id=console,signal=off -serial chardev:console -kernel /guest/kernel -append panic=-1 console=ttyS0 " +
				"-chardev socket,id=vfs-fs0,path=/run/virtiofsd.sock -device vhost-user-fs-pci,chardev=vfs-fs0,tag=fs0 " +
				"-object memory-backend-memfd,id=mem,size=256M,share=on -numa node,memdev=mem -nic none",
		},
		{
			name: "cloud-hypervisor disk and virtiofs", monitor: newCloudHypervisor("/ch", Config{}), guest: withStorage(noInitrd,
				[]Disk{{ID: "rootfs", Path: "/guest/disks/rootfs"}}, []Share{{Kind: rootfs.KindVirtiofs, Tag: "fs0", Socket: "/run/v.sock"}}),
			want: "/ch --kernel /guest/kernel --cpus boot=2 --memory size=256M,shared=on --serial tty --console off --seccomp false " +
				"--cmdline panic=-1 console=ttyS0 --disk path=/guest/disks/rootfs,id=rootfs --fs tag=fs0,socket=/run/v.sock",
		},
		{
			name: "solo5-spt block", monitor: newSpt("/s", Config{}), guest: withStorage(noInitrd, []Disk{{ID: "rootfs", Path: "/guest/disks/rootfs"}}, nil),
			want: "/s --mem=256 --block:rootfs=/guest/disks/rootfs /guest/kernel panic=-1 console=ttyS0",
		},
		{
			name: "solo5-hvt with a rumprun guest's device names", monitor: newHvt("/h", Config{}), guest: func() Guest {
				g := withStorage(noInitrd, []Disk{{ID: "rootfs", Path: "/guest/disks/rootfs"}}, nil)
				g.Net, g.Solo5Net, g.Solo5Block = withNet.Net, "tap", "storage"
				return g
			}(),
			want: "/h --mem=256 --net:tap=tap0_abc --net-mac:tap=02:00:00:00:00:01 --block:storage=/guest/disks/rootfs /guest/kernel panic=-1 console=ttyS0",
		},
		{
			name: "qemu with a mewz guest's NIC and exit device", monitor: newQemu("/q", Config{Accel: "tcg"}), guest: func() Guest {
				g := noInitrd
				g.Net, g.NICOptions = withNet.Net, "disable-legacy=on,disable-modern=off"
				g.ExtraArgs = []string{"-device", "isa-debug-exit,iobase=0x501,iosize=2"}
				return g
			}(),
			want: "/q -accel tcg,tb-size=32 -m 256M -smp 2 -nodefaults -no-user-config -display none -vga none -no-reboot " +
				"-chardev stdio,id=console,signal=off -serial chardev:console -kernel /guest/kernel -append panic=-1 console=ttyS0 " +
				"-device isa-debug-exit,iobase=0x501,iosize=2 -netdev tap,id=net0,ifname=tap0_abc,script=no,downscript=no " +
				"-device virtio-net-pci,netdev=net0,mac=02:00:00:00:00:01,romfile=,disable-legacy=on,disable-modern=off",
		},
		{
			name: "qemu read-only volume disk", monitor: newQemu("/q", Config{Accel: "tcg"}), guest: withStorage(noInitrd,
				[]Disk{{ID: "rootfs", Path: "/guest/disks/rootfs"}, {ID: "vol2", Path: "/guest/disks/vol2", ReadOnly: true}}, nil),
			want: "/q -accel tcg,tb-size=32 -m 256M -smp 2 -nodefaults -no-user-config -display none -vga none -no-reboot " +
				"-chardev stdio,id=console,signal=off -serial chardev:console -kernel /guest/kernel -append panic=-1 console=ttyS0 " +
				"-drive file=/guest/disks/rootfs,format=raw,if=none,id=rootfs -device virtio-blk-pci,drive=rootfs,serial=rootfs " +
				"-drive file=/guest/disks/vol2,format=raw,if=none,id=vol2,readonly=on -device virtio-blk-pci,drive=vol2,serial=vol2 -nic none",
		},
		{
			name: "qemu read-only disk inherited by a monitor running as a user", monitor: newQemu("/q", Config{Accel: "tcg"}), guest: withStorage(noInitrd,
				[]Disk{{ID: "vol1", Path: "/guest/disks/vol1", FD: 6, ReadOnlyFD: 7, ReadOnly: true}}, nil),
			want: "/q -accel tcg,tb-size=32 -m 256M -smp 2 -nodefaults -no-user-config -display none -vga none -no-reboot " +
				"-chardev stdio,id=console,signal=off -serial chardev:console -kernel /guest/kernel -append panic=-1 console=ttyS0 " +
				"-add-fd fd=6,set=6,opaque=vol1-rw -add-fd fd=7,set=6,opaque=vol1-ro " +
				"-drive file=/dev/fdset/6,format=raw,if=none,id=vol1,readonly=on -device virtio-blk-pci,drive=vol1,serial=vol1 -nic none",
		},
		{
			name: "qemu block device inherited by a monitor running as a user", monitor: newQemu("/q", Config{Accel: "tcg"}), guest: withStorage(noInitrd,
				[]Disk{{ID: "vol1", Path: "/guest/disks/vol1", FD: 6, ReadOnlyFD: 7, HostDevice: true}, {ID: "vol2", Path: "/guest/disks/vol2", HostDevice: true}}, nil),
			want: "/q -accel tcg,tb-size=32 -m 256M -smp 2 -nodefaults -no-user-config -display none -vga none -no-reboot " +
				"-chardev stdio,id=console,signal=off -serial chardev:console -kernel /guest/kernel -append panic=-1 console=ttyS0 " +
				"-add-fd fd=6,set=6,opaque=vol1-rw -add-fd fd=7,set=6,opaque=vol1-ro " +
				"-drive file=/dev/fdset/6,format=raw,if=none,id=vol1,file.driver=host_device -device virtio-blk-pci,drive=vol1,serial=vol1 " +
				"-drive file=/guest/disks/vol2,format=raw,if=none,id=vol2 -device virtio-blk-pci,drive=vol2,serial=vol2 -nic none",
		},
		{
			name: "cloud-hypervisor read-only volume disk", monitor: newCloudHypervisor("/ch", Config{}), guest: withStorage(noInitrd,
				[]Disk{{ID: "rootfs", Path: "/guest/disks/rootfs"}, {ID: "vol2", Path: "/guest/disks/vol2", ReadOnly: true}}, nil),
			want: "/ch --kernel /guest/kernel --cpus boot=2 --memory size=256M --serial tty --console off --seccomp false " +
				"--cmdline panic=-1 console=ttyS0 --disk path=/guest/disks/rootfs,id=rootfs --disk path=/guest/disks/vol2,id=vol2,readonly=on",
		},
		{
			name: "solo5-hvt refuses a read-only disk", monitor: newHvt("/h", Config{}),
			guest:   withStorage(noInitrd, []Disk{{ID: "vol1", Path: "/guest/disks/vol1", ReadOnly: true}}, nil),
			wantErr: "solo5-hvt cannot attach disk vol1 read-only",
		},
		{
			name: "solo5-spt refuses a read-only disk", monitor: newSpt("/s", Config{}),
			guest:   withStorage(noInitrd, []Disk{{ID: "rootfs", Path: "/guest/disks/rootfs"}, {ID: "vol1", Path: "/guest/disks/vol1", ReadOnly: true}}, nil),
			wantErr: "solo5-spt cannot attach disk vol1 read-only",
		},
		{name: "no kernel", monitor: newQemu("/q", Config{}), guest: Guest{}, wantErr: "no guest kernel"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			args, err := tc.monitor.Args(tc.guest)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := strings.Join(args, " "); got != tc.want {
				t.Fatalf("got  %s\nwant %s", got, tc.want)
			}
		})
	}
}

// The guest agent's channel under firecracker is its vsock device, whose
// host socket firecracker binds in its root; under qemu it is not a vsock
// device, and firecracker refuses any other kind of channel.
func TestAgentChannelKinds(t *testing.T) {
	for name, want := range map[string]AgentTransport{"qemu": AgentVirtioSerial, "firecracker": AgentHybridVsock, "clh": AgentHybridVsock, "hvt": AgentNone, "spt": AgentNone} {
		mon, err := New(name, Config{Path: "/bin/true"})
		if err != nil {
			t.Fatal(err)
		}
		if got := AgentTransportOf(mon); got != want {
			t.Errorf("%s gives the agent %s, want %s", name, got, want)
		}
	}
	fc := newFirecracker("/fc", Config{}).(ConfigFileWriter)
	for name, tc := range map[string]struct {
		agent *AgentChannel
		want  string
	}{
		"no agent":              {nil, `{"boot-source":{"kernel_image_path":"/guest/kernel","boot_args":"panic=-1 console=ttyS0","initrd_path":"/guest/initrd"},"drives":[],"machine-config":{"vcpu_count":2,"mem_size_mib":256}}`},
		"hybrid vsock":          {&AgentChannel{Transport: AgentHybridVsock, GuestCID: 3, Socket: "/tmp/agent.vsock"}, `{"boot-source":{"kernel_image_path":"/guest/kernel","boot_args":"panic=-1 console=ttyS0","initrd_path":"/guest/initrd"},"drives":[],"machine-config":{"vcpu_count":2,"mem_size_mib":256},"vsock":{"guest_cid":3,"uds_path":"/tmp/agent.vsock"}}`},
		"virtio-serial refused": {&AgentChannel{Transport: AgentVirtioSerial, FD: 6, Port: "urunc.agent"}, "error: can only be hybrid vsock"},
		"no socket refused":     {&AgentChannel{Transport: AgentHybridVsock, GuestCID: 3}, "error: can only be hybrid vsock"},
	} {
		t.Run(name, func(t *testing.T) {
			g := testGuest
			g.Agent = tc.agent
			data, err := fc.ConfigFile(g)
			if want, ok := strings.CutPrefix(tc.want, "error: "); ok {
				if err == nil || !strings.Contains(err.Error(), want) {
					t.Fatalf("err = %v, want %q", err, want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var compact bytes.Buffer
			if err := json.Compact(&compact, data); err != nil {
				t.Fatal(err)
			}
			if compact.String() != tc.want {
				t.Fatalf("got  %s\nwant %s", compact.String(), tc.want)
			}
		})
	}
}

func TestFirecrackerConfigFile(t *testing.T) {
	g := testGuest
	g.Net = &NIC{Tap: "tap1", MAC: "02:00:00:00:00:02"}
	data, err := newFirecracker("/fc", Config{}).(ConfigFileWriter).ConfigFile(g)
	if err != nil {
		t.Fatal(err)
	}
	var cfg map[string]any
	if err := json.Unmarshal(data, &cfg); err != nil {
		t.Fatal(err)
	}
	boot := cfg["boot-source"].(map[string]any)
	mc := cfg["machine-config"].(map[string]any)
	nic := cfg["network-interfaces"].([]any)[0].(map[string]any)
	if boot["kernel_image_path"] != "/guest/kernel" || boot["initrd_path"] != "/guest/initrd" || boot["boot_args"] != g.Cmdline ||
		mc["vcpu_count"].(float64) != 2 || mc["mem_size_mib"].(float64) != 256 ||
		nic["host_dev_name"] != "tap1" || nic["guest_mac"] != "02:00:00:00:00:02" {
		t.Fatalf("config: %s", data)
	}
}

func TestNewMonitorErrors(t *testing.T) {
	tests := []struct {
		name, monitor, path, want string
	}{
		{"unknown", "vmware", "", `unknown hypervisor "vmware" (known: clh, firecracker, hvt, qemu, spt)`},
		{"missing binary", "firecracker", "/opt/none/firecracker", `hypervisor "firecracker": monitor binary "/opt/none/firecracker" not found on this host`},
		{"not on PATH", "hvt", "", `monitor binary "solo5-hvt" not found`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("PATH", "/nonexistent")
			_, err := New(tc.monitor, Config{Path: tc.path})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
}

func TestPowerdownSupport(t *testing.T) {
	for _, m := range []Monitor{newHvt("/h", Config{}), newSpt("/s", Config{}), newFirecracker("/f", Config{}), newCloudHypervisor("/c", Config{}), newQemu("/q", Config{})} {
		err := m.Powerdown(context.Background(), "")
		if !errors.Is(err, ErrNoPowerdown) {
			t.Errorf("%s without a control socket: err = %v, want ErrNoPowerdown", m.Name(), err)
		}
	}
}

// cloud-hypervisor's power button and firecracker's Ctrl-Alt-Del, each a
// PUT of its HTTP API on a unix socket; an API error is reported with its
// status and message. (Neither monitor runs on the test hosts; the server
// here answers as their API documents.)
func TestHTTPPowerdown(t *testing.T) {
	for _, tc := range []struct {
		monitor    Monitor
		path, body string
		status     int
		wantErr    string
	}{
		{newCloudHypervisor("/c", Config{}), "/api/v1/vm.power-button", "", http.StatusNoContent, ""},
		{newFirecracker("/f", Config{}), "/actions", `{"action_type":"SendCtrlAltDel"}`, http.StatusNoContent, ""},
		{newFirecracker("/f", Config{}), "/actions", `{"action_type":"SendCtrlAltDel"}`, http.StatusBadRequest, "400 Bad Request: no i8042"},
	} {
		sock := filepath.Join(t.TempDir(), "api.sock")
		ln, err := net.Listen("unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		var got string
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			body, _ := io.ReadAll(r.Body)
			got = r.Method + " " + r.URL.Path + " " + string(body)
			w.WriteHeader(tc.status)
			if tc.status != http.StatusNoContent {
				_, _ = w.Write([]byte("no i8042\n"))
			}
		})}
		go func() { _ = srv.Serve(ln) }()
		err = tc.monitor.Powerdown(context.Background(), sock)
		srv.Close()
		if want := "PUT " + tc.path + " " + tc.body; got != want {
			t.Errorf("%s: the API got %q, want %q", tc.monitor.Name(), got, want)
		}
		if (tc.wantErr == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.wantErr)) {
			t.Errorf("%s: err = %v, want %q", tc.monitor.Name(), err, tc.wantErr)
		}
	}
}

func withStorage(g Guest, disks []Disk, shares []Share) Guest {
	g.Disks, g.Shares = disks, shares
	return g
}

// Which monitors filter their own system calls: this decides whether the
// launcher installs the project's filter, and it must never do so on top
// of a monitor's own. solo5-hvt is asked its release;
// one whose release cannot be read gets the project's filter (fails
// closed).
func TestFiltersItself(t *testing.T) {
	dir := t.TempDir()
	tender := func(out string) string {
		p := filepath.Join(dir, strings.NewReplacer(" ", "_", ".", "_").Replace(out)+"-hvt")
		if err := os.WriteFile(p, []byte("#!/bin/sh\necho '"+out+"'\n"), 0o755); err != nil {
			t.Fatal(err)
		}
		return p
	}
	qemu, _ := exec.LookPath("qemu-system-x86_64")
	tests := []struct {
		name    string
		monitor Monitor
		want    bool
	}{
		{"solo5-hvt 0.10", newHvt(tender("solo5-hvt v0.10.1"), Config{}), false},
		{"solo5-hvt 0.6.9", newHvt(tender("solo5-hvt 0.6.9"), Config{}), false},
		{"solo5-hvt 0.11", newHvt(tender("solo5-hvt v0.11.0"), Config{}), true},
		{"solo5-hvt 1.0", newHvt(tender("solo5-hvt v1.0.0"), Config{}), true},
		{"solo5-hvt says no release", newHvt(tender("solo5-hvt"), Config{}), false},
		{"solo5-hvt that cannot run", newHvt(filepath.Join(dir, "missing-hvt"), Config{}), false},
		{"solo5-spt", newSpt("/nonexistent/solo5-spt", Config{}), true},
		{"qemu that is not an ELF file", newQemu(tender("qemu"), Config{}), false},
		{"firecracker", newFirecracker("/nonexistent/firecracker", Config{}), true},
		{"cloud-hypervisor", newCloudHypervisor("/nonexistent/cloud-hypervisor", Config{}), true},
	}
	if qemu != "" {
		// Debian's qemu links libseccomp and has -sandbox.
		tests = append(tests, struct {
			name    string
			monitor Monitor
			want    bool
		}{"this host's qemu", newQemu(qemu, Config{}), true})
	}
	for _, tc := range tests {
		if got := tc.monitor.FiltersItself(context.Background(), RunDirect); got != tc.want {
			t.Errorf("%s: FiltersItself = %v, want %v", tc.name, got, tc.want)
		}
	}
}

// A guest with the agent adds to the overhead what qemu under TCG gives it
// more of translation cache; under KVM, and for other monitors, nothing.
func TestAgentMemoryOverhead(t *testing.T) {
	for _, tc := range []struct {
		name    string
		monitor Monitor
		want    int
	}{
		{"qemu tcg", newQemu("/q", Config{Accel: "tcg"}), TCGAgentTranslationCacheMB},
		{"qemu kvm", newQemu("/q", Config{Accel: "kvm"}), 0},
		{"qemu, accel unset (kvm)", newQemu("/q", Config{}), 0},
		{"firecracker", newFirecracker("/fc", Config{}), 0},
		{"cloud-hypervisor", newCloudHypervisor("/ch", Config{}), 0},
	} {
		if got := AgentMemoryOverheadMB(tc.monitor); got != tc.want {
			t.Errorf("%s: %d MiB, want %d", tc.name, got, tc.want)
		}
	}
}
