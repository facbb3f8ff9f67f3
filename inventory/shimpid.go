package inventory

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// ShimPidFile is the bundle's file with the pid of the shim that serves
// its container (the name containerd's own shims use), written by the
// shim when it creates the container.
const ShimPidFile = "shim.pid"

// WriteShimPid records the calling shim's pid in bundle.
func WriteShimPid(bundle string) error {
	p := filepath.Join(bundle, ShimPidFile)
	tmp := p + ".tmp"
	_ = os.Remove(tmp)
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL|unix.O_NOFOLLOW, 0o644)
	if err != nil {
		return fmt.Errorf("write %s: %w", p, err)
	}
	_, err = f.WriteString(strconv.Itoa(os.Getpid()))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, p)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("write %s: %w", p, err)
	}
	return nil
}

// ShimProcess is what the host's process table says of a shim that
// accepted a probe but did not answer it.
type ShimProcess int

const (
	// ShimProcessUnknown: no pid recorded (a bundle of an older shim) or
	// none readable; a hung shim in this state is not cleaned.
	ShimProcessUnknown ShimProcess = iota
	// ShimProcessRunning: the process exists and is not stopped: slow or
	// wedged, it may still act for its containers; not cleaned.
	ShimProcessRunning
	// ShimProcessStopped: stopped (state T or t); it acts for nobody
	// until continued.
	ShimProcessStopped
	// ShimProcessDead: gone, or a zombie.
	ShimProcessDead
)

func (p ShimProcess) String() string {
	switch p {
	case ShimProcessRunning:
		return "running"
	case ShimProcessStopped:
		return "stopped"
	case ShimProcessDead:
		return "dead"
	default:
		return "unknown"
	}
}

// shimProcessOf reads the shim's pid from bundle and its state from
// procDir (/proc).
func shimProcessOf(bundle, procDir string) (int, ShimProcess) {
	data, err := os.ReadFile(filepath.Join(bundle, ShimPidFile))
	if err != nil {
		return 0, ShimProcessUnknown
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil || pid <= 0 {
		return 0, ShimProcessUnknown
	}
	stat, err := os.ReadFile(filepath.Join(procDir, strconv.Itoa(pid), "stat"))
	if errors.Is(err, fs.ErrNotExist) {
		return pid, ShimProcessDead
	}
	if err != nil {
		return pid, ShimProcessUnknown
	}
	// The state follows the command name, which is in parentheses and
	// may itself hold any character.
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 || i+2 >= len(stat) {
		return pid, ShimProcessUnknown
	}
	switch stat[i+2] {
	case 'T', 't':
		return pid, ShimProcessStopped
	case 'Z', 'X', 'x':
		return pid, ShimProcessDead
	}
	return pid, ShimProcessRunning
}
