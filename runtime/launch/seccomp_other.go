//go:build !amd64 && !arm64

package launch

const (
	auditArch     = 0
	x32SyscallBit = 0
)

var archDenied []uintptr
