package guests

import (
	"fmt"
	"strings"

	"github.com/urunc-dev/containerd-shim-urunc-v2/internal/annotation"
	"github.com/urunc-dev/containerd-shim-urunc-v2/rootfs"
)

// linux is a Linux kernel booting a single application. The command line
// follows urunc's, so that images built for urunc (and their inits, urunit
// among them) see what they expect.
type linux struct{}

func (linux) Name() string     { return "linux" }
func (linux) Devices() Devices { return Devices{} }

// Monitors: urunc runs Linux guests under qemu, firecracker and
// cloud-hypervisor.
func (linux) Monitors() []string  { return []string{"qemu", "firecracker", "clh"} }
func (linux) SupportsBlock() bool { return true }

// UnpacksAppendedInitrd: the kernel unpacks every cpio archive of its
// initrd in turn, so the pod's files appended after the image's reach an
// initrd root.
func (linux) UnpacksAppendedInitrd() bool { return true }

// ReportsExitOnConsole: with panic=-1 the kernel prints init's exit status
// and resets; the monitor then exits 0.
func (linux) ReportsExitOnConsole() bool { return true }

// TakesAgent: the agent is a static Linux program, run by rdinit=.
func (linux) TakesAgent() bool { return true }

// SupportsFS lists the roots urunc boots a Linux guest from.
func (linux) SupportsFS(fsType string) bool {
	switch fsType {
	case "ext2", "ext3", "ext4", "9p", "virtiofs":
		return true
	}
	return false
}

// rootArgs are urunc's root parameters per root kind; the 9p flags are
// urunc's too (msize and cache mode matter for performance, posixacl for
// apps that check permissions).
func rootArgs(r rootfs.Root) ([]string, error) {
	switch r.Kind {
	case rootfs.KindInitrd:
		return []string{"root=/dev/ram0", "rw"}, nil
	case rootfs.KindBlock:
		if r.ReadOnly {
			return []string{"root=/dev/vda", "ro"}, nil
		}
		return []string{"root=/dev/vda", "rw"}, nil
	case rootfs.Kind9p:
		return []string{"root=" + r.Tag, "rw", "rootfstype=9p",
			"rootflags=trans=virtio,version=9p2000.L,msize=5000000,cache=mmap,posixacl"}, nil
	case rootfs.KindVirtiofs:
		return []string{"root=" + r.Tag, "rw", "rootfstype=virtiofs"}, nil
	case rootfs.KindNone:
		return nil, nil
	}
	return nil, fmt.Errorf("linux guest: unknown root kind %q", r.Kind)
}

func (linux) Cmdline(req Request) (string, error) {
	if len(req.Args) == 0 {
		return "", fmt.Errorf("linux guest: no init to run: the container has no args and no %scmdline", annotation.Prefix)
	}
	// printk.time=1 stamps every kernel record on the console, whatever
	// the kernel's build default: the shim tells the kernel's end of the
	// guest (its exit status) from the app's output by that stamp.
	// i8042.noaux: no PS/2 mouse probe. A headless guest has no use for
	// it, and the probe runs long after boot (about 0.3 s under TCG),
	// beside the app and in the way of a clean power-off, which waits
	// for it to end; the keyboard port stays, firecracker's Ctrl-Alt-Del
	// arrives on it.
	parts := []string{"panic=-1", "console=ttyS0", "printk.time=1", "i8042.noaux"}
	root, err := rootArgs(req.Root)
	if err != nil {
		return "", err
	}
	parts = append(parts, root...)
	if n := req.Net; n != nil {
		// ip='s hostname field is the kernel's one way to set the
		// hostname; without a network the guest reads /etc/hostname.
		host, err := kernelHostname(req.Hostname)
		if err != nil {
			return "", err
		}
		parts = append(parts, fmt.Sprintf("ip=%s::%s:%s:%s:eth0:off", n.Address, n.Gateway, n.Mask, host))
	}
	if req.Agent != "" {
		// The agent runs the app from its own config: nothing of the
		// app is on the command line. It always starts from an initrd
		// (its own where the root is a disk or a share) and mounts the
		// root the parameters above name, as the kernel would.
		if req.Root.Kind == rootfs.KindNone {
			return "", fmt.Errorf("linux guest: the guest agent needs a root to boot from")
		}
		// acpi=noirq: the agent's channel is a virtio PCI device, and
		// enabling its ACPI interrupt link (qemu's i440fx LNKx) took
		// about 0.2 s of the boot under TCG; the BIOS's MP table routes
		// the same interrupt at no cost, and virtio uses MSI-X anyway.
		// The ACPI power button (its SCI) is not a PCI interrupt and
		// still works.
		parts = append(parts, "acpi=noirq", "rdinit="+req.Agent)
		return strings.Join(parts, " "), nil
	}
	args, err := cmdlineArgs(req.Args)
	if err != nil {
		return "", err
	}
	if usesUrunitConfig(req) {
		// The config is the initrd the monitor loads; the kernel keeps it
		// there for urunit instead of unpacking it.
		parts = append(parts, "retain_initrd", "URUNIT_CONFIG="+urunitRetainedConfig)
	} else {
		env, err := cmdlineEnv(req.Process.Env)
		if err != nil {
			return "", err
		}
		parts = append(parts, env...)
	}
	// The kernel runs rdinit= from an initrd and init= from any other root.
	initParam := "init="
	if req.Root.Kind == rootfs.KindInitrd {
		initParam = "rdinit="
	}
	parts = append(parts, initParam+args[0], "--")
	parts = append(parts, args[1:]...)
	cmdline := strings.Join(parts, " ")
	if len(cmdline) > maxCmdline {
		return "", fmt.Errorf("linux guest: the kernel command line (app arguments and environment) is %d bytes, more than the %d the kernel keeps", len(cmdline), maxCmdline)
	}
	return cmdline, nil
}

// maxCmdline is the longest command line the kernel keeps whole:
// COMMAND_LINE_SIZE (2048 on x86 and arm64) less its NUL; the rest would be
// cut off silently.
const maxCmdline = 2047

// maxInitEnv is how many variables the command line may give init: the
// kernel holds MAX_INIT_ENVS (32) and starts with HOME and TERM; one more
// and it panics at boot.
const maxInitEnv = 30

// defaultHostname is the guest's hostname when the spec names none.
const defaultHostname = "urunc"

// kernelHostname is the hostname for ip='s field: the spec's, which the
// field's ':' separators and the kernel's 64 bytes must hold.
func kernelHostname(h string) (string, error) {
	if h == "" {
		return defaultHostname, nil
	}
	if len(h) > 64 {
		return "", fmt.Errorf("linux guest: hostname %q is longer than the kernel's 64 bytes", h)
	}
	for _, r := range h {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '.' || r == '_') {
			return "", fmt.Errorf("linux guest: hostname %q holds %q: the kernel command line's ip= takes letters, digits, '-', '_' and '.'", h, r)
		}
	}
	return h, nil
}

// cmdlineEnv renders the app's environment for the kernel command line:
// the kernel hands init every parameter it does not know that holds '='
// and no '.' in its name, as an environment variable, and so reaches an
// init that reads no config file. A value with spaces is double-quoted,
// which the kernel strips. What the command line cannot carry is refused,
// naming the variable: a name that is not a shell name (a '.' makes it a
// module's parameter, ignored), a name starting with a lowercase letter
// (the kernel's own parameters are lowercase and would take it), a double
// quote or a control character in the value, more variables than the
// kernel holds.
func cmdlineEnv(env []string) ([]string, error) {
	out := make([]string, 0, len(env))
	names := map[string]bool{}
	for i, e := range env {
		name, value, ok := strings.Cut(e, "=")
		if !ok {
			return nil, fmt.Errorf("linux guest: environment variable %d (%q) has no '='", i, e)
		}
		if !isEnvName(name) {
			return nil, fmt.Errorf("linux guest: environment variable %q: the kernel command line carries only names of letters, digits and '_', not starting with a digit", name)
		}
		if name[0] >= 'a' && name[0] <= 'z' {
			return nil, fmt.Errorf("linux guest: environment variable %q starts with a lowercase letter, which the kernel may take as its own parameter; an init that reads urunit's config takes it", name)
		}
		for _, r := range value {
			if r == '"' || (r < 0x20 && r != '\t') || r == 0x7f {
				return nil, fmt.Errorf("linux guest: environment variable %s holds %q, which the kernel command line cannot carry", name, r)
			}
		}
		if name != "HOME" && name != "TERM" {
			names[name] = true
		}
		if strings.ContainsAny(value, " \t") || strings.IndexByte(value, latin1NoBreakSpace) >= 0 {
			value = `"` + value + `"`
		}
		out = append(out, name+"="+value)
	}
	if len(names) > maxInitEnv {
		return nil, fmt.Errorf("linux guest: %d environment variables, more than the %d the kernel command line gives init", len(names), maxInitEnv)
	}
	return out, nil
}

func isEnvName(s string) bool {
	if s == "" || s[0] >= '0' && s[0] <= '9' {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_') {
			return false
		}
	}
	return true
}

// urunitRetainedConfig is where the kernel exposes a retained initrd.
const urunitRetainedConfig = "/sys/firmware/initrd"

// usesUrunitConfig follows urunc: an app named urunit is urunc's init,
// which reads its environment, identity and block volumes from a config
// file. With a root other than an initrd that file is the initrd itself.
// (An initrd root would need the file added into the image's initrd,
// which this runtime does not rewrite.)
func usesUrunitConfig(req Request) bool {
	return RunsUrunit(req.Args) &&
		req.Root.Kind != rootfs.KindInitrd && req.Root.Kind != rootfs.KindNone
}

// RunsUrunit tells whether the app is urunc's init, urunit, which stays
// the guest's PID 1 (no agent in front of it).
func RunsUrunit(args []string) bool {
	return len(args) > 0 && strings.Contains(args[0], "urunit")
}

// InitConfig renders urunit's config: the app's environment (UES..UEE),
// its identity and working directory (UCS..UCE) and the block volumes to
// mount by disk serial (UBS..UBE).
func (linux) InitConfig(req Request) []byte {
	if !usesUrunitConfig(req) {
		return nil
	}
	var b strings.Builder
	b.WriteString("UES\n")
	for _, e := range req.Process.Env {
		b.WriteString(e + "\n")
	}
	b.WriteString("UEE\nUCS\n")
	cwd := req.Process.Cwd
	if cwd == "" {
		cwd = "/"
	}
	fmt.Fprintf(&b, "UID:%d\nGID:%d\nWD:%s\nUCE\n", req.Process.UID, req.Process.GID, cwd)
	if len(req.Volumes) > 0 {
		b.WriteString("UBS\n")
		for _, v := range req.Volumes {
			fmt.Fprintf(&b, "ID: %s\nMP: %s\n", v.ID, v.MountPoint)
		}
		b.WriteString("UBE\n")
	}
	return []byte(b.String())
}

// latin1NoBreakSpace is the one byte above ASCII that the kernel's
// command-line parser takes for a space.
const latin1NoBreakSpace = 0xA0

// cmdlineArgs renders the app's arguments for the kernel command line.
// The kernel splits it on spaces and tabs and gives double quotes a
// meaning of its own; urunc's convention is to single-quote an argument
// with spaces, which its init rejoins. An argument that the command line
// cannot carry as one argument (a double quote, a control character such
// as a newline, a single quote inside a quoted argument) is refused: it
// could otherwise end the app's arguments and add kernel parameters.
func cmdlineArgs(in []string) ([]string, error) {
	out := make([]string, len(in))
	for i, a := range in {
		a = strings.TrimSpace(a)
		for _, r := range a {
			if r == '"' || (r < 0x20 && r != '\t') || r == 0x7f {
				return nil, fmt.Errorf("linux guest: argument %d (%q) holds %q, which the kernel command line cannot carry", i, a, r)
			}
		}
		// The kernel's parser works on bytes, not UTF-8: its isspace
		// (lib/ctype.c) holds for 0xA0 too, Latin-1's no-break space,
		// which is the second byte of "à" (C3 A0), of U+00A0 itself and
		// of many other characters. Such a byte would split the argument,
		// and in the init's path add kernel parameters; quoting cannot
		// carry it either, since the init rejoins pieces with spaces.
		if j := strings.IndexByte(a, latin1NoBreakSpace); j >= 0 {
			return nil, fmt.Errorf("linux guest: argument %d (%q) holds the byte 0xA0 at %d, which the kernel command line reads as a space", i, a, j)
		}
		if strings.ContainsAny(a, " \t") {
			// The init path stands before "--", among the kernel's own
			// parameters, where a quote means nothing to the kernel.
			if i == 0 {
				return nil, fmt.Errorf("linux guest: the init %q has spaces, which the kernel command line cannot carry", a)
			}
			if strings.Contains(a, "'") {
				return nil, fmt.Errorf("linux guest: argument %d (%q) has spaces and a single quote, which urunc's quoting cannot carry", i, a)
			}
			a = "'" + a + "'"
		}
		out[i] = a
	}
	return out, nil
}
