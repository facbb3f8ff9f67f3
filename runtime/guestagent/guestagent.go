// Package guestagent is what the shim and its guest agent (cmd/urunc-agent,
// PID 1 of a Linux guest, in front of the app) share: the app's
// configuration the agent reads from its archive, where that archive puts
// it, the name of the virtio-serial port or the vsock port between them,
// and the client of the ttrpc service the agent serves there (agentapi, generated
// from agentapi/agent.proto).
//
// The service is this project's own small .proto over ttrpc, which the
// shim already serves. containerd's own task service (api/runtime/task)
// was the first choice, but its package also holds the gRPC stubs, which
// take the static agent from 4.4 MB to 11 MB. Exec's stdio goes as
// unary calls (ReadOutput, WriteStdin) that ttrpc multiplexes on the one
// port, as kata's agent does, so no stream multiplexer is needed, and the
// guest may send only the one answer each call asks for (frameGuard).
//
// Nothing here may import the runtime, rootfs or containerd packages:
// the agent is built from it and stays small.
package guestagent

import (
	"fmt"

	"google.golang.org/protobuf/proto"

	"github.com/urunc-dev/containerd-shim-urunc-v2/runtime/guestagent/agentapi"
)

// Paths inside the guest, in the archive the shim adds to the guest's
// initrd. The directory is the agent's alone: no image uses it.
const (
	Dir        = "/.urunc"
	BinaryPath = Dir + "/agent"
	ConfigPath = Dir + "/app.binpb"
)

// PortName is the name of the virtio-serial port (qemu's virtserialport
// name=), which the agent finds under /sys/class/virtio-ports.
const PortName = "urunc.agent"

// VsockPort is the vsock port the agent listens on where its channel is
// a virtio-vsock device (firecracker's, cloud-hypervisor's hybrid vsock).
// Below 1024, a port only root may bind in the guest: no app process can
// take it, should the agent ever let it go.
const VsockPort = 1023

// Config is the app the agent starts: the spec's process, and the
// hostname. It reaches the guest as a file in the agent's archive, an
// agentapi.Config message (the agent's protocol's own encoding: a JSON
// decoder would be the agent's code alone), never on the kernel command
// line, so it has none of the command line's limits (length, quoting, 32
// variables).
type Config struct {
	Args           []string
	Env            []string
	Cwd            string
	UID            uint32
	GID            uint32
	AdditionalGids []uint32
	Hostname       string
}

// Process is the app as the agent's service names a process.
func (c Config) Process() *agentapi.Process {
	return &agentapi.Process{Args: c.Args, Env: c.Env, Cwd: c.Cwd, Uid: c.UID, Gid: c.GID, AdditionalGids: c.AdditionalGids}
}

// MaxConfigBytes bounds the config file the agent reads.
const MaxConfigBytes = 1 << 20

// Marshal renders the config file, refusing one without an app.
func (c Config) Marshal() ([]byte, error) {
	if len(c.Args) == 0 || c.Args[0] == "" {
		return nil, fmt.Errorf("guest agent: no app to run: the process has no args, or an empty first one")
	}
	data, err := proto.Marshal(&agentapi.Config{Process: c.Process(), Hostname: c.Hostname})
	if err != nil {
		return nil, fmt.Errorf("guest agent: the app's config: %w", err)
	}
	if len(data) > MaxConfigBytes {
		return nil, fmt.Errorf("guest agent: the app's config is %d bytes, more than %d", len(data), MaxConfigBytes)
	}
	return data, nil
}

// ParseConfig reads a config file.
func ParseConfig(data []byte) (Config, error) {
	var c Config
	if len(data) > MaxConfigBytes {
		return c, fmt.Errorf("config is more than %d bytes", MaxConfigBytes)
	}
	var m agentapi.Config
	if err := proto.Unmarshal(data, &m); err != nil {
		return c, fmt.Errorf("parse config: %w", err)
	}
	p := m.GetProcess()
	c = Config{Args: p.GetArgs(), Env: p.GetEnv(), Cwd: p.GetCwd(), UID: p.GetUid(), GID: p.GetGid(), AdditionalGids: p.GetAdditionalGids(), Hostname: m.GetHostname()}
	if len(c.Args) == 0 || c.Args[0] == "" {
		return c, fmt.Errorf("config names no app (no args, or an empty first one)")
	}
	return c, nil
}
