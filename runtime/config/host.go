package config

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/pelletier/go-toml/v2"

	"github.com/urunc-dev/containerd-shim-urunc-v2/monitors"
	"github.com/urunc-dev/containerd-shim-urunc-v2/rootfs"
)

// DefaultHostConfigPath is read unless URUNC_CONFIG_FILE names another file.
const DefaultHostConfigPath = "/etc/urunc/config.toml"

// HostConfigEnv names the environment variable that overrides the host
// config path; containerd passes its environment on to the shim.
const HostConfigEnv = "URUNC_CONFIG_FILE"

// HostConfig is the operator's configuration of this host.
type HostConfig struct {
	Monitors map[string]monitors.Config `toml:"monitors"`
	Runtime  RuntimeConfig              `toml:"runtime"`
	// ExtraBinaries are helpers by name, urunc's [extra_binaries.NAME];
	// virtiofsd is the one used today.
	ExtraBinaries map[string]ExtraBinary `toml:"extra_binaries"`
	// Log and Timestamps are urunc's sections, accepted so that a urunc
	// host's config works unchanged; the shim logs through containerd.
	Log        LogConfig        `toml:"log"`
	Timestamps TimestampsConfig `toml:"timestamps"`
	// Guests are settings per guest type: [guests.linux].
	Guests GuestsConfig `toml:"guests"`
	// UnusedKeys are keys of the file this runtime does not use, each
	// with its line; the shim warns about them once.
	UnusedKeys []string `toml:"-"`
}

// LogConfig is urunc's [log].
type LogConfig struct {
	Level  string `toml:"level"`
	Syslog bool   `toml:"syslog"`
}

// TimestampsConfig is urunc's [timestamps].
type TimestampsConfig struct {
	Enabled     bool   `toml:"enabled"`
	Destination string `toml:"destination"`
}

// GuestsConfig holds the settings of guest types.
type GuestsConfig struct {
	Linux LinuxGuestConfig `toml:"linux"`
}

// LinuxGuestConfig is [guests.linux].
type LinuxGuestConfig struct {
	// Agent puts the guest agent (urunc-agent) in front of the app of a
	// Linux guest booting from an initrd under qemu: the app's exit
	// status, signals, environment, identity and hostname then go
	// through it. Off by default.
	Agent bool `toml:"agent"`
	// AgentPath is the agent binary; urunc-agent beside the shim if
	// empty.
	AgentPath string `toml:"agent_path"`
}

// ExtraBinary is a helper program the runtime starts beside a monitor.
type ExtraBinary struct {
	Path    string `toml:"path"`
	Options string `toml:"options"` // extra arguments, split on spaces
}

// defaultVirtiofsd is where urunc looks for virtiofsd by default.
const defaultVirtiofsd = "/usr/libexec/virtiofsd"

// Virtiofsd returns the host's virtiofsd setting, urunc's default path
// filled in.
func (c HostConfig) Virtiofsd() rootfs.Virtiofsd {
	b := c.ExtraBinaries["virtiofsd"]
	if b.Path == "" {
		b.Path = defaultVirtiofsd
	}
	return rootfs.Virtiofsd{Path: b.Path, Options: strings.Fields(b.Options)}
}

// RuntimeConfig holds settings that apply to every monitor.
type RuntimeConfig struct {
	// StopGraceSeconds, when set, is how long SIGTERM waits for a guest
	// power-down before the shim kills the monitor itself; unset, the
	// caller's own timeout decides (it sends SIGKILL).
	StopGraceSeconds int `toml:"stop_grace_s"`
	// StateDir holds the shim's own sockets (QMP) and runc's state, out
	// of any container's reach.
	StateDir string `toml:"state_dir"`
}

// StateDir returns the runtime's state dir, /run/urunc by default.
func (c HostConfig) StateDir() string {
	if c.Runtime.StateDir == "" {
		return "/run/urunc"
	}
	return c.Runtime.StateDir
}

// StopGrace returns the grace period the shim enforces after SIGTERM; 0
// (the default) enforces none.
func (c HostConfig) StopGrace() time.Duration {
	if c.Runtime.StopGraceSeconds <= 0 {
		return 0
	}
	return time.Duration(c.Runtime.StopGraceSeconds) * time.Second
}

// Monitor returns the host settings of one monitor, defaults filled in.
func (c HostConfig) Monitor(name string) monitors.Config {
	mc := c.Monitors[name]
	if mc.DefaultMemoryMB <= 0 {
		mc.DefaultMemoryMB = 256
	}
	if mc.DefaultVCPUs <= 0 {
		mc.DefaultVCPUs = 1
	}
	if mc.Accel == "" {
		mc.Accel = "kvm"
	}
	if mc.MemoryOverheadMB <= 0 {
		mc.MemoryOverheadMB = DefaultMemoryOverheadMB(name, mc.Accel)
	}
	return mc
}

// qemuOverheadMB is qemu's own memory beside its guest's RAM, translation
// cache aside: measured at 20.5 to 22.5 MiB on these machines (README,
// "Guest sizing": the most the monitor's cgroup held beyond the guest's
// RAM once the guest had touched all of it, the same for 100, 200 and
// 400 MiB guests), with room for device buffers under I/O. The guest's
// kernel and initrd do not count: qemu maps their files, whose page cache
// can be reclaimed. Under TCG the translation cache,
// monitors.TCGTranslationCacheMB, comes on top.
const qemuOverheadMB = 32

// DefaultMemoryOverheadMB is a monitor's memory overhead unless the host
// config sets memory_overhead_mb. Only qemu's is measured here;
// firecracker, cloud-hypervisor and solo5 cannot run on these machines,
// and their figures are their own documented footprints with a margin:
// firecracker's specification promises at most 5 MiB per microVM,
// cloud-hypervisor's is of the same kind, solo5's tenders are a few
// hundred KiB of code.
func DefaultMemoryOverheadMB(monitor, accel string) int {
	switch monitor {
	case "qemu":
		if accel == "tcg" {
			return qemuOverheadMB + monitors.TCGTranslationCacheMB
		}
		return qemuOverheadMB
	case "firecracker", "clh":
		return 32
	case "hvt", "spt":
		return 16
	}
	return qemuOverheadMB
}

// LoadHostConfig reads the host config from URUNC_CONFIG_FILE or the default
// path. A missing default file means defaults; a missing file that the
// environment names explicitly is an error, since the operator asked for it.
func LoadHostConfig() (HostConfig, error) {
	path := os.Getenv(HostConfigEnv)
	explicit := path != ""
	if !explicit {
		path = DefaultHostConfigPath
	}
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) && !explicit {
		return HostConfig{}, nil
	}
	if err != nil {
		return HostConfig{}, fmt.Errorf("read host config %s: %w", path, err)
	}
	return ParseHostConfig(path, data)
}

// ParseHostConfig parses TOML host config; path is only for messages. A
// key this runtime does not use is accepted, as urunc accepts keys of
// newer releases, and listed in UnusedKeys for the caller to warn about;
// a bad value of a key it uses fails, naming the key, its line and the
// file.
func ParseHostConfig(path string, data []byte) (HostConfig, error) {
	var cfg HostConfig
	dec := toml.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	err := dec.Decode(&cfg)
	var missing *toml.StrictMissingError
	if errors.As(err, &missing) {
		var unused []string
		for _, e := range missing.Errors {
			row, _ := e.Position()
			unused = append(unused, fmt.Sprintf("%s (line %d)", strings.Join(e.Key(), "."), row))
		}
		cfg = HostConfig{}
		err = toml.NewDecoder(bytes.NewReader(data)).Decode(&cfg)
		cfg.UnusedKeys = unused
	}
	if err != nil {
		var bad *toml.DecodeError
		if errors.As(err, &bad) && len(bad.Key()) > 0 {
			row, _ := bad.Position()
			return HostConfig{}, fmt.Errorf("parse host config %s: %s (line %d): %w", path, strings.Join(bad.Key(), "."), row, err)
		}
		return HostConfig{}, fmt.Errorf("parse host config %s: %w", path, err)
	}
	for name, mc := range cfg.Monitors {
		if mc.Accel != "" && mc.Accel != "kvm" && mc.Accel != "tcg" {
			return HostConfig{}, fmt.Errorf("host config %s: monitors.%s.accel = %q: want kvm or tcg", path, name, mc.Accel)
		}
		if mc.MemoryOverheadMB < 0 {
			return HostConfig{}, fmt.Errorf("host config %s: monitors.%s.memory_overhead_mb = %d: want a size in MiB (0 or unset: the monitor's default)", path, name, mc.MemoryOverheadMB)
		}
	}
	return cfg, nil
}
