package network

import (
	"reflect"
	"testing"

	"github.com/urunc-dev/containerd-shim-urunc-v2/runtime/launch"
)

// The guest takes at the pod's localhost exactly the ports the kubelet
// recorded for the container, once each; a malformed record is refused.
func TestLocalPortsFromTheKubeletsAnnotation(t *testing.T) {
	for _, c := range []struct {
		name, value string
		want        []launch.LocalPort
		wantErr     bool
	}{
		{name: "absent"},
		{name: "empty", value: " "},
		{name: "one web port", value: `[{"name":"http","containerPort":80,"protocol":"TCP"}]`,
			want: []launch.LocalPort{{Protocol: "TCP", Port: 80}}},
		{name: "protocol defaults to TCP, UDP and SCTP kept, duplicates once",
			value: `[{"containerPort":8080},{"containerPort":53,"protocol":"UDP"},{"containerPort":53,"protocol":"udp"},{"containerPort":9,"protocol":"SCTP"},{"containerPort":8080,"protocol":"TCP"}]`,
			want:  []launch.LocalPort{{Protocol: "TCP", Port: 8080}, {Protocol: "UDP", Port: 53}, {Protocol: "SCTP", Port: 9}}},
		{name: "not JSON", value: `80`, wantErr: true},
		{name: "port 0", value: `[{"containerPort":0}]`, wantErr: true},
		{name: "port too big", value: `[{"containerPort":70000}]`, wantErr: true},
		{name: "unknown protocol", value: `[{"containerPort":80,"protocol":"QUIC"}]`, wantErr: true},
	} {
		t.Run(c.name, func(t *testing.T) {
			ann := map[string]string{"other": "x"}
			if c.name != "absent" {
				ann[ContainerPortsAnnotation] = c.value
			}
			got, err := LocalPorts(ann)
			if (err != nil) != c.wantErr || !reflect.DeepEqual(got, c.want) {
				t.Fatalf("LocalPorts(%q) = %v, %v; want %v, error %v", c.value, got, err, c.want, c.wantErr)
			}
		})
	}
}
