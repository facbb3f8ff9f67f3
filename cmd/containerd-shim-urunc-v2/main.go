// Command containerd-shim-urunc-v2 is containerd's shim for unikernels and
// single-application VMs. Run with the hidden launcher argument, it is the
// process that becomes a container's monitor; run as cleanup-orphans, it
// cleans containers whose shim is gone.
package main

import (
	"context"
	"os"

	"github.com/containerd/containerd/v2/pkg/sys/reaper"
	runc "github.com/containerd/go-runc"

	"github.com/urunc-dev/containerd-shim-urunc-v2/inventory"
	"github.com/urunc-dev/containerd-shim-urunc-v2/runtime/launch"
	"github.com/urunc-dev/containerd-shim-urunc-v2/runtime/unikernel"
	urshim "github.com/urunc-dev/containerd-shim-urunc-v2/shim"
)

func main() {
	// go-runc must wait for the runc commands it runs through the shim's
	// one reaper, or the reaper's wait4(-1) steals their exit statuses.
	runc.Monitor = reaper.Default
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case unikernel.LauncherArg:
			// When urunc-launcher is not installed beside the shim.
			launch.Main()
			return
		case inventory.OrphansCommand:
			os.Exit(inventory.OrphansMain(context.Background(), os.Args[2:], os.Stdout, os.Stderr))
		}
	}
	os.Exit(urshim.Main(context.Background(), os.Args[1:]))
}
