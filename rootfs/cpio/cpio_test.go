package cpio

import (
	"bytes"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// An archive of one file is its header, name and data, each padded to 4
// bytes, then the trailer entry, byte for byte as the kernel reads newc.
func TestWriterNewcLayout(t *testing.T) {
	var buf bytes.Buffer
	w := NewWriter(&buf)
	if err := w.WriteHeader("etc", unix.S_IFDIR|0o755, 0, 0, 0); err != nil {
		t.Fatal(err)
	}
	if err := w.WriteHeader("etc/a", unix.S_IFREG|0o644, 1, 2, 2); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write([]byte("hi")); err != nil {
		t.Fatal(err)
	}
	if err := w.Pad(); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	want := "070701" + "00000001" + "000041ED" + "00000000" + "00000000" + "00000002" + "00000000" + "00000000" +
		"00000000" + "00000000" + "00000000" + "00000000" + "00000004" + "00000000" + "etc\x00\x00\x00" +
		"070701" + "00000002" + "000081A4" + "00000001" + "00000002" + "00000001" + "00000000" + "00000002" +
		"00000000" + "00000000" + "00000000" + "00000000" + "00000006" + "00000000" + "etc/a\x00" + "hi\x00\x00" +
		"070701" + "00000003" + "00000000" + "00000000" + "00000000" + "00000001" + "00000000" + "00000000" +
		"00000000" + "00000000" + "00000000" + "00000000" + "0000000B" + "00000000" + "TRAILER!!!\x00\x00\x00\x00"
	if got := buf.String(); got != want {
		t.Fatalf("archive:\n%q\nwant:\n%q", got, want)
	}
	if buf.Len()%4 != 0 {
		t.Fatalf("archive of %d bytes is not padded to 4", buf.Len())
	}
}

func TestWriterRefusesBadEntries(t *testing.T) {
	w := NewWriter(&bytes.Buffer{})
	if err := w.WriteHeader("a\x00b", unix.S_IFREG|0o644, 0, 0, 0); err == nil || !strings.Contains(err.Error(), "NUL") {
		t.Fatalf("name with a NUL: err = %v", err)
	}
	if err := w.WriteHeader("big", unix.S_IFREG|0o644, 0, 0, 1<<32); err == nil || !strings.Contains(err.Error(), "more than a newc archive entry holds") {
		t.Fatalf("entry over 4 GiB: err = %v", err)
	}
}
