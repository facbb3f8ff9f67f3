package shim

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/containerd/containerd/v2/pkg/shim"

	urunc "github.com/urunc-dev/containerd-shim-urunc-v2/runtime"
)

// OrphansCommand is the operator's subcommand that cleans containers whose
// shim is gone, for hosts where containerd's own state was lost and it
// will never run the delete command itself.
const OrphansCommand = "cleanup-orphans"

// DefaultTaskStateDir is where containerd keeps its v2 task bundles.
const DefaultTaskStateDir = "/run/containerd/io.containerd.runtime.v2.task"

// OrphansMain runs the cleanup-orphans subcommand and returns the exit code.
func OrphansMain(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet(OrphansCommand, flag.ContinueOnError)
	fs.SetOutput(stderr)
	stateDir := fs.String("state-dir", DefaultTaskStateDir, "containerd's task state dir (the bundles' parent, by namespace)")
	dryRun := fs.Bool("dry-run", false, "list orphans, change nothing")
	removeBundles := fs.Bool("remove-bundles", false, "also remove each orphan's bundle directory")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	orphans, err := FindOrphans(*stateDir)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	code := 0
	for _, b := range orphans {
		name := strings.TrimPrefix(b, *stateDir+"/")
		if *dryRun {
			fmt.Fprintf(stdout, "%s: shim gone\n", name)
			continue
		}
		exit, err := urunc.Cleanup(ctx, b)
		if err == nil && *removeBundles {
			err = os.RemoveAll(b)
		}
		if err != nil {
			fmt.Fprintf(stdout, "%s: cleanup failed: %v\n", name, err)
			code = 1
			continue
		}
		fmt.Fprintf(stdout, "%s: cleaned (monitor pid %d, status %d)\n", name, exit.Pid, exit.Status)
	}
	return code
}

// FindOrphans lists bundles under stateDir (NAMESPACE/ID) that hold this
// runtime's state but whose shim no longer answers on its socket.
func FindOrphans(stateDir string) ([]string, error) {
	bundles, err := filepath.Glob(filepath.Join(stateDir, "*", "*"))
	if err != nil {
		return nil, err
	}
	var out []string
	for _, b := range bundles {
		if !urunc.HasState(b) {
			continue
		}
		if addr := shimAddress(b); addr != "" && shim.CanConnect(addr) {
			continue
		}
		out = append(out, b)
	}
	return out, nil
}

// shimAddress reads the shim's address from the bundle: bootstrap.json
// (containerd 2.x) or address (1.7).
func shimAddress(bundle string) string {
	if data, err := os.ReadFile(filepath.Join(bundle, "bootstrap.json")); err == nil {
		var b struct {
			Address string `json:"address"`
		}
		if json.Unmarshal(data, &b) == nil {
			return b.Address
		}
	}
	data, err := os.ReadFile(filepath.Join(bundle, "address"))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(data))
}
