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
	r := bufio.NewReader(conn)
	status, err := r.ReadString('\n')
	if err != nil {
		return fmt.Errorf("api %s: PUT %s: no response: %w", socket, path, err)
	}
	// "HTTP/1.1 204 No Content"
	proto, code, ok := strings.Cut(strings.TrimSpace(status), " ")
	if !ok || !strings.HasPrefix(proto, "HTTP/1.") || len(code) < 3 {
		return fmt.Errorf("api %s: PUT %s: malformed status line %q", socket, path, strings.TrimSpace(status))
	}
	if code[0] == '2' {
		return nil
	}
	// The error's text is the body, after the headers.
	for {
		line, err := r.ReadString('\n')
		if err != nil || strings.TrimSpace(line) == "" {
			break
		}
	}
	msg, _ := io.ReadAll(io.LimitReader(r, 512))
	return fmt.Errorf("api %s: PUT %s: %s: %s", socket, path, code, bytes.TrimSpace(msg))
}
