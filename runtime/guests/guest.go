// Package guests knows each guest type an image can carry: how its kernel
// wants to be told what to run, where its root is and what its network is,
// and which root filesystems it can boot from. One file per guest type.
package guests

import (
	"fmt"
	"maps"
	"net"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/urunc-dev/containerd-shim-urunc-v2/internal/annotation"
	"github.com/urunc-dev/containerd-shim-urunc-v2/rootfs"
)

// Net is the network a guest takes over from the container's interface.
type Net struct {
	Address string // dotted IPv4
	Mask    string // dotted IPv4 netmask
	Gateway string // may be empty
	MAC     string
}

// Request is what a guest type needs to build its command line.
type Request struct {
	Args []string // the container's process args: the app and its arguments
	Root rootfs.Root
	Net  *Net
	// Volumes are extra disks the guest mounts, found by serial.
	Volumes []rootfs.Volume
	// Process is the app's environment and identity, for inits that take
	// them in a config file rather than on the kernel command line.
	Process Process
	// Hostname is the spec's hostname, for guests whose kernel sets it.
	Hostname string
	// Agent, when set, is the guest agent's path in the guest (a Linux
	// guest's init, in front of the app): the app, its environment and
	// identity reach the agent in a file of its archive, not on the
	// command line.
	Agent string
	// Version is the image's unikernelVersion (Unikraft's command line
	// depends on it).
	Version string
}

// Process is what the app runs as.
type Process struct {
	Env      []string
	UID, GID uint32
	Cwd      string
}

// ConsoleExitReporter is a guest type whose kernel reports the app's exit
// status on the console (Linux: "Attempted to kill init! exitcode=…"),
// while its monitor exits 0.
type ConsoleExitReporter interface {
	ReportsExitOnConsole() bool
}

// MonitorExitDecoder is a guest type whose exit status reaches the
// monitor's own in an encoded form (qemu's isa-debug-exit).
type MonitorExitDecoder interface {
	// GuestExit turns the monitor's exit status into the guest's.
	GuestExit(monitorStatus int) int
}

// AgentHost is a guest type whose kernel can run the guest agent
// (cmd/urunc-agent) as its init, in front of the app.
type AgentHost interface {
	TakesAgent() bool
}

// InitConfigurer is a guest type whose init can take a configuration file,
// which the monitor passes as the guest's initrd (urunc's urunit config).
type InitConfigurer interface {
	// InitConfig returns that file, or nil when the guest's init takes
	// none.
	InitConfig(req Request) []byte
}

// Guest is one guest type.
type Guest interface {
	// Name is the unikernelType annotation value that selects it.
	Name() string
	// Cmdline renders the guest's kernel command line.
	Cmdline(req Request) (string, error)
	// SupportsBlock tells whether the guest can use virtio-blk disks.
	SupportsBlock() bool
	// SupportsFS tells whether the guest can mount a filesystem of this
	// type ("ext4", "9p", "virtiofs") as its root.
	SupportsFS(fsType string) bool
	// UnpacksAppendedInitrd tells whether the guest's kernel unpacks a
	// cpio archive appended to its initrd: an initrd root then gets the
	// pod's files (rootfs/podfiles.go). What each type gets of a pod:
	//
	//	guest     pod files and volumes                     environment
	//	linux     initrd: appended archive; block: copied   kernel command line (KEY=VALUE to
	//	          into the disk, disk volumes; 9p/virtiofs:  init), or urunit's config
	//	          bound into the share
	//	unikraft  9p: bound into the share; initrd: warned  env.vars (0.16.1 and later)
	//	rumprun   disk volumes; files warned or refused     its JSON config's env
	//	mirage    none: warned                              none
	//	mewz      none: warned                              none
	//	hermit    none: warned                              none
	UnpacksAppendedInitrd() bool
	// Monitors are the monitors urunc runs this guest type under.
	Monitors() []string
	// Devices says what the guest expects of the monitor's devices.
	Devices() Devices
}

// Devices are a guest type's expectations of the monitor's devices.
type Devices struct {
	// NICOptions are extra options of qemu's virtio-net-pci device.
	NICOptions string
	// QemuArgs are extra qemu arguments (mewz's isa-debug-exit device).
	QemuArgs []string
	// Solo5Net and Solo5Block name the solo5 devices the guest was built
	// with (its manifest); empty means solo5's usual "service" and the
	// disk's own ID.
	Solo5Net, Solo5Block string
}

// CheckMonitor refuses a monitor urunc does not run g under, naming both.
func CheckMonitor(g Guest, monitor string) error {
	for _, m := range g.Monitors() {
		if m == monitor {
			return nil
		}
	}
	return fmt.Errorf("guest %s (annotation %sunikernelType) cannot run under monitor %s (annotation %shypervisor); it runs under: %s",
		g.Name(), annotation.Prefix, monitor, annotation.Prefix, strings.Join(g.Monitors(), ", "))
}

// cidr returns the prefix length of a dotted netmask.
func cidr(mask string) (int, error) {
	ip := net.ParseIP(mask).To4()
	if ip == nil {
		return 0, fmt.Errorf("netmask %q is not a dotted IPv4 mask", mask)
	}
	ones, bits := net.IPMask(ip).Size()
	if bits == 0 {
		return 0, fmt.Errorf("netmask %q is not contiguous", mask)
	}
	return ones, nil
}

// checkTokens refuses values that a space-separated command line cannot
// carry as one token: whitespace, quotes, control characters. what names
// them in the error.
func checkTokens(guest, what string, values []string) error {
	for i, v := range values {
		for _, r := range v {
			if r == ' ' || r == '\t' || r == '"' || r == '\'' || r < 0x20 || r == 0x7f {
				return fmt.Errorf("%s guest: %s %d (%q) holds %q, which its command line cannot carry", guest, what, i, v, r)
			}
		}
	}
	return nil
}

// checkArgs refuses an argument holding a control character or bytes
// that are not UTF-8: a NUL would end the monitor's argv element early, a
// newline or another control splits or corrupts the command line a guest
// parses, and invalid UTF-8 reaches a JSON command line (rumprun) altered.
// Found by FuzzGuestCmdlines; no guest's argument needs either.
func checkArgs(guest string, args []string) error {
	for i, a := range args {
		if !utf8.ValidString(a) {
			return fmt.Errorf("%s guest: argument %d (%q) is not UTF-8", guest, i, a)
		}
		for _, r := range a {
			if r < 0x20 || r == 0x7f {
				return fmt.Errorf("%s guest: argument %d (%q) holds the control character %q", guest, i, a, r)
			}
		}
	}
	return nil
}

// known maps the unikernelType annotation to its guest type.
var known = map[string]Guest{
	"linux":    linux{},
	"unikraft": unikraft{},
	"rumprun":  rumprun{},
	"mirage":   mirage{},
	"mewz":     mewz{},
	"hermit":   hermit{},
}

// Names lists the guest types, sorted.
func Names() []string { return slices.Sorted(maps.Keys(known)) }

// For returns the guest type an image names.
func For(unikernelType string) (Guest, error) {
	g, ok := known[unikernelType]
	if !ok {
		return nil, fmt.Errorf("unknown unikernelType %q (annotation %sunikernelType; known: %s)",
			unikernelType, annotation.Prefix, strings.Join(Names(), ", "))
	}
	return g, nil
}
