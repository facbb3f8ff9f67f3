package runtime

import (
	"golang.org/x/sys/unix"
)

// readEventFD turns a cgroup v1 OOM eventfd into a channel. The fd is
// closed by the reading goroutine itself, once done is closed and the
// cgroup's removal has woken the read: closing it from elsewhere while a
// read is blocked could let the number be reused under that read.
func readEventFD(fd int, done <-chan struct{}) <-chan struct{} {
	out := make(chan struct{}, 1)
	go func() {
		defer unix.Close(fd)
		buf := make([]byte, 8)
		for {
			_, err := unix.Read(fd, buf)
			select {
			case <-done:
				return
			default:
			}
			if err != nil {
				return
			}
			select {
			case out <- struct{}{}:
			default:
			}
		}
	}()
	return out
}
