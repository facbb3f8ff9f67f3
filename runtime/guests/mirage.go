package guests

import (
	"fmt"
	"strings"
)

// mirage is a MirageOS unikernel: on solo5 (hvt, spt) or qemu. Its network
// is given as --ipv4 and --ipv4-gateway, then the app's own arguments.
type mirage struct{}

func (mirage) Name() string        { return "mirage" }
func (mirage) SupportsBlock() bool { return true }

// UnpacksAppendedInitrd: MirageOS has no filesystem of files.
func (mirage) UnpacksAppendedInitrd() bool { return false }
func (mirage) SupportsFS(string) bool      { return false }
func (mirage) Monitors() []string          { return []string{"qemu", "hvt", "spt"} }
func (mirage) Devices() Devices            { return Devices{Solo5Net: "service", Solo5Block: "storage"} }

func (mirage) Cmdline(req Request) (string, error) {
	if err := checkArgs("mirage", req.Args); err != nil {
		return "", err
	}
	var parts []string
	if n := req.Net; n != nil {
		bits, err := cidr(n.Mask)
		if err != nil {
			return "", fmt.Errorf("mirage guest: %w", err)
		}
		parts = append(parts, fmt.Sprintf("--ipv4=%s/%d", n.Address, bits), "--ipv4-gateway="+n.Gateway)
	}
	return strings.Join(append(parts, req.Args...), " "), nil
}
