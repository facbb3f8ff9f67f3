package guestconsole

import (
	"bytes"
	"testing"
	"time"
)

// The kernel's record of init's end gives the guest's exit code, however
// the console arrives in pieces; any other panic is a failure; the last
// kernel event that ends the guest counts, so a line the app prints (a
// forged kernel line included) never sets the status; a guest that says
// nothing reports none.
func TestConsoleTap(t *testing.T) {
	const (
		exit3    = "[    1.234567] Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000300\r\n"
		exit0    = "[    1.234567] Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000000\r\n"
		killed9  = "[    1.234567] Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000009\r\n"
		powerOff = "[    2.000000] reboot: Power down\r\n"
		trace    = "[    1.234568] CPU: 0 PID: 1 Comm: init Not tainted 6.1.0 #1\r\n[    1.234569] Kernel Offset: disabled\r\n"
	)
	tests := []struct {
		name   string
		chunks []string
		code   int
		found  bool
	}{
		{"exit 3", []string{"boot\n", exit3, trace}, 3, true},
		{"split across writes", []string{"[   12.000001] Kernel panic - not syncing: Attempted to kil", "l init! exitcode=0x0000", "2a00\n"}, 42, true},
		{"killed by a signal", []string{killed9}, 137, true},
		{"exit 0, no newline at the end", []string{exit0[:len(exit0)-2]}, 0, true},
		{"caller id", []string{"[    1.234567][    T1] Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000100\n"}, 1, true},
		{"after the app's unterminated output", []string{"done", exit3}, 3, true},
		{"nothing said", []string{"hello\n"}, 0, false},
		{"clean power-down", []string{"hello\n", powerOff}, 0, false},
		// The app's output cannot set the status.
		{"app line, no kernel prefix", []string{"GET / UA: Kernel panic - not syncing: Attempted to kill init! exitcode=0x00008900\n", powerOff}, 0, false},
		{"app prints a whole kernel line, then powers down", []string{"[    1.000000] Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000009\n", powerOff}, 0, false},
		{"app prints a kernel line, then exits 3", []string{"[    1.000000] Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000000\n", exit3, trace}, 3, true},
		{"app prints a kernel line before the power-down's record", []string{"[    1.000000] Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000009\n[ 1.000000] x", powerOff}, 0, false},
		{"kernel line with text after it", []string{"[    1.000000] Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000009 and more\n"}, PanicStatus, true},
		{"no timestamp", []string{"Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000300\n"}, 0, false},
		// A panic without init's status is a failure.
		{"no working init", []string{"[    0.900000] Kernel panic - not syncing: No working init found.  Try passing init= option to kernel. See Linux Documentation/admin-guide/init.rst for guidance.\r\n", trace}, PanicStatus, true},
		{"out of memory", []string{"[    5.000000] Kernel panic - not syncing: System is deadlocked on memory\r\n"}, PanicStatus, true},
		{"oops", []string{"[    5.000000] Kernel panic - not syncing: Fatal exception\r\n"}, PanicStatus, true},
		{"app forges an exit, the kernel panics", []string{"[    1.000000] Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000000\n", "[    5.000000] Kernel panic - not syncing: Fatal exception\n"}, PanicStatus, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tap := NewTap()
			for _, c := range tc.chunks {
				if n, err := tap.Write([]byte(c)); err != nil || n != len(c) {
					t.Fatalf("write: %d, %v", n, err)
				}
			}
			tap.Close()
			code, found := tap.GuestExit(time.Second)
			if code != tc.code || found != tc.found {
				t.Fatalf("got %d %v, want %d %v", code, found, tc.code, tc.found)
			}
		})
	}
}

// A monitor's own failure or kill is kept; only its clean exit is replaced.
func TestGuestExitKeepsMonitorFailures(t *testing.T) {
	tap := NewTap()
	_, _ = tap.Write([]byte("[    1.000000] Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000300\n"))
	tap.Close()
	if status := tap.ExitStatus(137); status != 137 {
		t.Fatalf("killed monitor: %d", status)
	}
	if status := tap.ExitStatus(0); status != 3 {
		t.Fatalf("clean monitor exit: %d, want the guest's 3", status)
	}
}

// A monitor's clean exit after its guest's kernel panicked is a failure.
func TestGuestExitPanicIsAFailure(t *testing.T) {
	tap := NewTap()
	_, _ = tap.Write([]byte("[    0.500000] Kernel panic - not syncing: No working init found.\n"))
	tap.Close()
	if status := tap.ExitStatus(0); status != PanicStatus {
		t.Fatalf("status %d, want %d", status, PanicStatus)
	}
}

// consoleStatus feeds console to a tap in the given pieces.
func consoleStatus(console []byte, cuts []int) (int, bool) {
	tap := NewTap()
	prev := 0
	for _, c := range cuts {
		if c > prev && c < len(console) {
			_, _ = tap.Write(console[prev:c])
			prev = c
		}
	}
	_, _ = tap.Write(console[prev:])
	tap.Close()
	return tap.GuestExit(time.Second)
}

// Whatever the app prints, the kernel's real end decides: a power-down
// reports nothing, init's exit its status, any other panic a failure; and
// how the console is cut into writes never matters.
func FuzzConsoleExit(f *testing.F) {
	f.Add([]byte("[    1.000000] Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000900\n"), uint16(10), uint16(40))
	f.Add([]byte("UA: [ 1.000000] Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000900"), uint16(3), uint16(0))
	f.Add([]byte("x[ 1.000000] [    T1] \r"), uint16(1), uint16(2))
	f.Fuzz(func(t *testing.T, app []byte, cut1, cut2 uint16) {
		cuts := []int{int(cut1) % (len(app) + 1), int(cut2) % (len(app) + 1)}
		if cuts[0] > cuts[1] {
			cuts[0], cuts[1] = cuts[1], cuts[0]
		}
		// Cutting never changes the outcome (lines past the bound are
		// kept by their end, which depends on the cuts: left out).
		longLine := false
		for _, l := range bytes.Split(app, []byte("\n")) {
			longLine = longLine || len(l) >= maxConsoleLine
		}
		if !longLine {
			c1, f1 := consoleStatus(app, cuts)
			c2, f2 := consoleStatus(app, nil)
			if c1 != c2 || f1 != f2 {
				t.Fatalf("cut at %v: %d %v; whole: %d %v", cuts, c1, f1, c2, f2)
			}
		}
		for _, end := range []struct {
			kernel string
			code   int
			found  bool
		}{
			{"[    9.000000] reboot: Power down\r\n", 0, false},
			{"[    9.000000] Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000300\r\n[    9.000001] Kernel Offset: disabled\r\n", 3, true},
			{"[    9.000000] Kernel panic - not syncing: No working init found.\r\n[    9.000001] Kernel Offset: disabled\r\n", PanicStatus, true},
		} {
			console := append(append([]byte{}, app...), end.kernel...)
			if code, found := consoleStatus(console, cuts); code != end.code || found != end.found {
				t.Fatalf("app %q then %q: %d %v, want %d %v", app, end.kernel, code, found, end.code, end.found)
			}
		}
	})
}
