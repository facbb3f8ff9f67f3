package lifecycle

import (
	"bytes"
	"fmt"
	"os/exec"
	"time"

	"github.com/containerd/containerd/v2/pkg/sys/reaper"
)

// reapedOutputDelay bounds how long a command's output is read after it
// has exited: a child it left behind holding the pipe (a daemonizing
// hook) must not hold the caller with it.
const reapedOutputDelay = time.Second

// RunReaped runs cmd to its end and returns its output, stdout and stderr
// together, and its exit status. The shim is child subreaper and
// containerd's reaper reaps every child of it (wait4(-1)), so cmd is
// started and waited through the reaper: exec.Cmd.Wait alone would race
// it for the status and could get ECHILD. The caller bounds cmd with
// exec.CommandContext, whose kill the reaper then reports like any exit.
func RunReaped(cmd *exec.Cmd) ([]byte, int, error) {
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if cmd.WaitDelay == 0 {
		cmd.WaitDelay = reapedOutputDelay
	}
	ec, err := reaper.Default.Start(cmd)
	if err != nil {
		return nil, 0, err
	}
	// Wait returns once the reaper has the exit and cmd's output copies
	// are done.
	status, err := reaper.Default.Wait(cmd, ec)
	return out.Bytes(), status, err
}

// RunMonitorProbe is monitors.Runner for the shim (solo5-hvt's --version).
func RunMonitorProbe(cmd *exec.Cmd) ([]byte, error) {
	out, status, err := RunReaped(cmd)
	if err == nil && status != 0 {
		err = fmt.Errorf("%s exited with status %d", cmd.Path, status)
	}
	return out, err
}
