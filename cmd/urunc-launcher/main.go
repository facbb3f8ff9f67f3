// Command urunc-launcher is the launcher of containerd-shim-urunc-v2: the
// process the shim starts in each unikernel container's namespaces and
// cgroup, which builds the monitor's confined root, waits for Start and
// execs the monitor. It is installed beside the shim, which runs it with
// the launcher protocol's descriptors; it is not meant to be run by hand.
package main

import "github.com/urunc-dev/containerd-shim-urunc-v2/runtime/launch"

func main() { launch.Main() }
