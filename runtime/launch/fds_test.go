package launch

import (
	"os"
	"os/exec"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// strayFDsEnv makes the test binary, re-run by TestStrayFDsDoNotReachMonitor,
// hold a stray descriptor and a handed-over one, and exec a shell that
// says which it still has.
const strayFDsEnv = "URUNC_TEST_STRAY_FDS"

func init() {
	if os.Getenv(strayFDsEnv) == "" {
		return
	}
	f, err := os.Open("/dev/null")
	if err != nil {
		os.Exit(2)
	}
	// Neither is close-on-exec, as a careless open would leave them.
	for _, fd := range []int{7, 9} {
		if err := unix.Dup2(int(f.Fd()), fd); err != nil {
			os.Exit(2)
		}
	}
	if err := closeStrayFDs([]int{7}); err != nil {
		os.Stdout.WriteString("closeStrayFDs: " + err.Error() + "\n")
		os.Exit(2)
	}
	err = unix.Exec("/bin/sh", []string{"sh", "-c", "for fd in 7 9; do [ -e /proc/self/fd/$fd ] && echo open $fd; done; true"}, nil)
	os.Stdout.WriteString("exec: " + err.Error() + "\n")
	os.Exit(2)
}

// A descriptor the launcher holds without close-on-exec reaches the
// monitor only when the launch spec hands it over.
func TestStrayFDsDoNotReachMonitor(t *testing.T) {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), strayFDsEnv+"=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if got := strings.TrimSpace(string(out)); got != "open 7" {
		t.Fatalf("descriptors in the exec'd program: %q, want only the handed-over 7", got)
	}
}
