// Package guestconsole reads a Linux guest's console on its way to the
// container's stdout for what the guest's kernel says about its end: the
// init's exit status, or a panic.
package guestconsole

import (
	"bytes"
	"regexp"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// Tap reads a copy of the guest's console on its way to the
// container's stdout and keeps what it says about the guest's own end: a
// Linux guest's kernel panics with "Attempted to kill init!
// exitcode=0x…" when its init ends, then the monitor (qemu -no-reboot,
// panic=-1) exits 0 whatever the app's status was. The caller writes the
// console into it and closes it when the output ends.
//
// What counts, and the trust that remains. The console carries the app's
// output and the kernel's records alike, and the app may print anything,
// a whole kernel-looking line included. So only the last kernel event
// that ends a guest counts: a panic, or the kernel's own power-down,
// restart or halt line. The real end always prints one of these after
// anything the app printed before it, so a line the app prints (a logged
// User-Agent, say) is overridden by the real end: an exit N by the real
// "Attempted to kill init" line, a clean power-down by "reboot: Power
// down". A kernel line is recognised by the kernel's record prefix, the
// timestamp "[%5lu.%06lu] " that the guest's command line turns on
// (printk.time=1), and the message must run to the end of the line.
// What the scanner cannot tell apart is what the guest's root does: it
// can write real kernel records (/dev/kmsg) and reset the machine through
// its I/O ports with no kernel line at all, and so end with a forged panic
// last. In a Linux guest that root is the app, its init, which chooses its
// status anyway by exiting: nothing the app merely prints (its data)
// can set the container's status.
type Tap struct {
	mu      sync.Mutex
	partial []byte
	code    int
	found   bool
	done    chan struct{}
	once    sync.Once
}

// NewTap returns an open tap.
func NewTap() *Tap { return &Tap{done: make(chan struct{})} }

// kernelRecord is the prefix the kernel gives a record on the console
// with printk.time=1: "[    1.234567] ", or on kernels built with
// CONFIG_PRINTK_CALLER "[    1.234567][    T1] ".
var kernelRecord = regexp.MustCompile(`\[ *[0-9]+\.[0-9]{6}\](?:\[ *[TC][0-9]+\])? `)

// initExit is the panic when init ends; the value is init's wait status,
// as the kernel prints it ("0x%08x").
var initExit = regexp.MustCompile(`^Kernel panic - not syncing: Attempted to kill init! exitcode=0x([0-9a-f]{8})$`)

// kernelPanic is any other panic: "No working init found", an oops with
// panic_on_oops, out of memory with panic_on_oom, a root that cannot be
// mounted.
const kernelPanic = "Kernel panic - not syncing: "

// cleanEnds are the kernel's own lines for a guest that ends itself
// without panicking (kernel/reboot.c): its monitor's status then stands.
var cleanEnds = []string{"reboot: Power down", "reboot: Restarting system", "reboot: System halted"}

// PanicStatus is the container's status when its guest's kernel panics
// for a reason other than its init's end: 128+SIGABRT, what a shell
// reports for a process that aborted, since the guest's kernel aborted
// the guest. It is not 0, so a crashed guest never reads as success (a
// pod's phase is Failed), and it is the status of a process dying
// abnormally rather than an exit code the app chose.
const PanicStatus = 128 + int(syscall.SIGABRT)

// maxConsoleLine bounds what the tap keeps of a line without a newline;
// it keeps the line's end, where a kernel record stands.
const maxConsoleLine = 4096

// Write scans p for the kernel's lines; it never fails, so it cannot slow
// or break the copy it sits on.
func (t *Tap) Write(p []byte) (int, error) {
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

// scan looks at one console line. The kernel's record may follow text the
// app left without a newline on the same line (the kernel does not start
// a line of its own for it), so the line's last record prefix counts,
// and the message runs from there to the line's end.
func (t *Tap) scan(line []byte) {
	line = bytes.TrimRight(line, "\r")
	prefixes := kernelRecord.FindAllIndex(line, -1)
	if prefixes == nil {
		return
	}
	msg := line[prefixes[len(prefixes)-1][1]:]
	if m := initExit.FindSubmatch(msg); m != nil {
		status, err := strconv.ParseUint(string(m[1]), 16, 32)
		if err == nil {
			t.code, t.found = waitStatusCode(uint32(status)), true
			return
		}
	}
	if bytes.HasPrefix(msg, []byte(kernelPanic)) {
		t.code, t.found = PanicStatus, true
		return
	}
	for _, end := range cleanEnds {
		if bytes.HasPrefix(msg, []byte(end)) {
			t.code, t.found = 0, false
			return
		}
	}
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
func (t *Tap) Close() error {
	t.once.Do(func() {
		t.mu.Lock()
		t.scan(t.partial)
		t.mu.Unlock()
		close(t.done)
	})
	return nil
}

// GuestExit waits up to timeout for the console to end and returns the
// status the guest's kernel reported at its end, if it reported one: its
// init's, or PanicStatus for any other panic.
func (t *Tap) GuestExit(timeout time.Duration) (int, bool) {
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

// ExitStatus is the container's status for a monitor's status: a clean
// exit (0) becomes the guest's own status when the guest reported one on
// its console; a monitor killed or failing keeps its status.
func (t *Tap) ExitStatus(monitorStatus int) int {
	if monitorStatus != 0 {
		return monitorStatus
	}
	if code, ok := t.GuestExit(guestExitWait); ok {
		return code
	}
	return monitorStatus
}
