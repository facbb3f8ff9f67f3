package shim

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"

	bootapi "github.com/containerd/containerd/api/runtime/bootstrap/v1"
	"google.golang.org/protobuf/proto"
)

// start is the start action. containerd 2.x sends its bootstrap
// parameters (protobuf) on stdin and reads a protobuf result; containerd
// 1.7 sends nothing (or its runtime options) and reads a JSON result. One
// binary serves both, through the same Manager.Start.
func start(ctx context.Context, f flags, stdin io.Reader, stdout io.Writer) error {
	input, err := io.ReadAll(io.LimitReader(stdin, 10<<20))
	if err != nil {
		return fmt.Errorf("read start payload: %w", err)
	}
	var params bootapi.BootstrapParams
	legacy := len(input) == 0 || proto.Unmarshal(input, &params) != nil ||
		params.GetInstanceID() != f.id || params.GetNamespace() != f.namespace
	if legacy {
		params = bootapi.BootstrapParams{
			InstanceID:             f.id,
			Namespace:              f.namespace,
			ContainerdGrpcAddress:  f.address,
			ContainerdTtrpcAddress: os.Getenv("TTRPC_ADDRESS"),
			LogLevel:               bootapi.LogLevel_LOG_LEVEL_INFO,
		}
		if f.debug {
			params.LogLevel = bootapi.LogLevel_LOG_LEVEL_DEBUG
		}
	}
	result, err := Manager{}.Start(ctx, &params)
	if err != nil {
		return err
	}
	if !legacy {
		return writeProto(stdout, result)
	}
	data, err := json.Marshal(map[string]any{
		"version":  result.GetVersion(),
		"address":  result.GetAddress(),
		"protocol": result.GetProtocol(),
	})
	if err != nil {
		return err
	}
	_, err = stdout.Write(data)
	return err
}
