package monitors

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"time"
)

// ErrNoPowerdown is returned by monitors that cannot ask their guest to
// power down; the caller falls back to a kill after the grace period.
var ErrNoPowerdown = errors.New("monitor cannot ask the guest to power down")

// qmpCommand connects to a QMP socket, negotiates capabilities and runs one
// command, returning QMP's error if the command fails.
func qmpCommand(ctx context.Context, socket, command string) error {
	conn, err := dialControl(ctx, socket, 5*time.Second)
	if err != nil {
		return fmt.Errorf("qmp: connect %s: %w", socket, err)
	}
	defer conn.Close()
	r := bufio.NewReader(conn)
	// The greeting, then one reply per command; asynchronous events
	// ({"event": ...}) may come in between and are skipped.
	if _, err := r.ReadBytes('\n'); err != nil {
		return fmt.Errorf("qmp: read greeting: %w", err)
	}
	for _, cmd := range []string{"qmp_capabilities", command} {
		if _, err := fmt.Fprintf(conn, `{"execute":%q}`+"\n", cmd); err != nil {
			return fmt.Errorf("qmp: send %s: %w", cmd, err)
		}
		for {
			line, err := r.ReadBytes('\n')
			if err != nil {
				return fmt.Errorf("qmp: %s: %w", cmd, err)
			}
			var reply struct {
				Event  string          `json:"event"`
				Return json.RawMessage `json:"return"`
				Error  *struct {
					Desc string `json:"desc"`
				} `json:"error"`
			}
			if err := json.Unmarshal(line, &reply); err != nil {
				return fmt.Errorf("qmp: %s: bad reply %q: %w", cmd, line, err)
			}
			if reply.Event != "" {
				continue
			}
			if reply.Error != nil {
				return fmt.Errorf("qmp: %s: %s", cmd, reply.Error.Desc)
			}
			break
		}
	}
	return nil
}

// dialControl connects to a monitor's control socket (QMP, or the HTTP API
// of firecracker and cloud-hypervisor) for one exchange, bounded by ctx's
// deadline or, without one, by fallback: a monitor that stops answering
// must not hang a kill.
func dialControl(ctx context.Context, socket string, fallback time.Duration) (net.Conn, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", socket)
	if err != nil {
		return nil, err
	}
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(fallback)
	}
	_ = conn.SetDeadline(deadline)
	return conn, nil
}
