package launch

import (
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// seccompProbeEnv makes the test binary, re-run by TestMonitorFilter,
// install the filter and report what each probe call gave.
const seccompProbeEnv = "URUNC_TEST_SECCOMP_PROBE"

func init() {
	if os.Getenv(seccompProbeEnv) == "" {
		return
	}
	runtime.LockOSThread()
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		os.Stdout.WriteString("nnp: " + err.Error() + "\n")
		os.Exit(2)
	}
	if err := installMonitorFilter(); err != nil {
		os.Stdout.WriteString("install: " + err.Error() + "\n")
		os.Exit(2)
	}
	report := func(name string, err error) {
		res := "ok"
		if err != nil {
			res = err.Error()
		}
		os.Stdout.WriteString(name + ": " + res + "\n")
	}
	_, err := unix.KeyctlGetKeyringID(unix.KEY_SPEC_PROCESS_KEYRING, true)
	report("keyctl", err)
	report("unshare", unix.Unshare(unix.CLONE_NEWUSER))
	// CLONE_THREAD makes the call invalid without the filter, so that a
	// filter that let it through would not fork this Go process.
	_, _, errno := unix.RawSyscall(unix.SYS_CLONE, unix.CLONE_NEWUSER|unix.CLONE_THREAD|uintptr(unix.SIGCHLD), 0, 0)
	report("clone into a namespace", errnoErr(errno))
	_, _, errno = unix.RawSyscall(unix.SYS_CLONE3, 0, 0, 0)
	report("clone3", errnoErr(errno))
	report("mount", unix.Mount("none", "/mnt", "tmpfs", 0, ""))
	out, err := exec.Command("/bin/true").CombinedOutput()
	report("fork and exec", errOrOutput(err, out))
	os.Exit(0)
}

func errnoErr(e unix.Errno) error {
	if e == 0 {
		return nil
	}
	return e
}

func errOrOutput(err error, out []byte) error {
	if err != nil {
		return err
	}
	if len(out) > 0 {
		return os.ErrInvalid
	}
	return nil
}

// The project's filter, loaded for real in a child: the calls it denies
// fail with EPERM (clone3 with ENOSYS, so that libc falls back to clone,
// whose flags it checks), and a monitor's ordinary life (fork, exec) goes
// on.
func TestMonitorFilter(t *testing.T) {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), seccompProbeEnv+"=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("probe: %v\n%s", err, out)
	}
	want := map[string]string{
		"keyctl":                 "operation not permitted",
		"unshare":                "operation not permitted",
		"clone into a namespace": "operation not permitted",
		"clone3":                 "function not implemented",
		"mount":                  "operation not permitted",
		"fork and exec":          "ok",
	}
	got := map[string]string{}
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if k, v, ok := strings.Cut(l, ": "); ok {
			got[k] = v
		}
	}
	for k, w := range want {
		if got[k] != w {
			t.Errorf("%s under the filter: %q, want %q", k, got[k], w)
		}
	}
}
