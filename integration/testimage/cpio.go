// Package testimage builds the test guests: a Debian Linux kernel with a
// busybox initrd, packed as an OCI image layout that ctr can import.
package testimage

import (
	"fmt"
	"io"
	"sort"
)

// cpioEntry is one file of a newc archive.
type cpioEntry struct {
	mode       uint32 // including the file type bits
	data       []byte
	rdevMajor  uint32
	rdevMinor  uint32
	linkTarget string
}

const (
	modeDir     = 0o040000
	modeFile    = 0o100000
	modeSymlink = 0o120000
	modeChar    = 0o020000
)

// writeNewc writes entries as a newc ("070701") cpio archive, the format
// the kernel unpacks as an initramfs. Writing it here (instead of running
// cpio over a staging dir) lets the archive carry /dev/console without
// mknod on the host.
func writeNewc(w io.Writer, entries map[string]cpioEntry) error {
	names := make([]string, 0, len(entries))
	for n := range entries {
		names = append(names, n)
	}
	// Parents sort before their children.
	sort.Strings(names)
	ino := uint32(1)
	write := func(name string, e cpioEntry) error {
		data := e.data
		if e.mode&0o170000 == modeSymlink {
			data = []byte(e.linkTarget)
		}
		nlink := uint32(1)
		if e.mode&0o170000 == modeDir {
			nlink = 2
		}
		hdr := fmt.Sprintf("070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
			ino, e.mode, 0, 0, nlink, 0, len(data), 0, 0, e.rdevMajor, e.rdevMinor, len(name)+1, 0)
		ino++
		if _, err := io.WriteString(w, hdr+name+"\x00"); err != nil {
			return err
		}
		if err := pad(w, len(hdr)+len(name)+1); err != nil {
			return err
		}
		if _, err := w.Write(data); err != nil {
			return err
		}
		return pad(w, len(data))
	}
	for _, n := range names {
		if err := write(n, entries[n]); err != nil {
			return err
		}
	}
	return write("TRAILER!!!", cpioEntry{})
}

func pad(w io.Writer, n int) error {
	if r := n % 4; r != 0 {
		_, err := w.Write(make([]byte, 4-r))
		return err
	}
	return nil
}
