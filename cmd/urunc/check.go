package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	goruntime "runtime"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/pelletier/go-toml/v2"
	"golang.org/x/sys/unix"

	"github.com/urunc-dev/containerd-shim-urunc-v2/monitors"
	"github.com/urunc-dev/containerd-shim-urunc-v2/runtime/config"
	"github.com/urunc-dev/containerd-shim-urunc-v2/runtime/unikernel"
)

// Check outcomes. Only a failure makes check exit non-zero; a warning is
// something a guest may need (a monitor, virtiofsd) that this host lacks.
const (
	checkOK   = "ok"
	checkWarn = "warn"
	checkFail = "fail"
)

type checkResult struct {
	Check  string `json:"check"`
	Status string `json:"status"`
	Detail string `json:"detail"`
	Fix    string `json:"fix,omitempty"`
}

// hostFacts are what the checks read about the host; tests point them
// elsewhere.
type hostFacts struct {
	containerdConfig string
	cgroupRoot       string
}

func checkMain(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	output := outputFlag(fs)
	facts := hostFacts{cgroupRoot: "/sys/fs/cgroup"}
	fs.StringVar(&facts.containerdConfig, "containerd-config", "/etc/containerd/config.toml", "containerd's config file")
	if code, stop := parseFlags(fs, args, output); stop {
		return code
	}
	results := runChecks(ctx, facts)
	code := 0
	for _, r := range results {
		if r.Status == checkFail {
			code = 1
		}
	}
	if *output == "json" {
		_ = writeJSON(stdout, results)
		return code
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CHECK\tSTATUS\tDETAIL\tFIX")
	for _, r := range results {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", r.Check, r.Status, r.Detail, r.Fix)
	}
	_ = tw.Flush()
	return code
}

func runChecks(ctx context.Context, facts hostFacts) []checkResult {
	host, hostErr := config.LoadHostConfig()
	out := []checkResult{checkHostConfig(host, hostErr)}
	out = append(out, checkShim(), checkLauncher())
	found := 0
	for _, name := range monitors.Names() {
		r := checkMonitor(ctx, name, host)
		if r.Status == checkOK {
			found++
		}
		out = append(out, r)
	}
	if found == 0 {
		out = append(out, checkResult{"monitors", checkFail, "no monitor found", "install qemu-system-x86 (or set [monitors.NAME] binary_path)"})
	}
	out = append(out, checkKVM(host), checkQemuData(host), checkDevice("tun", "/dev/net/tun", true, "modprobe tun (the guest's NIC is a tap)"),
		checkDevice("vhost-net", "/dev/vhost-net", false, "modprobe vhost_net (used with [monitors.qemu] vhost = true)"),
		checkVirtiofsd(host), checkCgroup(facts.cgroupRoot), checkContainerd(facts.containerdConfig))
	return out
}

func checkHostConfig(host config.HostConfig, err error) checkResult {
	path := os.Getenv(config.HostConfigEnv)
	if path == "" {
		path = config.DefaultHostConfigPath
	}
	switch {
	case err != nil:
		return checkResult{"host config", checkFail, err.Error(), "fix the key named in " + path}
	case len(host.UnusedKeys) > 0:
		return checkResult{"host config", checkWarn, path + ": keys this runtime does not use: " + strings.Join(host.UnusedKeys, ", "), "remove them, or ignore if they are a newer urunc's"}
	}
	if _, statErr := os.Stat(path); statErr != nil {
		return checkResult{"host config", checkOK, path + " absent: defaults", ""}
	}
	return checkResult{"host config", checkOK, path, ""}
}

func checkShim() checkResult {
	p, err := exec.LookPath("containerd-shim-urunc-v2")
	if err != nil {
		return checkResult{"shim", checkFail, "containerd-shim-urunc-v2 is not on PATH", "make install (containerd finds the shim on its PATH)"}
	}
	return checkResult{"shim", checkOK, p, ""}
}

// checkLauncher looks for urunc-launcher where the shim does: beside its
// binary, symlinks resolved as os.Executable resolves them.
func checkLauncher() checkResult {
	p, err := exec.LookPath("containerd-shim-urunc-v2")
	if err != nil {
		return checkResult{"launcher", checkWarn, "no shim on PATH to look beside", ""}
	}
	if real, err := filepath.EvalSymlinks(p); err == nil {
		p = real
	}
	l, ok := unikernel.LauncherBeside(p)
	if !ok {
		return checkResult{"launcher", checkWarn, l + " is missing: the shim runs each launcher itself, slower", "make install puts urunc-launcher beside the shim"}
	}
	return checkResult{"launcher", checkOK, l, ""}
}

// checkMonitor finds a monitor as the shim would, and asks its version.
func checkMonitor(ctx context.Context, name string, host config.HostConfig) checkResult {
	m, err := monitors.New(name, host.Monitor(name))
	if err != nil {
		detail := err.Error()
		if _, after, ok := strings.Cut(detail, ": "); ok {
			detail, _, _ = strings.Cut(after, ": exec:") // drop the hypervisor prefix and exec's repetition
		}
		return checkResult{"monitor " + name, checkWarn, detail, "install it, or set [monitors." + name + "] binary_path"}
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	v, _ := exec.CommandContext(ctx, m.Binary(), "--version").CombinedOutput()
	first, _, _ := strings.Cut(strings.TrimSpace(string(v)), "\n")
	return checkResult{"monitor " + name, checkOK, m.Binary() + " " + first, ""}
}

// checkKVM runs a few instructions of a guest on a vCPU: /dev/kvm can
// exist, create VMs and still fail to run one (nested virtualization off,
// a KVM internal error), and then a guest hangs at 100% CPU with no
// output. Under TCG qemu does not need KVM, so the failure is a warning
// there.
func checkKVM(host config.HostConfig) checkResult {
	return kvmResult(host.Monitor("qemu").Accel == "tcg", func() kvmProbe { return runKVMProbe("/dev/kvm", kvmProbeTimeout) })
}

// tcgFix is how to choose TCG, as the host config reads it.
func tcgFix() string {
	path := os.Getenv(config.HostConfigEnv)
	if path == "" {
		path = config.DefaultHostConfigPath
	}
	return "load kvm_intel or kvm_amd (in a VM: nested virtualization on), or have qemu emulate (TCG, slower): in " +
		path + ` set [monitors.qemu] accel = "tcg" (firecracker, cloud-hypervisor and solo5 need KVM)`
}

func kvmResult(qemuUsesTCG bool, probe func() kvmProbe) checkResult {
	if goruntime.GOARCH != "amd64" {
		return checkResult{"kvm", checkWarn, errNoVCPUCheck.Error(), ""}
	}
	ok, detail := kvmVerdict(probe())
	switch {
	case ok:
		return checkResult{"kvm", checkOK, detail, ""}
	case qemuUsesTCG:
		return checkResult{"kvm", checkWarn, detail, "none needed for qemu: the host config selects TCG; firecracker, cloud-hypervisor and solo5 need KVM"}
	default:
		return checkResult{"kvm", checkFail, detail, tcgFix()}
	}
}

// checkQemuData looks for the firmware qemu loads for an x86 guest.
func checkQemuData(host config.HostConfig) checkResult {
	dirs := []string{"/usr/share/qemu", "/usr/share/seabios", "/usr/local/share/qemu"}
	if d := host.Monitor("qemu").DataPath; d != "" {
		dirs = []string{d}
	}
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "bios-256k.bin")); err == nil {
			return checkResult{"qemu data", checkOK, d + " has bios-256k.bin", ""}
		}
	}
	return checkResult{"qemu data", checkWarn, "no bios-256k.bin in " + strings.Join(dirs, ", "), "install qemu-system-data (or seabios), or set [monitors.qemu] data_path"}
}

func checkDevice(name, path string, needed bool, fix string) checkResult {
	st, err := os.Stat(path)
	if err != nil || st.Mode()&os.ModeCharDevice == 0 {
		status := checkWarn
		if needed {
			status = checkFail
		}
		return checkResult{name, status, path + " is missing", fix}
	}
	return checkResult{name, checkOK, path, ""}
}

func checkVirtiofsd(host config.HostConfig) checkResult {
	v := host.Virtiofsd()
	if st, err := os.Stat(v.Path); err == nil && st.Mode()&0o111 != 0 {
		return checkResult{"virtiofsd", checkOK, v.Path, ""}
	}
	return checkResult{"virtiofsd", checkWarn, v.Path + " is missing: shared roots use 9p", "install virtiofsd, or set [extra_binaries.virtiofsd] path"}
}

// checkCgroup names the cgroup version and the controllers a monitor's
// limits need.
func checkCgroup(root string) checkResult {
	var st unix.Statfs_t
	if err := unix.Statfs(root, &st); err != nil {
		return checkResult{"cgroup", checkFail, err.Error(), "mount cgroup2 at " + root}
	}
	if st.Type != unix.CGROUP2_SUPER_MAGIC {
		// v1: one hierarchy per controller, each a directory.
		var have []string
		for _, c := range []string{"cpu", "memory", "pids", "devices", "freezer"} {
			if _, err := os.Stat(filepath.Join(root, c)); err == nil {
				have = append(have, c)
			}
		}
		return checkResult{"cgroup", checkOK, "v1: " + strings.Join(have, " "), ""}
	}
	data, err := os.ReadFile(filepath.Join(root, "cgroup.controllers"))
	if err != nil {
		return checkResult{"cgroup", checkFail, err.Error(), ""}
	}
	have := strings.Fields(string(data))
	var missing []string
	for _, c := range []string{"cpu", "memory", "pids"} {
		if !slices.Contains(have, c) {
			missing = append(missing, c)
		}
	}
	if len(missing) > 0 {
		return checkResult{"cgroup", checkWarn, "v2 without " + strings.Join(missing, ", "), "enable them in the root's cgroup.subtree_control"}
	}
	return checkResult{"cgroup", checkOK, "v2: " + strings.Join(have, " "), ""}
}

// checkContainerd looks in containerd's config for a runtime of this shim
// (runtime_type io.containerd.urunc.v2), which the CRI needs for a
// RuntimeClass; ctr and nerdctl name the runtime themselves.
func checkContainerd(path string) checkResult {
	fix := "add to " + path + ` (config version 3): [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.urunc] runtime_type = "io.containerd.urunc.v2"`
	data, err := os.ReadFile(path)
	if err != nil {
		return checkResult{"containerd config", checkWarn, err.Error(), fix}
	}
	var cfg map[string]any
	if err := toml.Unmarshal(data, &cfg); err != nil {
		return checkResult{"containerd config", checkFail, "parse " + path + ": " + err.Error(), "fix the file"}
	}
	var handlers []string
	plugins, _ := cfg["plugins"].(map[string]any)
	for _, plugin := range []string{"io.containerd.cri.v1.runtime", "io.containerd.grpc.v1.cri"} {
		p, _ := plugins[plugin].(map[string]any)
		ctrd, _ := p["containerd"].(map[string]any)
		runtimes, _ := ctrd["runtimes"].(map[string]any)
		for name, r := range runtimes {
			if rt, _ := r.(map[string]any); rt["runtime_type"] == "io.containerd.urunc.v2" {
				handlers = append(handlers, name)
			}
		}
	}
	if len(handlers) == 0 {
		return checkResult{"containerd config", checkWarn, "no CRI runtime of type io.containerd.urunc.v2 in " + path, fix}
	}
	sort.Strings(handlers)
	return checkResult{"containerd config", checkOK, "CRI runtime handler " + strings.Join(handlers, ", "), ""}
}
