package monitors

import (
	"bufio"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// fakeVMM listens on a unix socket as firecracker's and cloud-hypervisor's
// vsock device does and answers each connection's first line with
// answer; the line it got comes back on the returned channel.
func fakeVMM(t *testing.T, answer func(conn net.Conn)) (string, <-chan string) {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "v.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	got := make(chan string, 1)
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		defer conn.Close()
		line, _ := bufio.NewReader(conn).ReadString('\n')
		got <- line
		answer(conn)
	}()
	return sock, got
}

// The CONNECT handshake of hybrid vsock against a monitor that answers
// OK, an error, garbage, an endless line, nothing, or closes the
// connection (no listener in the guest yet): only OK and a port is taken,
// and nothing is waited for or read past its bound.
func TestHybridVsockConnect(t *testing.T) {
	const timeout = 200 * time.Millisecond
	write := func(s string) func(net.Conn) { return func(c net.Conn) { io.WriteString(c, s) } }
	for name, tc := range map[string]struct {
		answer  func(net.Conn)
		wantErr string
		wantIs  error
	}{
		"OK":                          {answer: write("OK 1073741824\n")},
		"OK, then data":               {answer: write("OK 1073741825\nguest bytes")},
		"an error":                    {answer: write("ERR no such port\n"), wantErr: `answered "ERR no such port"`},
		"OK without port":             {answer: write("OK\n"), wantErr: `answered "OK"`},
		"OK and garbage":              {answer: write("OK 12x\n"), wantErr: `answered "OK 12x"`},
		"port too large":              {answer: write("OK 4294967296\n"), wantErr: `answered "OK 4294967296"`},
		"binary garbage":              {answer: write("\x00\xff\x01\n"), wantErr: "not OK and a port"},
		"line too long":               {answer: write(strings.Repeat("O", 1<<20)), wantIs: errReplyTooLong},
		"closed at once":              {answer: func(net.Conn) {}, wantIs: ErrVsockNoListener},
		"half an answer, then closed": {answer: write("OK 12"), wantErr: `answer "OK 12": EOF`},
		"nothing": {answer: func(c net.Conn) {
			// Holds the connection open past the timeout.
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			io.Copy(io.Discard, c)
		}, wantIs: os.ErrDeadlineExceeded},
	} {
		t.Run(name, func(t *testing.T) {
			sock, got := fakeVMM(t, tc.answer)
			conn, err := net.Dial("unix", sock)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			start := time.Now()
			err = HybridVsockConnect(conn, 1023, timeout)
			if line := <-got; line != "CONNECT 1023\n" {
				t.Fatalf("the monitor got %q", line)
			}
			if d := time.Since(start); d > timeout+time.Second {
				t.Fatalf("the handshake took %s, past its %s bound", d, timeout)
			}
			switch {
			case tc.wantIs != nil:
				if !errors.Is(err, tc.wantIs) {
					t.Fatalf("err = %v, want %v", err, tc.wantIs)
				}
			case tc.wantErr != "":
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
			case err != nil:
				t.Fatal(err)
			}
			if err == nil && strings.Contains(name, "data") {
				// What the guest sent after the OK is still on the
				// stream, and the deadline is gone.
				buf := make([]byte, len("guest bytes"))
				if _, err := io.ReadFull(conn, buf); err != nil || string(buf) != "guest bytes" {
					t.Fatalf("after OK: %q, %v", buf, err)
				}
			}
		})
	}
}
