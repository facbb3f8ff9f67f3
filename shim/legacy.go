package shim

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"

	bootapi "github.com/containerd/containerd/api/runtime/bootstrap/v1"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"google.golang.org/protobuf/proto"
)

// containerd 2.x starts a shim with its bootstrap parameters (protobuf) on
// stdin and reads a protobuf result; containerd 1.7 sends nothing (or its
// runtime options) and reads a JSON result. containerd's shim library
// (v2.4) only speaks the former. PrepareStart tells the two apart, so that
// one binary serves both: 2.x goes on to the library with its stdin
// restored; 1.7 is answered here, through the same Manager.Start.

// IsStartAction tells whether args (without argv[0]) ask for the start
// action: the action is the one positional argument after the flags.
func IsStartAction(args []string) bool {
	return len(args) > 0 && args[len(args)-1] == "start"
}

// PrepareStart reads the start payload from stdin. For containerd 2.x it
// puts the payload back on a new stdin and returns false: the caller runs
// the shim library as usual. For containerd 1.7 it starts the shim daemon,
// writes the JSON bootstrap result to stdout and returns true.
func PrepareStart(ctx context.Context, args []string, stdin io.Reader, stdout io.Writer) (bool, error) {
	input, err := io.ReadAll(io.LimitReader(stdin, 10<<20))
	if err != nil {
		return false, fmt.Errorf("read start payload: %w", err)
	}
	flags := parseStartFlags(args)
	var params bootapi.BootstrapParams
	if len(input) > 0 && proto.Unmarshal(input, &params) == nil &&
		params.GetInstanceID() == flags.id && params.GetNamespace() == flags.namespace {
		r, w, err := os.Pipe()
		if err != nil {
			return false, err
		}
		go func() {
			_, _ = w.Write(input)
			w.Close()
		}()
		os.Stdin = r
		return false, nil
	}
	params = bootapi.BootstrapParams{
		InstanceID:             flags.id,
		Namespace:              flags.namespace,
		ContainerdGrpcAddress:  flags.address,
		ContainerdTtrpcAddress: os.Getenv("TTRPC_ADDRESS"),
		LogLevel:               bootapi.LogLevel_LOG_LEVEL_INFO,
	}
	if flags.debug {
		params.LogLevel = bootapi.LogLevel_LOG_LEVEL_DEBUG
	}
	if flags.namespace == "" {
		return true, fmt.Errorf("shim namespace cannot be empty")
	}
	result, err := Manager{}.Start(namespaces.WithNamespace(ctx, flags.namespace), &params)
	if err != nil {
		return true, err
	}
	data, err := json.Marshal(map[string]any{
		"version":  result.GetVersion(),
		"address":  result.GetAddress(),
		"protocol": result.GetProtocol(),
	})
	if err != nil {
		return true, err
	}
	_, err = io.Copy(stdout, bytes.NewReader(data))
	return true, err
}

type startFlags struct {
	namespace, id, address string
	debug                  bool
}

// parseStartFlags reads the flags containerd passes to start; unknown
// ones (a newer containerd's) are skipped rather than fatal.
func parseStartFlags(args []string) startFlags {
	var f startFlags
	fs := flag.NewFlagSet("start", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&f.namespace, "namespace", "", "")
	fs.StringVar(&f.id, "id", "", "")
	fs.StringVar(&f.address, "address", "", "")
	fs.BoolVar(&f.debug, "debug", false, "")
	fs.String("publish-binary", "", "")
	fs.String("bundle", "", "")
	fs.String("socket", "", "")
	fs.String("debug-socket", "", "")
	_ = fs.Parse(args)
	return f
}
