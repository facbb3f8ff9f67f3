package cgroup

import (
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// An eventfd write is one OOM notice; closing done ends the reader and
// closes the fd, even while its read waits.
func TestReadEventFD(t *testing.T) {
	fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	events, err := readEventFD(fd, done)
	if err != nil {
		t.Fatal(err)
	}
	one := []byte{1, 0, 0, 0, 0, 0, 0, 0}
	if _, err := unix.Write(fd, one); err != nil {
		t.Fatal(err)
	}
	select {
	case <-events:
	case <-time.After(5 * time.Second):
		t.Fatal("no event for an eventfd write")
	}
	close(done)
	deadline := time.Now().Add(5 * time.Second)
	for {
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err == unix.EBADF {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the eventfd is still open after done")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// An fd that cannot be read through the poller is an error, not a
// channel: a closed one would read as an endless run of OOM kills.
func TestReadEventFDRefusesABadFD(t *testing.T) {
	if events, err := readEventFD(-1, make(chan struct{})); err == nil || events != nil {
		t.Fatalf("readEventFD(-1) = %v, %v; want no channel and an error", events, err)
	}
}
