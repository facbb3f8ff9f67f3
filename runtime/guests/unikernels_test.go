package guests

import (
	"strings"
	"testing"

	"github.com/urunc-dev/containerd-shim-urunc-v2/rootfs"
)

// The command line urunc gives each unikernel type, with and without a
// network, for its rootfs modes.
func TestUnikernelCmdlines(t *testing.T) {
	net := &Net{Address: "198.18.0.2", Mask: "255.255.255.0", Gateway: "198.18.0.1", MAC: "02:00:00:00:00:01"}
	env := Process{Env: []string{"A=1", "B=2"}}
	checkCmdlines(t, []cmdlineCase{
		{name: "unikraft current, initrd, net, env", guest: unikraft{},
			req:  Request{Args: []string{"/app", "-p", "80"}, Root: rootfs.Root{Kind: rootfs.KindInitrd}, Net: net, Process: env, Version: "0.17.0"},
			want: `Unikraft env.vars=[ A=1 B=2 ] netdev.ip=198.18.0.2/24:198.18.0.1:8.8.8.8 vfs.fstab=[ "initrd0:/:extract:::" ] -- /app -p 80`},
		{name: "unikraft without a version is current, 9p", guest: unikraft{},
			req:  Request{Args: []string{"/app"}, Root: rootfs.Root{Kind: rootfs.Kind9p, Tag: "fs0"}},
			want: `Unikraft vfs.fstab=[ "fs0:/:9pfs:::" ] -- /app`},
		{name: "unikraft 0.16.1 is current", guest: unikraft{},
			req:  Request{Args: []string{"/app"}, Version: "0.16.1"},
			want: `Unikraft -- /app`},
		{name: "unikraft before 0.16.1: compat form, no env", guest: unikraft{},
			req:  Request{Args: []string{"/app"}, Root: rootfs.Root{Kind: rootfs.KindInitrd}, Net: net, Process: env, Version: "0.15.0"},
			want: `Unikraft netdev.ipv4_addr=198.18.0.2 netdev.ipv4_gw_addr=198.18.0.1 netdev.ipv4_subnet_mask=255.255.255.0 vfs.rootfs=initrd -- /app`},
		{name: "unikraft env with a space is refused", guest: unikraft{},
			req: Request{Args: []string{"/app"}, Process: Process{Env: []string{"A=two words"}}}, wantErr: `environment variable 0 ("A=two words") holds ' '`},
		{name: "rumprun net, block root, env", guest: rumprun{},
			req: Request{Args: []string{"/app", "a&b"}, Root: rootfs.Root{Kind: rootfs.KindBlock}, Net: net, Process: env},
			want: `{"cmdline":"/app a&b","env":"A=1","env":"B=2",` +
				`"net":{"if":"ukvmif0","cloner":"True","type":"inet","method":"static","addr":"198.18.0.2","mask":"1","gw":"198.18.0.1"},` +
				`"blk":{"source":"etfs","path":"/dev/ld0a","fstype":"blk","mountpoint":"/data"}}`},
		{name: "rumprun bare", guest: rumprun{}, req: Request{Args: []string{"hello"}}, want: `{"cmdline":"hello"}`},
		{name: "mirage net", guest: mirage{}, req: Request{Args: []string{"--hello=x"}, Net: net},
			want: "--ipv4=198.18.0.2/24 --ipv4-gateway=198.18.0.1 --hello=x"},
		{name: "mewz net", guest: mewz{}, req: Request{Args: []string{"ignored"}, Net: net}, want: "ip=198.18.0.2/24 gateway=198.18.0.1"},
		{name: "mewz without net", guest: mewz{}, req: Request{}, want: ""},
		{name: "hermit net and args", guest: hermit{}, req: Request{Args: []string{"/app", "x"}, Net: net},
			want: "ip=198.18.0.2/24 gateway=198.18.0.1 -- /app x"},
		{name: "hermit args only", guest: hermit{}, req: Request{Args: []string{"/app"}}, want: "/app"},
		{name: "bad mask", guest: mirage{}, req: Request{Net: &Net{Address: "1.2.3.4", Mask: "255.0.255.0"}}, wantErr: "not contiguous"},
	})
}

// cmdlineCase is one rendering of a guest's command line.
type cmdlineCase struct {
	name    string
	guest   Guest
	req     Request
	want    string
	wantErr string
}

func checkCmdlines(t *testing.T, cases []cmdlineCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.guest.Cmdline(tc.req)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Fatalf("got  %s\nwant %s", got, tc.want)
			}
		})
	}
}

// urunc's table of guest and monitor pairs, enforced with an error that
// names both.
func TestCheckMonitor(t *testing.T) {
	valid := map[string][]string{
		"linux":    {"qemu", "firecracker", "clh"},
		"unikraft": {"qemu", "firecracker"},
		"rumprun":  {"hvt", "spt"},
		"mirage":   {"qemu", "hvt", "spt"},
		"mewz":     {"qemu"},
		"hermit":   {"qemu"},
	}
	all := []string{"qemu", "firecracker", "hvt", "spt", "clh"}
	for name, ok := range valid {
		g, err := For(name)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range all {
			err := CheckMonitor(g, m)
			want := strings.Contains(" "+strings.Join(ok, " ")+" ", " "+m+" ")
			if (err == nil) != want {
				t.Errorf("%s under %s: %v, want allowed=%v", name, m, err, want)
			}
			if err != nil && (!strings.Contains(err.Error(), "guest "+name) || !strings.Contains(err.Error(), "monitor "+m)) {
				t.Errorf("error does not name both: %v", err)
			}
		}
	}
}

func TestOlderThan(t *testing.T) {
	for v, want := range map[string]bool{"": false, "0.15.0": true, "0.16.0": true, "0.16.1": false, "v0.17": false, "0.9": true, "1.0.0-rc1": false, "garbage": false} {
		if got := olderThan(v, unikraftCompatVersion); got != want {
			t.Errorf("olderThan(%q) = %v, want %v", v, got, want)
		}
	}
}

// mewz reports through qemu's isa-debug-exit: (v<<1)|1 is the guest's v;
// qemu's own statuses survive: 0 powered down, 1 qemu failed (also a
// guest's v=0, which cannot be told apart and must not read as success),
// 128+signal qemu killed; an even status is the monitor's own.
func TestMewzGuestExit(t *testing.T) {
	for _, tc := range []struct {
		name         string
		status, want int
	}{
		{"guest powered down", 0, 0},
		{"qemu failed to start", 1, 1},
		{"guest wrote 1", 3, 1},
		{"guest wrote 3", 7, 3},
		{"guest wrote 42", 85, 42},
		{"guest wrote 63", 127, 63},
		{"even status is qemu's", 2, 2},
		{"qemu killed", 137, 137},
		{"qemu terminated", 143, 143},
		{"odd status past 127 is qemu's", 129, 129},
	} {
		if got := (mewz{}).GuestExit(tc.status); got != tc.want {
			t.Errorf("%s: GuestExit(%d) = %d, want %d", tc.name, tc.status, got, tc.want)
		}
	}
}
