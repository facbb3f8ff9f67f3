package shim

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"
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
