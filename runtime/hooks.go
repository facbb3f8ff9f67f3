package runtime

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"time"

	"github.com/containerd/containerd/v2/pkg/sys/reaper"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// runHooks runs OCI hooks in order with the container state on stdin, as
// runc does: nerdctl, for one, sets up CNI networking from a createRuntime
// hook and tears it down from a poststop hook. Hooks are the shim's
// children, so they are started and waited through the reaper.
func runHooks(ctx context.Context, kind string, hooks []specs.Hook, state specs.State) error {
	if len(hooks) == 0 {
		return nil
	}
	stdin, err := json.Marshal(state)
	if err != nil {
		return err
	}
	for _, h := range hooks {
		cmd := exec.Command(h.Path)
		if len(h.Args) > 0 {
			cmd.Args = h.Args
		}
		cmd.Env = h.Env
		cmd.Stdin = bytes.NewReader(stdin)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		timeout := time.Minute
		if h.Timeout != nil && *h.Timeout > 0 {
			timeout = time.Duration(*h.Timeout) * time.Second
		}
		ec, err := reaper.Default.Start(cmd)
		if err != nil {
			return fmt.Errorf("%s hook %s: %w", kind, h.Path, err)
		}
		status, err := reaper.Default.WaitTimeout(cmd, ec, timeout)
		if err != nil {
			return fmt.Errorf("%s hook %s: %w: %s", kind, h.Path, err, bytes.TrimSpace(out.Bytes()))
		}
		if status != 0 {
			return fmt.Errorf("%s hook %s exited with status %d: %s", kind, h.Path, status, bytes.TrimSpace(out.Bytes()))
		}
	}
	return nil
}

// hookState is the OCI state hooks receive.
func hookState(id, bundle string, pid int, status specs.ContainerState, annotations map[string]string) specs.State {
	return specs.State{Version: specs.Version, ID: id, Status: status, Pid: pid, Bundle: bundle, Annotations: annotations}
}
