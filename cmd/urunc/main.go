// Command urunc is the operator's and user's tool beside the shim:
//
//	urunc build            a unikernel image from files on disk
//	urunc check            the host's readiness to run them
//	urunc ps               the unikernel containers on this host
//	urunc cleanup-orphans  clean containers whose shim is gone
//
// Each subcommand takes -h. The shim itself is containerd-shim-urunc-v2.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"

	"golang.org/x/sys/unix"

	"github.com/urunc-dev/containerd-shim-urunc-v2/inventory"
)

type command struct {
	name, summary string
	run           func(ctx context.Context, args []string, stdout, stderr io.Writer) int
}

func commands() []command {
	return []command{
		{"build", "write a unikernel image from a kernel and its root (OCI layout, containerd import, registry push)", buildMain},
		{"check", "check this host's readiness to run unikernel containers", checkMain},
		{"ps", "list the unikernel containers on this host, read from containerd's bundles", psMain},
		{inventory.OrphansCommand, "clean containers whose shim is gone", inventory.OrphansMain},
	}
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: urunc COMMAND [flags] (urunc COMMAND -h for its flags)")
	fmt.Fprintln(w)
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-16s %s\n", c.name, c.summary)
	}
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, unix.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(stdout)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	for _, c := range commands() {
		if c.name == args[0] {
			return c.run(ctx, args[1:], stdout, stderr)
		}
	}
	fmt.Fprintf(stderr, "urunc: unknown command %q\n", args[0])
	usage(stderr)
	return 2
}
