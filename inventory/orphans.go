package inventory

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/urunc-dev/containerd-shim-urunc-v2/runtime/bundle"
	"github.com/urunc-dev/containerd-shim-urunc-v2/runtime/lifecycle"
)

// OrphansCommand is the operator's subcommand that cleans containers whose
// shim is gone, for hosts where containerd's own state was lost and it
// will never run the delete command itself. Both the shim binary and the
// urunc command serve it.
const OrphansCommand = "cleanup-orphans"

// DiscoveryFlags adds the flags that say where containerd's task state is
// (-state-dir, -containerd-config) and the probe's timeout.
func DiscoveryFlags(fs *flag.FlagSet) (*Discovery, *Probing) {
	var d Discovery
	var p Probing
	fs.StringVar(&d.StateDir, "state-dir", "", "containerd's task state `DIR` (the bundles' parent, by namespace); default: found from the running containerd, "+DefaultContainerdConfig+" or "+DefaultTaskStateDir)
	fs.StringVar(&d.ContainerdConfig, "containerd-config", "", "read the state dir from this containerd config `FILE` (its state key), as containerd --config FILE")
	fs.DurationVar(&p.Timeout, "shim-timeout", DefaultProbeTimeout, "how long a shim has to answer before it counts as hung")
	return &d, &p
}

// Probing says how shims are probed.
type Probing struct {
	Timeout time.Duration
}

// OrphansMain runs the cleanup-orphans subcommand and returns the exit
// code. It reaps the children it starts (runc, hooks) itself.
func OrphansMain(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	lifecycle.ReapChildren()
	fs := flag.NewFlagSet(OrphansCommand, flag.ContinueOnError)
	fs.SetOutput(stderr)
	discovery, probing := DiscoveryFlags(fs)
	dryRun := fs.Bool("dry-run", false, "list orphans, change nothing")
	removeBundles := fs.Bool("remove-bundles", false, "also remove each orphan's bundle directory")
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return 0
		}
		return 2
	}
	sources, err := FindTaskDirs(*discovery)
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", OrphansCommand, err)
		return 1
	}
	code := 0
	for _, src := range sources {
		orphans, err := Orphans(ctx, src.Dir, probing.Timeout)
		if err != nil {
			fmt.Fprintf(stderr, "%s: %v (from %s)\n", OrphansCommand, err, src.From)
			code = 1
			continue
		}
		for _, e := range orphans {
			name, _ := filepath.Rel(src.Dir, e.Bundle)
			why := "shim gone"
			if e.Shim == ShimHung {
				why = fmt.Sprintf("shim hung (accepts, no answer in %s), pid %d %s", probing.Timeout, e.ShimPid, e.ShimProcess)
			}
			if !e.Orphan() {
				// Slow or wedged but alive: it may still act for its
				// containers, and tearing them down under it is worse
				// than an operator's look.
				fmt.Fprintf(stdout, "%s: not cleaned: %s; clean it once its shim is gone or stopped\n", name, why)
				continue
			}
			if *dryRun {
				fmt.Fprintf(stdout, "%s: %s\n", name, why)
				continue
			}
			exit, err := bundle.Cleanup(ctx, e.Bundle)
			if err == nil && *removeBundles {
				err = os.RemoveAll(e.Bundle)
			}
			if err != nil {
				fmt.Fprintf(stdout, "%s: cleanup failed (%s): %v\n", name, why, err)
				code = 1
				continue
			}
			fmt.Fprintf(stdout, "%s: cleaned (%s; monitor pid %d, status %d)\n", name, why, exit.Pid, exit.Status)
		}
	}
	return code
}
