package monitors

import (
	"bufio"
	"errors"
	"fmt"
)

// errReplyTooLong is a monitor's reply line longer than its protocol
// needs. A monitor is as trusted as the guest it runs (a device-emulation
// escape owns it), so what it sends must never grow the shim's heap past
// a bound: one endless line would otherwise be read whole, up to the
// socket's deadline.
var errReplyTooLong = errors.New("reply line too long")

// readLine reads one line ending in '\n' from r, returning it with its
// newline, or errReplyTooLong once more than limit bytes arrive without
// one: at most limit plus r's buffer is ever read or held.
func readLine(r *bufio.Reader, limit int) ([]byte, error) {
	var line []byte
	for {
		chunk, err := r.ReadSlice('\n')
		if len(line)+len(chunk) > limit {
			return nil, fmt.Errorf("%w: more than %d bytes without a newline", errReplyTooLong, limit)
		}
		line = append(line, chunk...)
		switch {
		case err == nil:
			return line, nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		default:
			return line, err
		}
	}
}
