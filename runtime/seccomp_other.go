//go:build !amd64 && !arm64

package runtime

const (
	auditArch     = 0
	x32SyscallBit = 0
)

var archDenied []uintptr
