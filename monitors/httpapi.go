package monitors

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"strings"
	"time"
)

// apiPut sends one PUT of the HTTP API that firecracker and
// cloud-hypervisor serve on a unix socket, and fails unless it succeeds
// (both answer 204 No Content). One request on its own connection needs
// no more of HTTP/1.1 than this; net/http would link TLS, HTTP/2 and
// proxies into the shim, which every shim process would then carry.
func apiPut(ctx context.Context, socket, path string, body []byte) error {
	conn, err := dialControl(ctx, socket, 10*time.Second)
	if err != nil {
		return fmt.Errorf("api %s: %w", socket, err)
	}
	defer conn.Close()
	var req bytes.Buffer
	fmt.Fprintf(&req, "PUT %s HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: %d\r\n", path, len(body))
	if body != nil {
		req.WriteString("Content-Type: application/json\r\n")
	}
	req.WriteString("\r\n")
	req.Write(body)
	if _, err := conn.Write(req.Bytes()); err != nil {
		return fmt.Errorf("api %s: PUT %s: %w", socket, path, err)
	}
	if err := readAPIResponse(conn); err != nil {
		return fmt.Errorf("api %s: PUT %s: %w", socket, path, err)
	}
	return nil
}

// Bounds on an API response: the status line and each header line, the
// header section as a whole, and the error text kept from the body. Both
// monitors answer in a few hundred bytes; a monitor is as trusted as its
// guest, so nothing it sends may grow the shim's heap without bound.
const (
	maxAPILine    = 8 << 10
	maxAPIHeaders = 64 << 10
	maxAPIError   = 512
)

// readAPIResponse reads one HTTP/1.x response and fails unless its status
// is 2xx; the error then carries the status and the start of the body.
func readAPIResponse(conn io.Reader) error {
	// Everything read from the monitor, the body's start included, passes
	// through one limit, so no answer can make this read more.
	r := bufio.NewReaderSize(io.LimitReader(conn, maxAPIHeaders+maxAPIError), 4096)
	status, err := readLine(r, maxAPILine)
	if err != nil {
		return fmt.Errorf("no response: %w", err)
	}
	// "HTTP/1.1 204 No Content"
	proto, code, ok := strings.Cut(strings.TrimSpace(string(status)), " ")
	if !ok || !strings.HasPrefix(proto, "HTTP/1.") || len(code) < 3 {
		return fmt.Errorf("malformed status line %.200q", strings.TrimSpace(string(status)))
	}
	if code[0] == '2' {
		return nil
	}
	// The error's text is the body, after the headers.
	for read := len(status); ; {
		line, err := readLine(r, maxAPILine)
		if err != nil {
			return fmt.Errorf("%.200s (headers unreadable: %w)", code, err)
		}
		if read += len(line); read > maxAPIHeaders {
			return fmt.Errorf("%.200s (headers longer than %d bytes)", code, maxAPIHeaders)
		}
		if strings.TrimSpace(string(line)) == "" {
			break
		}
	}
	msg, _ := io.ReadAll(io.LimitReader(r, maxAPIError))
	return fmt.Errorf("%.200s: %s", code, bytes.TrimSpace(msg))
}
