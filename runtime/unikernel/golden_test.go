package unikernel

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/urunc-dev/containerd-shim-urunc-v2/internal/confined"
	"github.com/urunc-dev/containerd-shim-urunc-v2/monitors"
	"github.com/urunc-dev/containerd-shim-urunc-v2/rootfs"
	"github.com/urunc-dev/containerd-shim-urunc-v2/runtime/config"
	"github.com/urunc-dev/containerd-shim-urunc-v2/runtime/guests"
	"github.com/urunc-dev/containerd-shim-urunc-v2/runtime/launch"
	"github.com/urunc-dev/containerd-shim-urunc-v2/runtime/lifecycle"
)

var updateGolden = flag.Bool("update", false, "rewrite testdata/boot-plans.golden")

// goldenModes are the rootfs modes as rootfs.Select plans them, with host
// paths that are placeholders.
var goldenModes = []rootfs.Plan{
	{Root: rootfs.Root{Kind: rootfs.KindNone}, Kernel: "/host/kernel"},
	{Root: rootfs.Root{Kind: rootfs.KindInitrd}, Kernel: "/host/kernel", Initrd: "/host/initrd"},
	{Root: rootfs.Root{Kind: rootfs.KindBlock}, Kernel: "/host/kernel",
		Disks: []rootfs.Disk{{ID: "rootfs", Source: "/dev/loop9"}}},
	{Root: rootfs.Root{Kind: rootfs.Kind9p, Tag: "fs0"}, Kernel: "/host/kernel",
		Shares: []rootfs.Share{{Kind: rootfs.Kind9p, Tag: "fs0", Source: "/host/rootfs"}}, MonitorServesFiles: true},
	{Root: rootfs.Root{Kind: rootfs.KindVirtiofs, Tag: "fs0"}, Kernel: "/host/kernel",
		Shares: []rootfs.Share{{Kind: rootfs.KindVirtiofs, Tag: "fs0", Socket: "/run/virtiofsd.sock"}}, HelperProcess: &confined.HelperProcess{Socket: "/run/virtiofsd.sock"}},
}

// The monitor's argv, and the config file of a monitor that takes one, for
// every guest type under every monitor it runs under, for each rootfs mode
// the pair takes, without and with a network: the whole matrix, rendered
// by the boot plan's own code (setDevices, placeGuestFiles, finish) and
// compared with testdata/boot-plans.golden (go test -run Golden -update
// rewrites it; review the diff against urunc's forms). A mode a pair
// cannot take is not rendered: rootfs.Select never picks it.
func TestBootPlanGolden(t *testing.T) {
	var b strings.Builder
	net := &launch.Network{Tap: "tap0", MAC: "02:00:00:00:00:01", Address: "198.18.0.2", Mask: "255.255.255.0", Gateway: "198.18.0.1"}
	for _, gname := range guests.Names() {
		g, _ := guests.For(gname)
		for _, mname := range g.Monitors() {
			mcfg := config.HostConfig{}.Monitor(mname)
			mcfg.Path = "/usr/bin/" + mname
			mon := monitorFor(t, mname, mcfg)
			for _, mode := range goldenModes {
				if !pairTakes(g, mon, mode) {
					continue
				}
				for _, n := range []*launch.Network{nil, net} {
					mode := mode
					plan := &bootPlan{monitor: mon, guestType: g, rootfs: &mode, args: []string{"app", "--flag", "arg"}, version: "0.17.0"}
					plan.guest.MemoryMB, plan.guest.VCPUs = mcfg.DefaultMemoryMB, mcfg.DefaultVCPUs
					if mon.Control() == monitors.ControlInheritedFD {
						plan.guest.ControlFD = launch.ControlSocketFD
					}
					if err := plan.setDevices(config.UnikernelConfig{}); err != nil {
						t.Fatal(err)
					}
					header := fmt.Sprintf("## %s under %s, %s root, network: %v", gname, mname, mode.Mode(), n != nil)
					if err := renderGoldenPlan(t, &b, plan, n, header); err != nil {
						fmt.Fprintf(&b, "%s\nrefused: %v\n\n", header, err)
					}
				}
			}
		}
	}
	// The guest agent, on in the host config: a Linux guest booting from
	// an initrd, with and without a network, under each monitor with a
	// channel for it: qemu's virtio-serial port, firecracker's and
	// cloud-hypervisor's hybrid vsock.
	g, _ := guests.For("linux")
	for _, mname := range []string{"qemu", "firecracker", "clh"} {
		mcfg := config.HostConfig{}.Monitor(mname)
		mon := monitorFor(t, mname, mcfg)
		for _, n := range []*launch.Network{nil, net} {
			mode := goldenModes[1]
			plan := &bootPlan{monitor: mon, guestType: g, rootfs: &mode, args: []string{"app", "--flag", "arg"}}
			plan.guest.MemoryMB, plan.guest.VCPUs = mcfg.DefaultMemoryMB, mcfg.DefaultVCPUs
			if mon.Control() == monitors.ControlInheritedFD {
				plan.guest.ControlFD = launch.ControlSocketFD
			}
			plan.setAgentChannel(lifecycle.CreateOptions{Namespace: "ns", ID: "c1", Bundle: "/b"})
			header := fmt.Sprintf("## linux under %s, initrd root, network: %v, guest agent (%s)", mname, n != nil, plan.guest.Agent.Transport)
			if err := renderGoldenPlan(t, &b, plan, n, header); err != nil {
				t.Fatal(err)
			}
		}
	}
	path := filepath.Join("testdata", "boot-plans.golden")
	if *updateGolden {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (go test -run Golden -update writes it)", err)
	}
	if got := b.String(); got != string(want) {
		gotLines, wantLines := strings.Split(got, "\n"), strings.Split(string(want), "\n")
		for i := 0; i < len(gotLines) && i < len(wantLines); i++ {
			if gotLines[i] != wantLines[i] {
				t.Fatalf("boot plans differ from %s at line %d:\n got  %s\n want %s\n(go test -run Golden -update rewrites it)", path, i+1, gotLines[i], wantLines[i])
			}
		}
		t.Fatalf("boot plans differ from %s in length: %d lines, want %d", path, len(gotLines), len(wantLines))
	}
}

// monitorFor builds a monitor without looking for its binary on this host.
func monitorFor(t *testing.T, name string, cfg monitors.Config) monitors.Monitor {
	t.Helper()
	cfg.Path = "/bin/true"
	m, err := monitors.New(name, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// pairTakes tells whether rootfs.Select could pick mode for the pair.
func pairTakes(g guests.Guest, m monitors.Monitor, mode rootfs.Plan) bool {
	switch mode.Root.Kind {
	case rootfs.KindInitrd:
		return monitors.BootsInitrd(m.Name())
	case rootfs.KindBlock:
		return g.SupportsBlock()
	case rootfs.Kind9p, rootfs.KindVirtiofs:
		return g.SupportsFS(string(mode.Root.Kind)) && m.SupportsShare(mode.Root.Kind)
	}
	return true
}

// pathsOutsideRoot returns the paths the monitor is given (in its argv and
// its config file, the guest's command line aside: its paths are the
// guest's) that its confined root will not hold: each must be bound
// there, written there, or made there at run time (the helper's socket,
// the API socket a monitor binds itself, qemu's fd sets).
func pathsOutsideRoot(plan *bootPlan, guestBinds []confined.Bind, argv []string) []string {
	held := map[string]bool{monitors.ControlSocketInRoot: true, monitors.AgentVsockSocketInRoot: true}
	for _, b := range append(append([]confined.Bind{}, guestBinds...), plan.binds...) {
		held[b.Target] = true
	}
	for _, f := range plan.files {
		held[f.Path] = true
	}
	if h := plan.rootfs.HelperProcess; h != nil {
		held[h.Socket] = true
	}
	var given []string
	for _, a := range argv[1:] {
		if a == plan.guest.Cmdline {
			continue
		}
		given = append(given, strings.FieldsFunc(a, func(r rune) bool { return r == ',' || r == '=' || r == ' ' })...)
	}
	for _, f := range plan.files {
		var cfg any
		if json.Unmarshal(f.Data, &cfg) == nil {
			given = append(given, jsonStrings(cfg)...)
		}
	}
	var missing []string
	for _, p := range given {
		if strings.HasPrefix(p, "/") && p != plan.guest.Cmdline && !held[p] && !strings.HasPrefix(p, "/dev/fdset/") {
			missing = append(missing, p)
		}
	}
	return missing
}

func jsonStrings(v any) []string {
	var out []string
	switch v := v.(type) {
	case string:
		out = append(out, v)
	case []any:
		for _, e := range v {
			out = append(out, jsonStrings(e)...)
		}
	case map[string]any:
		for _, e := range v {
			out = append(out, jsonStrings(e)...)
		}
	}
	return out
}

// renderGoldenPlan finishes plan, its devices set, with a copy of n
// (finish may change it) and writes header, the monitor's argv and its
// files to b; the monitor must find every path it is given in its
// confined root. A plan finish refuses writes nothing.
func renderGoldenPlan(t *testing.T, b *strings.Builder, plan *bootPlan, n *launch.Network, header string) error {
	t.Helper()
	guestBinds := plan.placeGuestFiles()
	var np *launch.Network
	if n != nil {
		c := *n
		np = &c
	}
	argv, err := plan.finish(np)
	if err != nil {
		return err
	}
	fmt.Fprintf(b, "%s\n%s\n", header, strings.Join(argv, " "))
	for _, f := range plan.files {
		fmt.Fprintf(b, "-- %s --\n%s\n", f.Path, f.Data)
	}
	if missing := pathsOutsideRoot(plan, guestBinds, argv); len(missing) > 0 {
		t.Errorf("%s: the monitor is given paths its confined root lacks: %v", header, missing)
	}
	b.WriteString("\n")
	return nil
}
