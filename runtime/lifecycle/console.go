package lifecycle

import (
	"bytes"
	"regexp"
	"strconv"
	"sync"
	"time"
)

// ConsoleTap reads a copy of the guest's console on its way to the
// container's stdout and keeps what it says about the guest's own exit: a
// Linux guest's kernel prints "Attempted to kill init! exitcode=0x…" when
// its init ends, then the monitor (qemu -no-reboot, panic=-1) exits 0
// whatever the app's status was. The caller writes the console into it
// and closes it when the output ends.
type ConsoleTap struct {
	mu      sync.Mutex
	partial []byte
	code    int
	found   bool
	done    chan struct{}
	once    sync.Once
}

// NewConsoleTap returns an open tap.
func NewConsoleTap() *ConsoleTap { return &ConsoleTap{done: make(chan struct{})} }

// initExit matches the kernel's line; the value is init's wait status.
var initExit = regexp.MustCompile(`Attempted to kill init! exitcode=0x([0-9a-fA-F]+)`)

// maxConsoleLine bounds what the tap keeps of a line without a newline.
const maxConsoleLine = 4096

// Write scans p for the kernel's line; it never fails, so it cannot slow
// or break the copy it sits on.
func (t *ConsoleTap) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	data := append(t.partial, p...)
	for {
		i := bytes.IndexByte(data, '\n')
		if i < 0 {
			break
		}
		t.scan(data[:i])
		data = data[i+1:]
	}
	if len(data) > maxConsoleLine {
		data = data[len(data)-maxConsoleLine:]
	}
	t.partial = append(t.partial[:0], data...)
	return len(p), nil
}

func (t *ConsoleTap) scan(line []byte) {
	m := initExit.FindSubmatch(line)
	if m == nil {
		return
	}
	status, err := strconv.ParseUint(string(m[1]), 16, 32)
	if err != nil {
		return
	}
	t.code, t.found = waitStatusCode(uint32(status)), true
}

// waitStatusCode turns a wait status into a container's status: the exit
// code, or 128+signal.
func waitStatusCode(status uint32) int {
	if sig := status & 0x7f; sig != 0 {
		return 128 + int(sig)
	}
	return int(status>>8) & 0xff
}

// Close marks the end of the console.
func (t *ConsoleTap) Close() error {
	t.once.Do(func() {
		t.mu.Lock()
		t.scan(t.partial)
		t.mu.Unlock()
		close(t.done)
	})
	return nil
}

// GuestExit waits up to timeout for the console to end and returns the
// code the guest reported, if any.
func (t *ConsoleTap) GuestExit(timeout time.Duration) (int, bool) {
	select {
	case <-t.done:
	case <-time.After(timeout):
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.code, t.found
}

// guestExitWait bounds the wait for the end of the console at exit: the
// kernel's line is written before the monitor exits, but the copy may
// still be reading it.
const guestExitWait = 2 * time.Second

// ExitFromConsole makes a monitor's clean exit (0) the guest's own status when
// the guest reported one on its console; a monitor killed or failing
// keeps its status.
func ExitFromConsole(tap *ConsoleTap) func(ExitStatus) ExitStatus {
	return func(e ExitStatus) ExitStatus {
		if e.Status != 0 {
			return e
		}
		if code, ok := tap.GuestExit(guestExitWait); ok {
			e.Status = code
		}
		return e
	}
}
