package shim

import (
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/pkg/sys/reaper"
	"golang.org/x/sys/unix"

	urunc "github.com/urunc-dev/containerd-shim-urunc-v2/runtime"
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
		config func(dir string) stdioConfig
		stream func(s *stdio) *os.File
		fifo   string
	}{
		{"stderr alone", func(d string) stdioConfig { return stdioConfig{Stderr: filepath.Join(d, "err")} },
			func(s *stdio) *os.File { return s.monitor.Stderr }, "err"},
		{"fifo:// URI", func(d string) stdioConfig { return stdioConfig{Stdout: "fifo://" + filepath.Join(d, "out")} },
			func(s *stdio) *os.File { return s.monitor.Stdout }, "out"},
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
			s, err := openStdio(ctx, "c", "ns", tc.config(dir))
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
			s.closeMonitorEnds()
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
	urunc.ReapChildren()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := openStdio(ctx, "c", "ns", stdioConfig{Stdout: "binary://" + logger})
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
	s.closeMonitorEnds()
}
