package guests

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/urunc-dev/containerd-shim-urunc-v2/rootfs"
)

// unikraft is a Unikraft unikernel. Its command line changed with 0.16.1
// (unikernelVersion): newer images take netdev.ip=ADDR/CIDR:GW:DNS, env.vars
// and vfs.fstab; older ones netdev.ipv4_* and vfs.rootfs, without env. An
// image that names no version, or one that does not parse, gets the newer
// form, as in urunc.
type unikraft struct{}

func (unikraft) Name() string        { return "unikraft" }
func (unikraft) SupportsBlock() bool { return false }

// UnpacksAppendedInitrd: Unikraft extracts its initrd itself, and no
// version is known here to read a second archive after the first, so
// nothing is appended and the pod's files are warned about (a 9p root
// shows them).
func (unikraft) UnpacksAppendedInitrd() bool   { return false }
func (unikraft) SupportsFS(fsType string) bool { return fsType == "9p" }
func (unikraft) Monitors() []string            { return []string{"qemu", "firecracker"} }
func (unikraft) Devices() Devices              { return Devices{} }

// unikraftCompatVersion is the first version with the newer command line.
var unikraftCompatVersion = []int{0, 16, 1}

func (unikraft) Cmdline(req Request) (string, error) {
	if err := checkArgs("unikraft", req.Args); err != nil {
		return "", err
	}
	if err := checkTokens("unikraft", "environment variable", req.Process.Env); err != nil {
		return "", err
	}
	parts := []string{"Unikraft"}
	if olderThan(req.Version, unikraftCompatVersion) {
		if n := req.Net; n != nil {
			parts = append(parts, "netdev.ipv4_addr="+n.Address, "netdev.ipv4_gw_addr="+n.Gateway, "netdev.ipv4_subnet_mask="+n.Mask)
		}
		if req.Root.Kind == rootfs.KindInitrd {
			parts = append(parts, "vfs.rootfs=initrd")
		}
	} else {
		if len(req.Process.Env) > 0 {
			parts = append(parts, "env.vars=[ "+strings.Join(req.Process.Env, " ")+" ]")
		}
		if n := req.Net; n != nil {
			bits, err := cidr(n.Mask)
			if err != nil {
				return "", fmt.Errorf("unikraft guest: %w", err)
			}
			parts = append(parts, fmt.Sprintf("netdev.ip=%s/%d:%s:8.8.8.8", n.Address, bits, n.Gateway))
		}
		switch req.Root.Kind {
		case rootfs.KindInitrd:
			parts = append(parts, `vfs.fstab=[ "initrd0:/:extract:::" ]`)
		case rootfs.Kind9p:
			parts = append(parts, `vfs.fstab=[ "`+req.Root.Tag+`:/:9pfs:::" ]`)
		}
	}
	parts = append(parts, "--")
	return strings.Join(append(parts, req.Args...), " "), nil
}

// olderThan tells whether version (like "0.15.0" or "v0.17") is older
// than ref; an empty or unparsable version is not.
func olderThan(version string, ref []int) bool {
	fields := strings.Split(strings.TrimPrefix(version, "v"), ".")
	if version == "" {
		return false
	}
	for i := range ref {
		n := 0
		if i < len(fields) {
			// "1-rc2" compares as 1.
			digits := strings.FieldsFunc(fields[i], func(r rune) bool { return r < '0' || r > '9' })
			if len(digits) == 0 {
				return false
			}
			var err error
			if n, err = strconv.Atoi(digits[0]); err != nil {
				return false
			}
		}
		if n != ref[i] {
			return n < ref[i]
		}
	}
	return false
}
