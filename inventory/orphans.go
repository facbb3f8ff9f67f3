package inventory

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/urunc-dev/containerd-shim-urunc-v2/runtime/bundle"
	"github.com/urunc-dev/containerd-shim-urunc-v2/runtime/lifecycle"
)

// OrphansCommand is the operator's subcommand that cleans containers whose
// shim is gone, for hosts where containerd's own state was lost and it
// will never run the delete command itself. Both the shim binary and the
// urunc command serve it.
const OrphansCommand = "cleanup-orphans"

// OrphansMain runs the cleanup-orphans subcommand and returns the exit
// code. It reaps the children it starts (runc, hooks) itself.
func OrphansMain(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	lifecycle.ReapChildren()
	fs := flag.NewFlagSet(OrphansCommand, flag.ContinueOnError)
	fs.SetOutput(stderr)
	stateDir := fs.String("state-dir", DefaultTaskStateDir, "containerd's task state dir (the bundles' parent, by namespace)")
	dryRun := fs.Bool("dry-run", false, "list orphans, change nothing")
	removeBundles := fs.Bool("remove-bundles", false, "also remove each orphan's bundle directory")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	orphans, err := Orphans(*stateDir)
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
		exit, err := bundle.Cleanup(ctx, b)
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
