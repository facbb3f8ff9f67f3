package guests

import (
	"fmt"
	"strings"
)

// hermit is a Hermit (hermit-rs) unikernel under qemu: its network, then
// "--" and the app's arguments.
type hermit struct{}

func (hermit) Name() string        { return "hermit" }
func (hermit) SupportsBlock() bool { return false }

// UnpacksAppendedInitrd: Hermit's initrd is its app, not an archive.
func (hermit) UnpacksAppendedInitrd() bool   { return false }
func (hermit) SupportsFS(fsType string) bool { return false }
func (hermit) Monitors() []string            { return []string{"qemu"} }
func (hermit) Devices() Devices              { return Devices{NICOptions: "disable-legacy=on"} }

func (hermit) Cmdline(req Request) (string, error) {
	if err := checkArgs("hermit", req.Args); err != nil {
		return "", err
	}
	var parts []string
	if n := req.Net; n != nil {
		bits, err := cidr(n.Mask)
		if err != nil {
			return "", fmt.Errorf("hermit guest: %w", err)
		}
		parts = append(parts, fmt.Sprintf("ip=%s/%d", n.Address, bits))
		if n.Gateway != "" {
			parts = append(parts, "gateway="+n.Gateway)
		}
	}
	if app := strings.TrimSpace(strings.Join(req.Args, " ")); app != "" {
		if len(parts) > 0 {
			parts = append(parts, "--")
		}
		parts = append(parts, app)
	}
	return strings.Join(parts, " "), nil
}
