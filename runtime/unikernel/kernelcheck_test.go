package unikernel

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/log"
	"github.com/sirupsen/logrus"

	"github.com/urunc-dev/containerd-shim-urunc-v2/internal/kernelimage"
	"github.com/urunc-dev/containerd-shim-urunc-v2/monitors"
	"github.com/urunc-dev/containerd-shim-urunc-v2/runtime/config"
	"github.com/urunc-dev/containerd-shim-urunc-v2/runtime/lifecycle"
)

// Kernels as kernelimage reads them: an ELF vmlinux with and without the
// virtio console's string, and a file it cannot tell.
var (
	kernelWithConsole    = []byte("\x7fELF\x02\x01\x01 text virtio-ports data")
	kernelWithoutConsole = []byte("\x7fELF\x02\x01\x01 text virtio_blk data")
	kernelOfUnknownKind  = []byte("\x02\x21\x4c\x18 an lz4 file")
	// virtio's vsock transport built in (its driver's name), and only
	// its common part (a module name that begins the same).
	kernelWithVsock       = []byte("\x7fELF\x02\x01\x01 text vmw_vsock_virtio_transport\x00 data")
	kernelWithVsockCommon = []byte("\x7fELF\x02\x01\x01 text vmw_vsock_virtio_transport_common\x00 data")
)

// loggedCtx is a context whose log goes to the returned buffer.
func loggedCtx() (context.Context, *bytes.Buffer) {
	var buf bytes.Buffer
	l := logrus.New()
	l.SetOutput(&buf)
	l.SetLevel(logrus.InfoLevel)
	return log.WithLogger(context.Background(), logrus.NewEntry(l)), &buf
}

// A kernel without the virtio console built in is said by name at
// Create and boots without the agent; one that has it, or cannot be told,
// or cannot be opened, keeps it. The verdict is kept in the state dir.
func TestKernelTakesAgent(t *testing.T) {
	console, vsock := agentChannelDriver(monitors.AgentVirtioSerial), agentChannelDriver(monitors.AgentHybridVsock)
	for _, tc := range []struct {
		name   string
		kernel []byte // nil: no file
		driver kernelimage.Feature
		want   bool
		logged string
	}{
		{"built in", kernelWithConsole, console, true, ""},
		{"absent", kernelWithoutConsole, console, false, "the guest kernel /boot/kernel lacks CONFIG_VIRTIO_CONSOLE=y (built in"},
		{"cannot be told", kernelOfUnknownKind, console, true, "lz4 payload"},
		{"no file", nil, console, true, "not checked"},
		{"vsock built in", kernelWithVsock, vsock, true, ""},
		{"vsock absent, console built in", kernelWithConsole, vsock, false, "the guest kernel /boot/kernel lacks CONFIG_VIRTIO_VSOCKETS=y (built in"},
		{"vsock absent, its common part built in", kernelWithVsockCommon, vsock, false, "lacks CONFIG_VIRTIO_VSOCKETS=y"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rootfsDir := t.TempDir()
			if tc.kernel != nil {
				if err := os.MkdirAll(filepath.Join(rootfsDir, "boot"), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(rootfsDir, "boot", "kernel"), tc.kernel, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			state := t.TempDir()
			host := config.HostConfig{Runtime: config.RuntimeConfig{StateDir: state}}
			ctx, logged := loggedCtx()
			if got := kernelTakesAgent(ctx, host, "c1", rootfsDir, "/boot/kernel", tc.driver); got != tc.want {
				t.Fatalf("takes the agent: %v, want %v; log:\n%s", got, tc.want, logged)
			}
			if tc.logged != "" && !strings.Contains(logged.String(), tc.logged) {
				t.Fatalf("log lacks %q:\n%s", tc.logged, logged)
			}
			if !tc.want && !strings.Contains(logged.String(), "level=warning") {
				t.Fatalf("not a warning:\n%s", logged)
			}
			_, err := os.Stat(filepath.Join(state, kernelimage.CacheFile))
			if certain := tc.name != "cannot be told" && tc.name != "no file"; certain != (err == nil) {
				t.Fatalf("cache after a %s kernel: %v", tc.name, err)
			}
		})
	}
}

// The image's symlink to a host file is resolved inside the rootfs: the
// host's file is never read.
func TestKernelTakesAgentStaysInRootfs(t *testing.T) {
	host := filepath.Join(t.TempDir(), "host-kernel")
	if err := os.WriteFile(host, kernelWithoutConsole, 0o644); err != nil {
		t.Fatal(err)
	}
	rootfsDir := t.TempDir()
	if err := os.Symlink(host, filepath.Join(rootfsDir, "kernel")); err != nil {
		t.Fatal(err)
	}
	ctx, logged := loggedCtx()
	if !kernelTakesAgent(ctx, config.HostConfig{Runtime: config.RuntimeConfig{StateDir: t.TempDir()}}, "c1", rootfsDir, "/kernel", kernelimage.VirtioConsole) {
		t.Fatalf("the host's file was read:\n%s", logged)
	}
}

// planBoot leaves the agent out for a kernel without the channel's
// driver, and keeps it for one with it.
func TestPlanBootAgentKernelCheck(t *testing.T) {
	needReal(t)
	agent := standInAgentBinary(t)
	for _, tc := range []struct {
		name      string
		kernel    []byte
		withAgent bool
	}{
		{"with the console", kernelWithConsole, true},
		{"without it", kernelWithoutConsole, false},
		{"cannot be told", kernelOfUnknownKind, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			host := hostConfig(t)
			host.Guests.Linux.Agent, host.Guests.Linux.AgentPath = true, agent
			a := newAgentPlan(t, host, tc.kernel)
			b, cfg, opts, rootfsDir, ctx, logged := a.bundle, a.cfg, a.opts, a.rootfsDir, a.ctx, a.logged
			plan, err := planBoot(ctx, cfg, b.spec, opts, rootfsDir)
			if err != nil {
				t.Fatal(err)
			}
			if got := plan.agentSocket != "" && plan.guest.Agent != nil; got != tc.withAgent {
				t.Fatalf("agent in the plan: %v, want %v; log:\n%s", got, tc.withAgent, logged)
			}
			if !tc.withAgent && !strings.Contains(logged.String(), "CONFIG_VIRTIO_CONSOLE=y") {
				t.Fatalf("no warning naming the option:\n%s", logged)
			}
			// The agent's larger translation cache under TCG is counted
			// in the overhead only where the agent boots.
			wantOverhead := host.Monitor("qemu").MemoryOverheadMB
			if tc.withAgent {
				wantOverhead += monitors.TCGAgentTranslationCacheMB
			}
			if plan.size.overhead != int64(wantOverhead)<<20 {
				t.Fatalf("overhead %d MiB, want %d", plan.size.overhead>>20, wantOverhead)
			}
			// A process only the agent can start (a lowercase variable,
			// which the kernel command line cannot carry): without the
			// agent, Create's error says why the agent is not there.
			b.spec.Process.Env = append(b.spec.Process.Env, "http_proxy=http://198.18.0.1:3128")
			_, err = planBoot(ctx, cfg, b.spec, opts, rootfsDir)
			if tc.withAgent && err != nil {
				t.Fatalf("with the agent: %v", err)
			}
			if !tc.withAgent && (err == nil || !strings.Contains(err.Error(), "lacks CONFIG_VIRTIO_CONSOLE=y") || !strings.Contains(err.Error(), "http_proxy")) {
				t.Fatalf("without the agent: %v; want the kernel's option and the variable named", err)
			}
		})
	}
}

// standInAgentBinary is a file in the agent binary's place: planBoot only
// puts it in the archive.
func standInAgentBinary(t *testing.T) string {
	t.Helper()
	agent := filepath.Join(t.TempDir(), "urunc-agent")
	if err := os.WriteFile(agent, []byte("agent"), 0o755); err != nil {
		t.Fatal(err)
	}
	return agent
}

// agentPlan is what planBoot takes for a guest of kernel under host.
type agentPlan struct {
	bundle    *testBundle
	cfg       config.UnikernelConfig
	opts      lifecycle.CreateOptions
	rootfsDir string
	ctx       context.Context
	logged    *bytes.Buffer
}

func newAgentPlan(t *testing.T, host config.HostConfig, kernel []byte) agentPlan {
	t.Helper()
	b := newBundle(t, []string{"/app"}, nil)
	rootfsDir := lifecycle.RootfsDir(b.dir, b.spec)
	if err := os.WriteFile(filepath.Join(rootfsDir, "kernel"), kernel, 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.ResolveUnikernelConfig(b.spec.Annotations, rootfsDir)
	if err != nil {
		t.Fatal(err)
	}
	ctx, logged := loggedCtx()
	return agentPlan{bundle: b, cfg: cfg, opts: lifecycle.CreateOptions{ID: b.id, Namespace: "unit", Bundle: b.dir, Host: host},
		rootfsDir: rootfsDir, ctx: ctx, logged: logged}
}

// A guest with the agent under qemu's TCG has the agent's translation
// cache counted on top of the monitor's overhead, defaulted or set; under
// KVM nothing is added.
func TestPlanBootAgentOverhead(t *testing.T) {
	needReal(t)
	agent := standInAgentBinary(t)
	for _, tc := range []struct {
		name, monitor string
		wantMB        int
	}{
		{"tcg, the default overhead", "accel = \"tcg\"", 32 + monitors.TCGTranslationCacheMB + monitors.TCGAgentTranslationCacheMB},
		{"tcg, an overhead set to 7", "accel = \"tcg\"\nmemory_overhead_mb = 7", 7 + monitors.TCGAgentTranslationCacheMB},
		{"kvm", "accel = \"kvm\"", 32},
	} {
		t.Run(tc.name, func(t *testing.T) {
			host, err := config.ParseHostConfig("test", []byte(fmt.Sprintf("[monitors.qemu]\npath = %q\n%s\n\n[runtime]\nstate_dir = %q\n\n[guests.linux]\nagent = true\nagent_path = %q\n",
				realEnv.standin, tc.monitor, t.TempDir(), agent)))
			if err != nil {
				t.Fatal(err)
			}
			a := newAgentPlan(t, host, kernelWithConsole)
			plan, err := planBoot(a.ctx, a.cfg, a.bundle.spec, a.opts, a.rootfsDir)
			if err != nil {
				t.Fatal(err)
			}
			if plan.guest.Agent == nil {
				t.Fatalf("no agent in the plan:\n%s", a.logged)
			}
			if plan.size.overhead != int64(tc.wantMB)<<20 {
				t.Fatalf("overhead %d MiB, want %d", plan.size.overhead>>20, tc.wantMB)
			}
		})
	}
}

// The test kernels, xz-compressed bzImages, read through the host's xz,
// which the shim starts and waits for through the reaper. Neither has
// virtio's vsock transport built in (Debian's has it as a module, whose
// name must not pass for the built-in driver).
func TestKernelTakesAgentTestKernels(t *testing.T) {
	needReal(t)
	for _, tc := range []struct {
		path   string
		driver kernelimage.Feature
		want   bool
	}{
		{"/var/cache/urunc-test/guest-builtin/bzImage", kernelimage.VirtioConsole, true},
		{"/var/cache/urunc-test/guest/vmlinuz", kernelimage.VirtioConsole, false},
		{"/var/cache/urunc-test/guest-builtin/bzImage", kernelimage.VirtioVsock, false},
		{"/var/cache/urunc-test/guest/vmlinuz", kernelimage.VirtioVsock, false},
	} {
		t.Run(filepath.Base(tc.path)+" "+tc.driver.Option, func(t *testing.T) {
			data, err := os.ReadFile(tc.path)
			if err != nil {
				t.Skipf("no test kernel: %v", err)
			}
			rootfsDir := t.TempDir()
			if err := os.WriteFile(filepath.Join(rootfsDir, "kernel"), data, 0o644); err != nil {
				t.Fatal(err)
			}
			ctx, logged := loggedCtx()
			host := config.HostConfig{Runtime: config.RuntimeConfig{StateDir: t.TempDir()}}
			if got := kernelTakesAgent(ctx, host, "c1", rootfsDir, "/kernel", tc.driver); got != tc.want {
				t.Fatalf("takes the agent: %v, want %v; log:\n%s", got, tc.want, logged)
			}
			if strings.Contains(logged.String(), "cannot be told") {
				t.Fatalf("not told:\n%s", logged)
			}
		})
	}
}
