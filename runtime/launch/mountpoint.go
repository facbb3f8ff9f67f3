package launch

import (
	"errors"

	"golang.org/x/sys/unix"
)

// fileMountPoint makes dst, a path in the image's rootfs, a mount point for
// a file volume: it creates an empty file when nothing is there. What the
// image has there already, a FIFO or a device node included, is mounted
// over and never opened: an open could block Create or act on a host
// device.
func fileMountPoint(dst string) error {
	fd, err := unix.Open(dst, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_NOCTTY|unix.O_CLOEXEC, 0o644)
	if errors.Is(err, unix.EEXIST) {
		return nil
	}
	if err != nil {
		return err
	}
	return unix.Close(fd)
}
