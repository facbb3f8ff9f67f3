package monitors

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
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
	return qmpExchange(conn, command)
}

// maxQMPReply bounds one line of QMP: the greeting, a reply or an event.
// The replies read here (capabilities, system_powerdown) are a few dozen
// bytes, and qemu's greeting and events a few hundred; 64 KiB leaves room
// for any qemu yet keeps a hostile monitor from growing the shim's heap.
const maxQMPReply = 64 << 10

// qmpExchange negotiates capabilities on an open QMP connection and runs
// one command, reading every line within maxQMPReply.
func qmpExchange(conn io.ReadWriter, command string) error {
	r := bufio.NewReaderSize(conn, 4096)
	// The greeting, then one reply per command; asynchronous events
	// ({"event": ...}) may come in between and are skipped.
	if _, err := readLine(r, maxQMPReply); err != nil {
		return fmt.Errorf("qmp: read greeting: %w", err)
	}
	for _, cmd := range []string{"qmp_capabilities", command} {
		if _, err := fmt.Fprintf(conn, `{"execute":%q}`+"\n", cmd); err != nil {
			return fmt.Errorf("qmp: send %s: %w", cmd, err)
		}
		// Events are bounded in number too: a monitor that answers with
		// events forever must still end the exchange before its deadline.
		for events := 0; ; events++ {
			if events > maxQMPEvents {
				return fmt.Errorf("qmp: %s: more than %d events before the reply", cmd, maxQMPEvents)
			}
			line, err := readLine(r, maxQMPReply)
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
				return fmt.Errorf("qmp: %s: bad reply %.200q: %w", cmd, line, err)
			}
			if reply.Event != "" {
				continue
			}
			if reply.Error != nil {
				return fmt.Errorf("qmp: %s: %.200s", cmd, reply.Error.Desc)
			}
			break
		}
	}
	return nil
}

// maxQMPEvents bounds the events skipped while waiting for one reply; a
// guest powering down causes a handful.
const maxQMPEvents = 1024

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
