package network

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/urunc-dev/containerd-shim-urunc-v2/runtime/launch"
)

// ContainerPortsAnnotation is the kubelet's record of a container's
// declared ports (its `ports:`), a JSON list of Kubernetes ContainerPort.
// containerd's CRI puts it in the OCI spec when the runtime handler's
// container_annotations lists it.
const ContainerPortsAnnotation = "io.kubernetes.container.ports"

// LocalPorts are the ports the guest serves at the pod's 127.0.0.1: those
// the pod declares for this container. Only these are taken from the
// pod's localhost; every other port there stays the sidecars'.
func LocalPorts(annotations map[string]string) ([]launch.LocalPort, error) {
	raw, ok := annotations[ContainerPortsAnnotation]
	if !ok || strings.TrimSpace(raw) == "" {
		return nil, nil
	}
	var declared []struct {
		ContainerPort int32  `json:"containerPort"`
		Protocol      string `json:"protocol"`
	}
	if err := json.Unmarshal([]byte(raw), &declared); err != nil {
		return nil, fmt.Errorf("annotation %s: %w", ContainerPortsAnnotation, err)
	}
	var out []launch.LocalPort
	seen := map[launch.LocalPort]bool{}
	for _, d := range declared {
		if d.ContainerPort < 1 || d.ContainerPort > 65535 {
			return nil, fmt.Errorf("annotation %s: port %d out of range", ContainerPortsAnnotation, d.ContainerPort)
		}
		p := launch.LocalPort{Protocol: strings.ToUpper(d.Protocol), Port: uint16(d.ContainerPort)}
		if p.Protocol == "" {
			p.Protocol = "TCP"
		}
		switch p.Protocol {
		case "TCP", "UDP", "SCTP":
		default:
			return nil, fmt.Errorf("annotation %s: port %d: protocol %q is none of TCP, UDP, SCTP", ContainerPortsAnnotation, p.Port, d.Protocol)
		}
		if !seen[p] {
			seen[p] = true
			out = append(out, p)
		}
	}
	return out, nil
}
