package stdio

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/pkg/sys/reaper"
	"golang.org/x/sys/unix"

	"github.com/urunc-dev/containerd-shim-urunc-v2/runtime/lifecycle"
)

// readFifo opens the FIFO for reading the way containerd's client does
// and returns what arrives.
func readFifo(t *testing.T, path string) <-chan string {
	t.Helper()
	out := make(chan string, 1)
	go func() {
		f, err := os.OpenFile(path, os.O_RDONLY, 0)
		if err != nil {
			out <- "open: " + err.Error()
			return
		}
		defer f.Close()
		data, _ := io.ReadAll(f)
		out <- string(data)
	}()
	return out
}

// Stdio as containerd may name it: stderr alone (WithStreams(nil, nil,
// stderr)) failed Create, and fifo:// URIs were taken as raw paths.
func TestStdioFifos(t *testing.T) {
	for _, tc := range []struct {
		name   string
		config func(dir string) Config
		stream func(s *Streams) *os.File
		fifo   string
	}{
		{"stderr alone", func(d string) Config { return Config{Stderr: filepath.Join(d, "err")} },
			func(s *Streams) *os.File { return s.monitor.Stderr }, "err"},
		{"fifo:// URI", func(d string) Config { return Config{Stdout: "fifo://" + filepath.Join(d, "out")} },
			func(s *Streams) *os.File { return s.monitor.Stdout }, "out"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			for _, f := range []string{"out", "err"} {
				if err := unix.Mkfifo(filepath.Join(dir, f), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			got := readFifo(t, filepath.Join(dir, tc.fifo))
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			s, err := Open(ctx, "c", "ns", tc.config(dir))
			if err != nil {
				t.Fatal(err)
			}
			w := tc.stream(s)
			if w == nil {
				t.Fatal("the monitor has no such stream")
			}
			if _, err := w.WriteString("hello"); err != nil {
				t.Fatal(err)
			}
			s.CloseMonitorEnds()
			s.Close()
			if out := <-got; out != "hello" {
				t.Fatalf("FIFO got %q", out)
			}
		})
	}
}

// A binary:// logger must not hold a reaper subscription that nobody
// reads until Close: the reaper then waits a second on it for each exit
// after its 32nd, and every exec or hook of the shim stalls. Reaping 64
// children takes well under a second; with the stall it takes over 32 s.
// The bound is a hang detector far above any real run, not a timing.
func TestLoggerDoesNotStallReaper(t *testing.T) {
	dir := t.TempDir()
	logger := filepath.Join(dir, "logger")
	if err := os.WriteFile(logger, []byte("#!/bin/sh\nexec 5>&-\nexec cat <&3 >/dev/null\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	lifecycle.ReapChildren()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := Open(ctx, "c", "ns", Config{Stdout: "binary://" + logger})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	start := time.Now()
	for i := 0; i < 64; i++ {
		cmd := exec.Command("/bin/true")
		ec, err := reaper.Default.Start(cmd)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := reaper.Default.Wait(cmd, ec); err != nil {
			t.Fatal(err)
		}
	}
	if d := time.Since(start); d > 15*time.Second {
		t.Fatalf("reaping 64 children beside a logger took %s: the reaper waits on a subscription nobody reads", d)
	}
	s.CloseMonitorEnds()
}

// The stdin FIFO as containerd leaves it: a detached container's has no
// writer ever, an attached one's gets one later. Neither may park an OS
// thread (one per container, for its life, with a blocking open), and EOF
// is the writer's, not the absence of one.
func TestStdinWithoutAWriter(t *testing.T) {
	dir := t.TempDir()
	const n = 20
	threads := func() int {
		data, err := os.ReadFile("/proc/self/status")
		if err != nil {
			t.Fatal(err)
		}
		var count int
		for _, line := range strings.Split(string(data), "\n") {
			if v, ok := strings.CutPrefix(line, "Threads:"); ok {
				count, _ = strconv.Atoi(strings.TrimSpace(v))
			}
		}
		return count
	}
	before := threads()
	var all []*Streams
	for i := range n {
		path := filepath.Join(dir, fmt.Sprintf("in%d", i))
		if err := unix.Mkfifo(path, 0o600); err != nil {
			t.Fatal(err)
		}
		s, err := Open(context.Background(), "c", "ns", Config{Stdin: path})
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, s)
	}
	t.Cleanup(func() {
		for _, s := range all {
			s.CloseMonitorEnds()
			s.Close()
		}
	})
	time.Sleep(200 * time.Millisecond)
	if grown := threads() - before; grown >= n/2 {
		t.Fatalf("%d stdin FIFOs without a writer took %d more OS threads", n, grown)
	}

	// No writer yet: the guest's stdin stays open.
	guestIn := all[0].monitor.Stdin
	if err := guestIn.SetReadDeadline(time.Now().Add(200 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	if _, err := guestIn.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("guest stdin before any writer: %v, want it still open and empty", err)
	}
	// A writer comes, writes and goes: the guest reads it, then EOF.
	w, err := os.OpenFile(filepath.Join(dir, "in0"), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.WriteString("hello"); err != nil {
		t.Fatal(err)
	}
	w.Close()
	if err := guestIn.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(guestIn)
	if err != nil || string(got) != "hello" {
		t.Fatalf("guest stdin = %q, %v; want hello, then EOF", got, err)
	}
	// A writer that comes and goes without a word is EOF too.
	w, err = os.OpenFile(filepath.Join(dir, "in1"), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	w.Close()
	guestIn = all[1].monitor.Stdin
	if err := guestIn.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	if got, err := io.ReadAll(guestIn); err != nil || len(got) != 0 {
		t.Fatalf("guest stdin = %q, %v; want EOF", got, err)
	}
}

// The guest's console reaches the shim whatever the log URI, so that its
// exit status is read: with file:// and binary:// the console goes to the
// log through the shim's tap, where the monitor used to write the log
// itself and the kernel's line was never read.
func TestConsoleReadWithLogURIs(t *testing.T) {
	dir := t.TempDir()
	logger := filepath.Join(dir, "logger")
	loggerOut := filepath.Join(dir, "logger.out")
	if err := os.WriteFile(logger, []byte("#!/bin/sh\nexec 5>&-\nexec cat <&3 >"+loggerOut+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	const kernelLine = "[    1.000000] Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000300\r\n"
	for _, tc := range []struct {
		name, uri, log string
	}{
		{"file", "file://" + filepath.Join(dir, "file.log"), filepath.Join(dir, "file.log")},
		{"binary", "binary://" + logger, loggerOut},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			s, err := Open(ctx, "c", "ns", Config{Stdout: tc.uri, Stderr: tc.uri})
			if err != nil {
				t.Fatal(err)
			}
			if s.guestConsole == nil {
				s.CloseMonitorEnds()
				s.Close()
				t.Fatal("no console tap: the guest's exit status is never read")
			}
			if _, err := s.monitor.Stdout.WriteString("hello\r\n" + kernelLine); err != nil {
				t.Fatal(err)
			}
			s.CloseMonitorEnds()
			s.Close()
			if code, found := s.guestConsole.GuestExit(5 * time.Second); code != 3 || !found {
				t.Fatalf("guest exit %d %v, want 3", code, found)
			}
			if data, _ := os.ReadFile(tc.log); string(data) != "hello\r\n"+kernelLine {
				t.Fatalf("log holds %q", data)
			}
		})
	}
}
