package guests

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/urunc-dev/containerd-shim-urunc-v2/rootfs"
)

// rumprun is a Rumprun unikernel on solo5. Its command line is a JSON
// object that repeats the "env" key, which Go's encoder cannot write, so
// it is assembled from encoded pieces as urunc does.
type rumprun struct{}

func (rumprun) Name() string        { return "rumprun" }
func (rumprun) SupportsBlock() bool { return true }

// UnpacksAppendedInitrd: rumprun boots from disks, not an initrd.
func (rumprun) UnpacksAppendedInitrd() bool   { return false }
func (rumprun) SupportsFS(fsType string) bool { return fsType == "ext2" }
func (rumprun) Monitors() []string            { return []string{"hvt", "spt"} }

// Devices: rumprun's solo5 builds name their NIC "tap" and their disk
// "rootfs".
func (rumprun) Devices() Devices { return Devices{Solo5Net: "tap", Solo5Block: "rootfs"} }

// rumprunRootMount is where rumprun mounts a block root: it cannot mount
// anything at "/".
const rumprunRootMount = "/data"

func (rumprun) Cmdline(req Request) (string, error) {
	if err := checkArgs("rumprun", req.Args); err != nil {
		return "", err
	}
	pieces := []string{jsonField("cmdline", strings.Join(req.Args, " "))}
	for _, e := range req.Process.Env {
		pieces = append(pieces, jsonField("env", e))
	}
	if n := req.Net; n != nil {
		// urunc gives rumprun a /1 mask so that any gateway is on-link
		// (rumprun under Kubernetes otherwise found no route).
		pieces = append(pieces, `"net":`+jsonObject(
			"if", "ukvmif0", "cloner", "True", "type", "inet", "method", "static",
			"addr", n.Address, "mask", "1", "gw", n.Gateway))
	}
	if req.Root.Kind == rootfs.KindBlock {
		pieces = append(pieces, `"blk":`+jsonObject(
			"source", "etfs", "path", "/dev/ld0a", "fstype", "blk", "mountpoint", rumprunRootMount))
	}
	return "{" + strings.Join(pieces, ",") + "}", nil
}

// jsonField renders "key":"value" without escaping &, < and >, which
// rumprun does not decode.
func jsonField(key, value string) string {
	return jsonString(key) + ":" + jsonString(value)
}

// jsonObject renders an object of string pairs in the given order.
func jsonObject(kv ...string) string {
	var fields []string
	for i := 0; i+1 < len(kv); i += 2 {
		fields = append(fields, jsonField(kv[i], kv[i+1]))
	}
	return "{" + strings.Join(fields, ",") + "}"
}

func jsonString(s string) string {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(s); err != nil {
		// A Go string always encodes.
		panic(fmt.Sprintf("encode %q: %v", s, err))
	}
	return strings.TrimSuffix(b.String(), "\n")
}
