package monitors

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/urunc-dev/containerd-shim-urunc-v2/rootfs"
)

// FirecrackerConfigPath is where the firecracker config file sits inside the
// monitor's confined root.
const FirecrackerConfigPath = "/guest/firecracker.json"

// firecracker runs a guest under firecracker, configured by a file so that
// it boots without API calls. Its API socket serves only the power-down:
// firecracker binds it itself (it takes no descriptor), in its confined
// root, where only the shim reaches it (through /proc/PID/root).
type firecracker struct {
	binary string
	cfg    Config
}

func newFirecracker(binary string, cfg Config) Monitor { return &firecracker{binary: binary, cfg: cfg} }

func (f *firecracker) Name() string                 { return "firecracker" }
func (f *firecracker) Binary() string               { return f.binary }
func (f *firecracker) NeedsKVM() bool               { return true }
func (f *firecracker) Control() Control             { return ControlInRoot }
func (f *firecracker) SupportsInheritedDisks() bool { return false }

// AgentTransport: firecracker has no virtio-serial; its vsock device's
// host end is a unix socket it binds itself (its config's uds_path).
func (f *firecracker) AgentTransport() AgentTransport { return AgentHybridVsock }

// FiltersItself: firecracker installs its default filters unless told
// --no-seccomp, which this runtime never does.
func (f *firecracker) FiltersItself(context.Context, Runner) bool { return true }

// SupportsShare: firecracker has no 9p and no vhost-user-fs.
func (f *firecracker) SupportsShare(rootfs.Kind) bool { return false }
func (f *firecracker) DataPaths() []string            { return nil }

func (f *firecracker) Args(g Guest) ([]string, error) {
	if g.Kernel == "" {
		return nil, fmt.Errorf("firecracker: no guest kernel")
	}
	return []string{f.binary, "--api-sock", ControlSocketInRoot, "--config-file", FirecrackerConfigPath}, nil
}

// ConfigFile renders the firecracker VM config for g.
func (f *firecracker) ConfigFile(g Guest) ([]byte, error) {
	type bootSource struct {
		KernelImagePath string `json:"kernel_image_path"`
		BootArgs        string `json:"boot_args,omitempty"`
		InitrdPath      string `json:"initrd_path,omitempty"`
	}
	type machineConfig struct {
		VCPUCount  int `json:"vcpu_count"`
		MemSizeMiB int `json:"mem_size_mib"`
	}
	type drive struct {
		DriveID      string `json:"drive_id"`
		PathOnHost   string `json:"path_on_host"`
		IsRootDevice bool   `json:"is_root_device"`
		IsReadOnly   bool   `json:"is_read_only"`
	}
	type networkInterface struct {
		IfaceID     string `json:"iface_id"`
		GuestMAC    string `json:"guest_mac"`
		HostDevName string `json:"host_dev_name"`
	}
	// Host-initiated connections go to uds_path; guest-initiated ones
	// would go to uds_path_PORT, which nothing listens on.
	type vsock struct {
		GuestCID uint32 `json:"guest_cid"`
		UDSPath  string `json:"uds_path"`
	}
	cfg := struct {
		BootSource        bootSource         `json:"boot-source"`
		Drives            []drive            `json:"drives"`
		MachineConfig     machineConfig      `json:"machine-config"`
		NetworkInterfaces []networkInterface `json:"network-interfaces,omitempty"`
		Vsock             *vsock             `json:"vsock,omitempty"`
	}{
		BootSource:    bootSource{KernelImagePath: g.Kernel, BootArgs: g.Cmdline, InitrdPath: g.Initrd},
		Drives:        []drive{},
		MachineConfig: machineConfig{VCPUCount: g.VCPUs, MemSizeMiB: g.MemoryMB},
	}
	// The guest's command line already says where its root is, so no
	// drive is firecracker's root device (which would add root= again).
	for _, d := range g.Disks {
		cfg.Drives = append(cfg.Drives, drive{DriveID: d.ID, PathOnHost: d.Path, IsReadOnly: d.ReadOnly})
	}
	if g.Net != nil {
		cfg.NetworkInterfaces = []networkInterface{{IfaceID: "eth0", GuestMAC: g.Net.MAC, HostDevName: g.Net.Tap}}
	}
	if a := g.Agent; a != nil {
		if a.Transport != AgentHybridVsock || a.Socket == "" {
			return nil, fmt.Errorf("firecracker: the guest agent's channel can only be hybrid vsock on a socket in the monitor's root, not %s", a.Transport)
		}
		cfg.Vsock = &vsock{GuestCID: a.GuestCID, UDSPath: a.Socket}
	}
	return json.MarshalIndent(cfg, "", "  ")
}

// ConfigFileWriter is implemented by monitors configured through a file
// placed in their confined root.
type ConfigFileWriter interface {
	ConfigFilePath() string
	ConfigFile(g Guest) ([]byte, error)
}

func (f *firecracker) ConfigFilePath() string { return FirecrackerConfigPath }

// Powerdown sends the guest Ctrl-Alt-Del, firecracker's only way to ask
// an x86 guest to stop; firecracker exits when the guest then resets.
func (f *firecracker) Powerdown(ctx context.Context, controlSocket string) error {
	if controlSocket == "" {
		return ErrNoPowerdown
	}
	return apiPut(ctx, controlSocket, "/actions", []byte(`{"action_type":"SendCtrlAltDel"}`))
}
