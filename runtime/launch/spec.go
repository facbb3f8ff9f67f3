// Package launch is the launcher: the process the shim starts in a
// container's namespaces and cgroup, which builds the monitor's confined
// root, waits for Start and then execs the monitor. It runs as its own
// small binary (urunc-launcher, beside the shim), so that each container's
// launcher pays the Go start-up of this package's few dependencies, not
// the shim's; the shim binary can run it too. Nothing here may import the
// runtime, rootfs or containerd packages.
package launch

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"

	"github.com/urunc-dev/containerd-shim-urunc-v2/internal/confined"
)

// File descriptors the launcher inherits.
const (
	ControlFD = 3 // read: launch spec, then one byte meaning "start"
	StatusFD  = 4 // write: "ready" or an error; closed by a successful exec
	// ControlSocketFD is the monitor's control socket (QMP), if any.
	ControlSocketFD = 5
	// AgentSocketFD is the guest agent's channel socket, if any.
	AgentSocketFD = 6
	// FirstDiskFD and up are disks the launcher opens for a
	// monitor that runs as a user other than root.
	FirstDiskFD = 7
)

// Messages on the status pipe.
const (
	StatusReady       = "ready"
	StatusErrorPrefix = "error: "
)

// Spec is everything the launcher needs, sent over the control pipe.
type Spec struct {
	RootDir string          `json:"rootDir"` // host dir to build the confined root on
	Binds   []confined.Bind `json:"binds"`
	Files   []File          `json:"files,omitempty"`
	Argv    []string        `json:"argv"`
	Env     []string        `json:"env"`
	Network *Network        `json:"network,omitempty"`
	// Rootfs is the container rootfs on the host; Volumes are bound into
	// it, in the launcher's mount namespace only, for a shared root.
	Rootfs  string          `json:"rootfs,omitempty"`
	Volumes []confined.Bind `json:"volumes,omitempty"`
	// HelperProcess runs beside the monitor (virtiofsd).
	HelperProcess *confined.HelperProcess `json:"helper,omitempty"`
	// RootReadOnly binds Rootfs read-only (its top mount; the volumes
	// bound into it keep their own access) before anything serves it.
	RootReadOnly bool `json:"rootReadOnly,omitempty"`
	// Proc mounts a pids-only proc in the confined root, for a monitor
	// that reaches its own descriptors through /proc/self/fd (qemu's 9p
	// server).
	Proc bool `json:"proc,omitempty"`
	// MonitorFDs are inherited descriptors for the monitor alone (its
	// control socket, its disks), hidden from the helper.
	MonitorFDs []int `json:"monitorFDs,omitempty"`
	// Confine is what the monitor and its helper get of the container's
	// confinement.
	Confine Confinement `json:"confine"`
}

// File is a small file written into the confined root (firecracker's
// config).
type File struct {
	Path string `json:"path"`
	Data []byte `json:"data"`
}

// WriteSpec sends spec length-prefixed, so the launcher can read it
// without waiting for EOF: the same pipe later carries the start byte.
func WriteSpec(w io.Writer, spec Spec) error {
	data, err := json.Marshal(spec)
	if err != nil {
		return err
	}
	var n [4]byte
	binary.BigEndian.PutUint32(n[:], uint32(len(data)))
	if _, err := w.Write(n[:]); err != nil {
		return err
	}
	_, err = w.Write(data)
	return err
}

func readSpec(r io.Reader) (Spec, error) {
	var spec Spec
	var n [4]byte
	if _, err := io.ReadFull(r, n[:]); err != nil {
		return spec, fmt.Errorf("read launch spec: %w", err)
	}
	data := make([]byte, binary.BigEndian.Uint32(n[:]))
	if _, err := io.ReadFull(r, data); err != nil {
		return spec, fmt.Errorf("read launch spec: %w", err)
	}
	return spec, json.Unmarshal(data, &spec)
}
