package monitors

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
)

// endless is a monitor that answers with one line that never ends: it
// counts what was read of it.
type endless struct {
	prefix string
	read   int
	limit  int // EOF after this much, so a broken reader ends the test
}

func (e *endless) Read(p []byte) (int, error) {
	if e.read >= e.limit {
		return 0, io.EOF
	}
	n := 0
	for n < len(p) && e.read < e.limit {
		if e.read < len(e.prefix) {
			p[n] = e.prefix[e.read]
		} else {
			p[n] = 'a'
		}
		n++
		e.read++
	}
	return n, nil
}

func (e *endless) Write(p []byte) (int, error) { return len(p), nil }

// counted is a monitor's scripted answer that counts what was read of it.
type counted struct {
	r    io.Reader
	read int
}

func (c *counted) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.read += n
	return n, err
}

func (c *counted) Write(p []byte) (int, error) { return len(p), nil }

// A monitor that answers one endless line gets an error once the line
// passes its bound, and the shim reads no more than that bound and one
// buffer of it, where it used to read the whole line into memory.
func TestMonitorRepliesAreBounded(t *testing.T) {
	const sent = 16 << 20
	for _, tc := range []struct {
		name   string
		prefix string
		read   func(io.ReadWriter) error
		bound  int
	}{
		{"qmp greeting", "", func(rw io.ReadWriter) error { return qmpExchange(rw, "system_powerdown") }, maxQMPReply + 4096},
		{"qmp reply", `{"QMP":{}}` + "\n", func(rw io.ReadWriter) error { return qmpExchange(rw, "system_powerdown") }, maxQMPReply + 4096 + 16},
		{"http status line", "", func(rw io.ReadWriter) error { return readAPIResponse(rw) }, maxAPILine + 4096},
		{"http header", "HTTP/1.1 400 Bad Request\r\n", func(rw io.ReadWriter) error { return readAPIResponse(rw) }, maxAPILine + 4096 + 32},
		{"http body", "HTTP/1.1 400 Bad Request\r\n\r\n", func(rw io.ReadWriter) error { return readAPIResponse(rw) }, maxAPIHeaders + maxAPIError},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := &endless{prefix: tc.prefix, limit: sent}
			err := tc.read(m)
			if err == nil {
				t.Fatal("an endless answer was accepted")
			}
			if m.read > tc.bound {
				t.Fatalf("read %d bytes of the answer (bound %d): %v", m.read, tc.bound, err)
			}
			if tc.name != "http body" && !errors.Is(err, errReplyTooLong) {
				t.Fatalf("err = %v, want a too-long reply", err)
			}
		})
	}
}

// A well-behaved qemu's exchange, events included, still succeeds.
func TestQMPExchange(t *testing.T) {
	answer := `{"QMP": {"version": {}, "capabilities": []}}` + "\n" +
		`{"return": {}}` + "\n" +
		`{"timestamp": {}, "event": "POWERDOWN"}` + "\n" + `{"return": {}}` + "\n"
	if err := qmpExchange(&counted{r: strings.NewReader(answer)}, "system_powerdown"); err != nil {
		t.Fatal(err)
	}
	bad := `{"QMP": {}}` + "\n" + `{"return": {}}` + "\n" + `{"error": {"class": "x", "desc": "no"}}` + "\n"
	if err := qmpExchange(&counted{r: strings.NewReader(bad)}, "system_powerdown"); err == nil || !strings.Contains(err.Error(), "no") {
		t.Fatalf("err = %v", err)
	}
}

// Whatever a monitor answers on QMP, the exchange ends without panicking,
// reading no more than every line's bound allows.
func FuzzQMPReplies(f *testing.F) {
	f.Add([]byte(`{"QMP": {}}` + "\n" + `{"return": {}}` + "\n" + `{"return": {}}` + "\n"))
	f.Add([]byte(`{"QMP": {}}` + "\n" + `{"event": "X"}` + "\n" + `{"return": {}}` + "\n" + `{"error": {"desc": "d"}}` + "\n"))
	f.Add([]byte("{\n\n\n"))
	f.Add(bytes.Repeat([]byte("a"), 70000))
	f.Fuzz(func(t *testing.T, answer []byte) {
		c := &counted{r: bytes.NewReader(answer)}
		err := qmpExchange(c, "system_powerdown")
		if err == nil && bytes.Count(answer, []byte("\n")) < 3 {
			t.Fatalf("success on %d lines: %q", bytes.Count(answer, []byte("\n")), answer)
		}
		// Lines read: the greeting, and up to maxQMPEvents+1 per command.
		if limit := (1 + 2*(maxQMPEvents+1)) * (maxQMPReply + 4096); c.read > limit {
			t.Fatalf("read %d bytes", c.read)
		}
	})
}

// Whatever a monitor answers on its HTTP API, the response is read
// without panicking, within the bounds, and accepted only with a 2xx
// status.
func FuzzAPIResponse(f *testing.F) {
	f.Add([]byte("HTTP/1.1 204 No Content\r\n\r\n"))
	f.Add([]byte("HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\n\r\n{\"fault_message\":\"x\"}"))
	f.Add([]byte("HTTP/1.0 2"))
	f.Add([]byte("garbage\n"))
	f.Fuzz(func(t *testing.T, answer []byte) {
		c := &counted{r: bytes.NewReader(answer)}
		err := readAPIResponse(c)
		if c.read > maxAPIHeaders+maxAPIError {
			t.Fatalf("read %d bytes", c.read)
		}
		if err == nil && !bytes.HasPrefix(answer, []byte("HTTP/1.")) {
			t.Fatalf("accepted %q", answer)
		}
		if err != nil && len(err.Error()) > 2*(maxAPIError+200)+200 {
			t.Fatalf("error of %d bytes", len(err.Error()))
		}
	})
}
