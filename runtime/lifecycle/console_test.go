package lifecycle

import (
	"testing"
	"time"
)

// The kernel's line about init's end gives the guest's exit code, however
// the console arrives in pieces; a guest that says nothing reports none.
func TestConsoleTap(t *testing.T) {
	tests := []struct {
		name   string
		chunks []string
		code   int
		found  bool
	}{
		{"exit 3", []string{"boot\n[ 1.2] Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000300\n"}, 3, true},
		{"split across writes", []string{"Kernel panic - not syncing: Attempted to kil", "l init! exitcode=0x0000", "2a00\nreboot\n"}, 42, true},
		{"killed by a signal", []string{"Attempted to kill init! exitcode=0x00000009\n"}, 137, true},
		{"exit 0", []string{"Attempted to kill init! exitcode=0x00000000"}, 0, true},
		{"nothing said", []string{"reboot: Power down\n"}, 0, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tap := NewConsoleTap()
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
	tap := NewConsoleTap()
	_, _ = tap.Write([]byte("Attempted to kill init! exitcode=0x00000300\n"))
	tap.Close()
	adjust := ExitFromConsole(tap)
	if e := adjust(ExitStatus{Status: 137}); e.Status != 137 {
		t.Fatalf("killed monitor: %d", e.Status)
	}
	if e := adjust(ExitStatus{Status: 0}); e.Status != 3 {
		t.Fatalf("clean monitor exit: %d, want the guest's 3", e.Status)
	}
}
