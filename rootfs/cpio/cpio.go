// Package cpio writes newc cpio archives, which the Linux kernel unpacks
// into its initramfs.
package cpio

import (
	"fmt"
	"io"
	"strings"

	"golang.org/x/sys/unix"
)

// Writer writes a newc ("070701") cpio archive, the format the Linux
// kernel unpacks as an initramfs: a header of 13 8-digit hex fields, the
// name with its NUL, padding to 4 bytes, the data, padding to 4 bytes.
type Writer struct {
	w   io.Writer
	off int64 // bytes written, for the padding
	ino uint32
}

// NewWriter returns a Writer of an archive to w.
func NewWriter(w io.Writer) *Writer { return &Writer{w: w} }

// Write writes an entry's data, after WriteHeader.
func (c *Writer) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.off += int64(n)
	return n, err
}

// WriteHeader starts an entry named name (a path without a leading "/")
// with mode (a stat(2) type and permissions); size bytes of data must
// follow, then Pad.
func (c *Writer) WriteHeader(name string, mode, uid, gid uint32, size int64) error {
	if strings.IndexByte(name, 0) >= 0 {
		return fmt.Errorf("name %q holds a NUL byte", name)
	}
	if size > 0xffffffff {
		return fmt.Errorf("%s: %d bytes, more than a newc archive entry holds", name, size)
	}
	c.ino++
	nlink := 1
	if mode&unix.S_IFMT == unix.S_IFDIR {
		nlink = 2
	}
	// ino, mode, uid, gid, nlink, mtime, filesize, devmajor, devminor,
	// rdevmajor, rdevminor, namesize, check.
	hdr := fmt.Sprintf("070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
		c.ino, mode, uid, gid, nlink, 0, size, 0, 0, 0, 0, len(name)+1, 0)
	if _, err := io.WriteString(c, hdr+name+"\x00"); err != nil {
		return err
	}
	return c.Pad()
}

// Pad pads what is written so far to a 4-byte boundary.
func (c *Writer) Pad() error {
	if r := c.off % 4; r != 0 {
		_, err := c.Write(make([]byte, 4-r))
		return err
	}
	return nil
}

// Close ends the archive with its trailer entry; it does not close the
// underlying writer.
func (c *Writer) Close() error {
	return c.WriteHeader("TRAILER!!!", 0, 0, 0, 0)
}
