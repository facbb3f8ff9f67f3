package monitors

import (
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// maxHybridVsockReply bounds the monitor's answer to a CONNECT: "OK ",
// the host end's port (at most 10 digits) and the newline need 14.
const maxHybridVsockReply = 32

// ErrVsockNoListener is a CONNECT the monitor ended without an answer:
// firecracker and cloud-hypervisor close the connection when nothing in
// the guest listens on the port (yet, for a guest still booting).
var ErrVsockNoListener = errors.New("the monitor closed the connection: nothing in the guest listens on the port")

// HybridVsockConnect turns conn, a new connection to the host socket of a
// hybrid vsock device (firecracker's uds_path, cloud-hypervisor's
// --vsock socket=), into a stream to the guest's vsock port: it sends
// "CONNECT <port>\n" and reads the monitor's "OK <host port>\n", sent
// once the guest has accepted. It waits at most timeout for the answer
// and reads at most maxHybridVsockReply bytes of it, one byte at a time,
// so nothing the guest sends after it is taken from the stream. conn's
// deadline is cleared on success.
func HybridVsockConnect(conn net.Conn, port uint32, timeout time.Duration) error {
	if err := conn.SetDeadline(time.Now().Add(timeout)); err != nil {
		return fmt.Errorf("hybrid vsock: %w", err)
	}
	if _, err := io.WriteString(conn, "CONNECT "+strconv.FormatUint(uint64(port), 10)+"\n"); err != nil {
		return fmt.Errorf("hybrid vsock: CONNECT %d: %w", port, err)
	}
	var reply []byte
	b := make([]byte, 1)
	for {
		n, err := conn.Read(b)
		if n == 1 {
			if b[0] == '\n' {
				break
			}
			if reply = append(reply, b[0]); len(reply) >= maxHybridVsockReply {
				return fmt.Errorf("hybrid vsock: CONNECT %d: %w: %q... is more than %d bytes without a newline", port, errReplyTooLong, reply, maxHybridVsockReply)
			}
			continue
		}
		if err == nil {
			continue
		}
		if len(reply) == 0 && (errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || errors.Is(err, syscall.ECONNRESET)) {
			return fmt.Errorf("hybrid vsock: CONNECT %d: %w", port, ErrVsockNoListener)
		}
		return fmt.Errorf("hybrid vsock: CONNECT %d: answer %q: %w", port, reply, err)
	}
	host, ok := strings.CutPrefix(string(reply), "OK ")
	if _, err := strconv.ParseUint(host, 10, 32); !ok || err != nil {
		return fmt.Errorf("hybrid vsock: CONNECT %d: the monitor answered %q, not OK and a port", port, reply)
	}
	if err := conn.SetDeadline(time.Time{}); err != nil {
		return fmt.Errorf("hybrid vsock: %w", err)
	}
	return nil
}
