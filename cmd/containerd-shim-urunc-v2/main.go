// Command containerd-shim-urunc-v2 is containerd's shim for unikernels and
// single-application VMs. Run with the hidden launcher argument, it is the
// process that becomes a container's monitor.
package main

import (
	"context"
	"os"

	"github.com/containerd/containerd/v2/pkg/shim"

	urunc "github.com/urunc-dev/containerd-shim-urunc-v2/runtime"
	urshim "github.com/urunc-dev/containerd-shim-urunc-v2/shim"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == urunc.LauncherArg {
		urunc.LauncherMain()
		return
	}
	shim.RunShim(context.Background(), urshim.NewManager())
}
