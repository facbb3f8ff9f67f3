// Command execonly-init is a measurement aid for the guest agent's boot
// cost (TestAgentBootFigures): a static Go program that, as the guest's
// PID 1 in the agent's place, only execs the bench's app. What it adds to
// a boot is what any Go program in front of the app costs under TCG (its
// archive, its exec, the Go runtime's start): the floor under the agent's
// own cost.
package main

import "syscall"

func main() {
	// The bench's app (TestAgentBootFigures runs the same), as the agent
	// would start it; the agent's config is not read, which would add a
	// decoder's cost that is the agent's own.
	args := []string{"/init", "exit", "0"}
	err := syscall.Exec(args[0], args, []string{"PATH=/bin"})
	_, _ = syscall.Write(2, []byte("execonly-init: exec "+args[0]+": "+err.Error()+"\n"))
	syscall.Exit(127)
}
