package lifecycle

import (
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// CrashFileEnv names a file for the crash-injection tests: when it holds
// the name of a step, the process that reaches that step removes the file
// and kills itself, as a shim crash would. Unset (always, outside those
// tests) it costs one getenv per step.
const CrashFileEnv = "URUNC_TEST_CRASH_FILE"

// CrashPoint kills the process at step when the crash-injection tests
// name it in CrashFileEnv's file; it does nothing otherwise.
func CrashPoint(step string) {
	f := os.Getenv(CrashFileEnv)
	if f == "" {
		return
	}
	if data, err := os.ReadFile(f); err == nil && strings.TrimSpace(string(data)) == step {
		_ = os.Remove(f)
		_ = unix.Kill(os.Getpid(), unix.SIGKILL)
	}
}
