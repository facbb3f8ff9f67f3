package lifecycle

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// RunHooks runs OCI hooks in order with the container state on stdin, as
// runc does: nerdctl, for one, sets up CNI networking from a createRuntime
// hook and tears it down from a poststop hook. Hooks are the shim's
// children, so they run through the reaper (RunReaped).
func RunHooks(ctx context.Context, kind string, hooks []specs.Hook, state specs.State) error {
	if len(hooks) == 0 {
		return nil
	}
	stdin, err := json.Marshal(state)
	if err != nil {
		return err
	}
	for _, h := range hooks {
		timeout := time.Minute
		if h.Timeout != nil && *h.Timeout > 0 {
			timeout = time.Duration(*h.Timeout) * time.Second
		}
		// Only the hook's own timeout ends it: a poststop hook that frees
		// the pod's address must run even when the request is gone.
		hctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
		cmd := exec.CommandContext(hctx, h.Path)
		if len(h.Args) > 0 {
			cmd.Args = h.Args
		}
		cmd.Env = h.Env
		cmd.Stdin = bytes.NewReader(stdin)
		out, status, err := RunReaped(cmd)
		timedOut := hctx.Err() != nil
		cancel()
		switch {
		case err != nil:
			return fmt.Errorf("%s hook %s: %w: %s", kind, h.Path, err, bytes.TrimSpace(out))
		case timedOut:
			return fmt.Errorf("%s hook %s: killed after its timeout of %s: %s", kind, h.Path, timeout, bytes.TrimSpace(out))
		case status != 0:
			return fmt.Errorf("%s hook %s exited with status %d: %s", kind, h.Path, status, bytes.TrimSpace(out))
		}
	}
	return nil
}

// HookState is the OCI state hooks receive.
func HookState(id, bundle string, pid int, status specs.ContainerState, annotations map[string]string) specs.State {
	return specs.State{Version: specs.Version, ID: id, Status: status, Pid: pid, Bundle: bundle, Annotations: annotations}
}
