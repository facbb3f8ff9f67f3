package config

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"strconv"
	"strings"

	"github.com/urunc-dev/containerd-shim-urunc-v2/internal/annotation"
	"github.com/urunc-dev/containerd-shim-urunc-v2/rootfs"
)

// ConfigFileInRootfs is where urunc's image builders leave the configuration
// when the container engine does not pass image annotations to the runtime.
const ConfigFileInRootfs = "urunc.json"

// UnikernelConfig is what an image says about the guest it carries.
type UnikernelConfig struct {
	UnikernelType    string
	Hypervisor       string
	Binary           string // guest kernel, a path inside the container rootfs
	Initrd           string // guest initrd, a path inside the container rootfs
	Cmdline          string
	UnikernelVersion string
	// Block is a disk image in the rootfs; with BlkMntPoint "/" it is
	// the guest's root disk.
	Block       string
	BlkMntPoint string
	// MountRootfs ("true"/"false") asks for the container rootfs as the
	// guest's root; UseDMBlock is its older name.
	UseDMBlock  string
	MountRootfs string
	// Solo5NetDev and Solo5BlkDev name the solo5 guest's NIC and disk as
	// its manifest does, over the guest type's defaults.
	Solo5NetDev, Solo5BlkDev string
}

// solo5DevName is what a solo5 manifest accepts as a device name (its
// limit is 67 characters); the name also lands on the tender's command
// line, so nothing else passes.
var solo5DevName = regexp.MustCompile(`^[A-Za-z0-9]{1,67}$`)

// Solo5Devices returns the image's solo5 device names, each checked.
func (c UnikernelConfig) Solo5Devices() (net, blk string, err error) {
	for key, v := range map[string]string{"solo5NetDev": c.Solo5NetDev, "solo5BlkDev": c.Solo5BlkDev} {
		if v != "" && !solo5DevName.MatchString(v) {
			return "", "", fmt.Errorf("%s%s = %q: want 1 to 67 letters or digits (a solo5 device name)", annotation.Prefix, key, v)
		}
	}
	return c.Solo5NetDev, c.Solo5BlkDev, nil
}

// WantsRootfs tells whether the image asks for the container rootfs as the
// guest's root (mountRootfs, or its older name useDMBlock).
func (c UnikernelConfig) WantsRootfs() (bool, error) {
	key, v := "mountRootfs", c.MountRootfs
	if v == "" {
		key, v = "useDMBlock", c.UseDMBlock
	}
	if v == "" {
		return false, nil
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, fmt.Errorf("%s%s = %q: want true or false", annotation.Prefix, key, v)
	}
	return b, nil
}

// fields maps each annotation key (without prefix) to its field, so that the
// annotation parser and the urunc.json parser cannot drift apart.
func (c *UnikernelConfig) fields() map[string]*string {
	return map[string]*string{
		"unikernelType":    &c.UnikernelType,
		"hypervisor":       &c.Hypervisor,
		"binary":           &c.Binary,
		"initrd":           &c.Initrd,
		"cmdline":          &c.Cmdline,
		"unikernelVersion": &c.UnikernelVersion,
		"block":            &c.Block,
		"blkMntPoint":      &c.BlkMntPoint,
		"useDMBlock":       &c.UseDMBlock,
		"mountRootfs":      &c.MountRootfs,
		"solo5NetDev":      &c.Solo5NetDev,
		"solo5BlkDev":      &c.Solo5BlkDev,
	}
}

// IsUnikernel tells whether the configuration names a guest at all; a
// container without one is a plain OCI container and goes to runc.
func (c UnikernelConfig) IsUnikernel() bool { return c.UnikernelType != "" }

// ResolveUnikernelConfig merges the configuration sources in urunc's order
// of precedence: the spec's annotations (plain values) win over
// /urunc.json in the rootfs (base64 values). Host defaults are applied by
// the caller, which knows the host config.
func ResolveUnikernelConfig(annotations map[string]string, rootfsDir string) (UnikernelConfig, error) {
	var cfg UnikernelConfig
	fields := cfg.fields()
	for key, field := range fields {
		if v, ok := annotations[annotation.Prefix+key]; ok {
			*field = v
		}
	}
	if rootfsDir == "" {
		return cfg, nil
	}
	fromFile, err := readURuncJSON(rootfsDir)
	if err != nil {
		return cfg, err
	}
	for key, field := range fields {
		if *field == "" {
			*field = fromFile[key]
		}
	}
	return cfg, nil
}

// maxURuncJSON bounds /urunc.json: urunc's images carry a few hundred
// bytes, and an image must not make the shim read without end.
const maxURuncJSON = 1 << 20

// readURuncJSON reads /urunc.json of the rootfs; a missing file is no error.
func readURuncJSON(rootfsDir string) (map[string]string, error) {
	f, err := rootfs.OpenInRootfs(rootfsDir, "/"+ConfigFileInRootfs, "image config")
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxURuncJSON+1))
	if err != nil {
		return nil, fmt.Errorf("read /%s: %w", ConfigFileInRootfs, err)
	}
	if len(data) > maxURuncJSON {
		return nil, fmt.Errorf("/%s in the container rootfs is larger than %d bytes", ConfigFileInRootfs, maxURuncJSON)
	}
	var raw map[string]string
	if err := json.Unmarshal(data, &raw); err != nil {
		return nil, fmt.Errorf("parse /%s: %w", ConfigFileInRootfs, err)
	}
	out := make(map[string]string, len(raw))
	for k, v := range raw {
		key := strings.TrimPrefix(k, annotation.Prefix)
		decoded, err := base64.StdEncoding.DecodeString(v)
		if err != nil {
			return nil, fmt.Errorf("/%s: value of %q is not base64: %w", ConfigFileInRootfs, k, err)
		}
		out[key] = string(decoded)
	}
	return out, nil
}
