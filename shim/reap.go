package shim

// IsDeleteAction tells whether the shim runs as containerd's delete
// command (cleanup after a dead shim).
func IsDeleteAction(args []string) bool {
	return len(args) > 0 && args[len(args)-1] == "delete"
}
