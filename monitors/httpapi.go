package monitors

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
)

// apiPut sends one PUT of the HTTP API that firecracker and
// cloud-hypervisor serve on a unix socket, and fails unless it succeeds
// (both answer 204 No Content).
func apiPut(ctx context.Context, socket, path string, body []byte) error {
	client := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		},
		DisableKeepAlives: true,
	}}
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, "http://localhost"+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("api %s: %w", socket, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("api %s: PUT %s: %s: %s", socket, path, resp.Status, bytes.TrimSpace(msg))
	}
	return nil
}
