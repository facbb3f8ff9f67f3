// Package monitors knows each virtual machine monitor a guest can run under:
// its command line, the host files it needs inside its confined root, and
// how to ask its guest to stop. One file per monitor.
package monitors

import (
	"context"
	"fmt"
	"maps"
	"os/exec"
	"slices"
	"strings"

	"github.com/urunc-dev/containerd-shim-urunc-v2/rootfs"
)

// Config is the host config of one monitor ([monitors.NAME] in
// config.toml), with urunc's keys.
type Config struct {
	// BinaryPath is urunc's key for the monitor's executable; Path is
	// this runtime's older name for it.
	BinaryPath string `toml:"binary_path"`
	Path       string `toml:"path"`
	// DataPath is a directory of the monitor's data files (qemu's
	// firmware), bound into its confined root and, for qemu, given as -L.
	DataPath        string `toml:"data_path"`
	Accel           string `toml:"accel"` // kvm | tcg
	DefaultMemoryMB int    `toml:"default_memory_mb"`
	DefaultVCPUs    int    `toml:"default_vcpus"`
	// MemoryOverheadMB is what the monitor process itself takes beside
	// its guest's RAM (its code, device state, buffers and, for qemu
	// under TCG, its translation cache). The guest's RAM is the
	// container's memory limit, and the monitor lives in the container's
	// cgroup, so that cgroup's limit is the memory limit plus this (and,
	// for a guest with the agent, AgentMemoryOverheadMB).
	MemoryOverheadMB int `toml:"memory_overhead_mb"`
	// Vhost is urunc's switch for vhost-net, used where the host has
	// /dev/vhost-net.
	Vhost bool `toml:"vhost"`
	// Seccomp = false lets the monitor run without a seccomp filter
	// unless the spec asks for one; unset or true, every monitor is
	// filtered (its own filter where it has one, else the project's).
	Seccomp *bool `toml:"seccomp"`
}

// SeccompByDefault tells whether the monitor is filtered when the spec
// says nothing of seccomp: yes unless the host config's seccomp = false.
func (c Config) SeccompByDefault() bool { return c.Seccomp == nil || *c.Seccomp }

// Executable is the configured executable, urunc's key first.
func (c Config) Executable() string {
	if c.BinaryPath != "" {
		return c.BinaryPath
	}
	return c.Path
}

// Guest is what the monitor boots, with paths as the monitor sees them
// (inside its confined root).
type Guest struct {
	Kernel   string
	Initrd   string
	Cmdline  string
	MemoryMB int
	VCPUs    int
	// Net, when set, is the tap the guest's NIC is backed by.
	Net *NIC
	// ControlFD, when not zero, is an inherited listening unix socket the
	// monitor serves its control protocol on (qemu: QMP; cloud-hypervisor:
	// its HTTP API).
	ControlFD int
	// Agent, when set, is the guest agent's channel.
	Agent *AgentChannel
	// Terminal asks for a console fit for an interactive tty.
	Terminal bool
	// Disks are raw virtio-blk disks, the guest's root first when it
	// boots from one.
	Disks []Disk
	// Shares are host directories shared with the guest.
	Shares []Share
	// Seccomp asks the monitor to install its own seccomp filter (qemu's
	// -sandbox, cloud-hypervisor's --seccomp); set only where
	// FiltersItself.
	Seccomp bool
	// What the guest type expects of the devices: extra options of qemu's
	// virtio NIC, extra qemu arguments, and the names its solo5 manifest
	// gives its NIC and disk ("service" and the disk ID when empty).
	NICOptions           string
	ExtraArgs            []string
	Solo5Net, Solo5Block string
}

// AgentTransport is the kind of channel a monitor gives the guest agent.
type AgentTransport int

const (
	// AgentNone: the monitor gives the guest agent no channel.
	AgentNone AgentTransport = iota
	// AgentVirtioSerial: a virtio-serial port (AgentChannel.Port) whose
	// host end is a listening unix socket the shim creates outside the
	// container and the monitor inherits (AgentChannel.FD), as it does
	// the control socket. It needs no host module (qemu).
	AgentVirtioSerial
	// AgentHybridVsock: a virtio-vsock device whose host end is a unix
	// socket the monitor binds itself (AgentChannel.Socket) in its
	// confined root, where only the shim reaches it, through
	// /proc/PID/root, as a ControlInRoot socket. The shim asks for the
	// guest's port on each connection (HybridVsockConnect). It needs no
	// host module either: no /dev/vhost-vsock (firecracker,
	// cloud-hypervisor).
	AgentHybridVsock
)

func (t AgentTransport) String() string {
	switch t {
	case AgentVirtioSerial:
		return "virtio-serial"
	case AgentHybridVsock:
		return "hybrid vsock"
	}
	return "none"
}

// AgentChannel is the channel between the guest agent and the shim.
type AgentChannel struct {
	Transport AgentTransport
	// AgentVirtioSerial: the inherited listening unix socket, and the
	// port's name, which the agent looks for.
	FD   int
	Port string
	// AgentHybridVsock: the guest's vsock address (CID), and the path in
	// the confined root where the monitor binds the device's host socket.
	GuestCID uint32
	Socket   string
}

// AgentChannelProvider is a monitor that can give the guest an agent
// channel (Guest.Agent).
type AgentChannelProvider interface {
	// AgentTransport is the channel the monitor gives, AgentNone for none.
	AgentTransport() AgentTransport
}

// AgentTransportOf is the agent channel mon gives, AgentNone for none.
func AgentTransportOf(mon Monitor) AgentTransport {
	if p, ok := mon.(AgentChannelProvider); ok {
		return p.AgentTransport()
	}
	return AgentNone
}

// Where a hybrid vsock channel is: the guest's CID, which hybrid vsock
// keeps inside its VM (the host side is a unix socket, not a host
// kernel address), so every guest can have 3, the first a guest may
// have; and the socket the monitor binds, in its root's /tmp beside
// ControlSocketInRoot, the only directory its user can write to.
const (
	AgentGuestCID          = 3
	AgentVsockSocketInRoot = "/tmp/agent.vsock"
)

// Disk is a raw disk: a file or a block device in the confined root.
type Disk struct {
	ID   string // drive id and serial, so the guest can tell disks apart
	Path string
	// ReadOnly: the guest may not write the disk (a read-only volume);
	// every monitor that takes disks is told so, or refuses the disk.
	ReadOnly bool
	// HostDevice: the disk is a block device, not a file; qemu must be
	// told so when it gets the disk as a descriptor, which it cannot
	// probe by name.
	HostDevice bool
	// FD and ReadOnlyFD, when not zero, are the disk already open
	// read-write and read-only (qemu opens a disk both ways), inherited
	// by a monitor that runs as a user the disk does not belong to.
	FD, ReadOnlyFD int
}

// Share is a directory shared with the guest under Tag: over 9p the
// monitor serves Path itself; over virtiofs it connects to virtiofsd's
// Socket.
type Share struct {
	Kind   rootfs.Kind // rootfs.Kind9p or rootfs.KindVirtiofs
	Tag    string
	Path   string
	Socket string
	// ReadOnly: the monitor serves the share read-only (qemu's 9p
	// readonly=on).
	ReadOnly bool
}

// NIC is a guest network interface backed by a host tap.
type NIC struct {
	Tap string
	MAC string
	// Vhost: /dev/vhost-net is in the confined root for the monitor to
	// use (qemu's vhost=on).
	Vhost bool
}

// Runner runs cmd to its end and returns what it wrote to stdout and
// stderr; a status other than 0 is an error. The caller bounds it with
// exec.CommandContext. In the shim it goes through containerd's reaper,
// which owns wait4 there (exec.Cmd.Wait would race it for the child's
// status); RunDirect serves a process without a reaper.
type Runner func(cmd *exec.Cmd) ([]byte, error)

// RunDirect is the Runner of a process that waits for its own children.
func RunDirect(cmd *exec.Cmd) ([]byte, error) { return cmd.CombinedOutput() }

// Monitor is one virtual machine monitor.
type Monitor interface {
	// Name is the value of the hypervisor annotation that selects it.
	Name() string
	// Binary is the absolute host path of the monitor's executable.
	Binary() string
	// Args is the full argv, argv[0] included, booting guest.
	Args(guest Guest) ([]string, error)
	// DataPaths are host files and directories the monitor reads at run
	// time besides its binary and libraries; those that do not exist on
	// this host are skipped.
	DataPaths() []string
	// NeedsKVM tells whether /dev/kvm must be present in the confined root.
	NeedsKVM() bool
	// SupportsShare tells whether the monitor can share a directory over
	// kind (rootfs.Kind9p, rootfs.KindVirtiofs).
	SupportsShare(kind rootfs.Kind) bool
	// Control is how the shim reaches the monitor's control API.
	Control() Control
	// SupportsInheritedDisks tells whether the monitor can take its
	// disks as inherited descriptors (Disk.FD).
	SupportsInheritedDisks() bool
	// FiltersItself tells whether the monitor installs a seccomp filter
	// of its own when Guest.Seccomp asks for one. Where it does not, the
	// launcher installs this project's; never both, since a second filter
	// can kill a monitor whose own filter expects calls it denies. A
	// monitor that must ask its binary (solo5-hvt's --version) runs it
	// with run.
	FiltersItself(ctx context.Context, run Runner) bool
	// Powerdown asks the guest to shut down through the control socket
	// (qemu and cloud-hypervisor: the ACPI power button; firecracker:
	// Ctrl-Alt-Del); ErrNoPowerdown where the monitor cannot.
	Powerdown(ctx context.Context, controlSocket string) error
}

// Control kinds: how the shim reaches a monitor's control API.
type Control int

const (
	// ControlNone: the monitor has no control API.
	ControlNone Control = iota
	// ControlInheritedFD: the shim creates the listening socket outside
	// the container and the monitor inherits it as Guest.ControlFD.
	ControlInheritedFD
	// ControlInRoot: the monitor binds ControlSocketInRoot in its
	// confined root itself; the shim reaches it through
	// /proc/PID/root, so the socket is never in a path the container
	// or the host's other users see.
	ControlInRoot
)

// ControlSocketInRoot is where a ControlInRoot monitor binds its API
// socket: /tmp is the only directory of the confined root its user can
// write to.
const ControlSocketInRoot = "/tmp/control.sock"

type constructor func(binary string, cfg Config) Monitor

// known lists every monitor by the name images use for it, with its
// default executable name and whether it can boot an initrd.
var known = map[string]struct {
	executable string
	build      constructor
	initrd     bool
}{
	"qemu":        {"qemu-system-x86_64", newQemu, true},
	"firecracker": {"firecracker", newFirecracker, true},
	"hvt":         {"solo5-hvt", newHvt, false},
	"spt":         {"solo5-spt", newSpt, false},
	"clh":         {"cloud-hypervisor", newCloudHypervisor, true},
}

// Names lists the monitors this build knows, sorted.
func Names() []string { return slices.Sorted(maps.Keys(known)) }

// BootsInitrd tells whether the monitor called name can boot an initrd
// (solo5's tenders cannot), without looking for its binary.
func BootsInitrd(name string) bool { return known[name].initrd }

// New finds the monitor called name and its executable on this host: the
// host config's path if set, else the default executable on PATH.
func New(name string, cfg Config) (Monitor, error) {
	k, ok := known[name]
	if !ok {
		return nil, fmt.Errorf("unknown hypervisor %q (known: %s)", name, strings.Join(Names(), ", "))
	}
	path := cfg.Executable()
	if path == "" {
		path = k.executable
	}
	binary, err := exec.LookPath(path)
	if err != nil {
		return nil, fmt.Errorf("hypervisor %q: monitor binary %q not found on this host: %w", name, path, err)
	}
	return k.build(binary, cfg), nil
}
