// Package kernelimage tells, from a guest kernel's file, whether a driver
// is built into it, without booting it: a string that only the driver's
// code holds is looked for in the kernel's image, decompressed as a
// stream where the image is compressed (an x86 bzImage's payload).
//
// The file is the tenant's: every offset and length it gives is checked
// against its size, the decompressed stream is bounded, and what cannot be
// read for sure is Unknown, never a guess.
package kernelimage

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime/debug"
	"syscall"
	"time"

	"github.com/klauspost/compress/zstd"
	"golang.org/x/sys/unix"
)

// Feature is a kernel option and a string found in the kernel's image
// only when the option builds its driver in (not as a module).
type Feature struct {
	// Option is the kernel config option, named in messages.
	Option string
	// Marker is the string the built-in driver brings.
	Marker string
}

// VirtioConsole is the virtio console (virtio-serial): its driver
// registers the sysfs class "virtio-ports", a string no other code has.
var VirtioConsole = Feature{Option: "CONFIG_VIRTIO_CONSOLE", Marker: "virtio-ports"}

// VirtioVsock is virtio's vsock transport, the guest end of
// firecracker's and cloud-hypervisor's vsock device: its driver is named
// after its module, a string with its terminating NUL that no other code
// has (its common part's module name only begins with it).
var VirtioVsock = Feature{Option: "CONFIG_VIRTIO_VSOCKETS", Marker: "vmw_vsock_virtio_transport\x00"}

// Verdict is what the image tells of a feature.
type Verdict int

const (
	// Unknown: the image could not be read for sure (a format or a
	// compression not handled, a header that lies, a bound reached).
	Unknown Verdict = iota
	// BuiltIn: the marker is in the kernel.
	BuiltIn
	// Absent: the whole kernel was read and the marker is not in it.
	Absent
)

func (v Verdict) String() string {
	switch v {
	case BuiltIn:
		return "built in"
	case Absent:
		return "absent"
	}
	return "unknown"
}

// MaxKernelBytes bounds the decompressed kernel read, and the kernel
// file's size: distribution kernels decompress to 60-70 MiB.
const MaxKernelBytes = 128 << 20

// zstdMaxWindow bounds a zstd payload's window, which the decoder holds
// whole: the kernel's build compresses with "zstd -22 --ultra" from a
// pipe, whose frames declare a 128 MiB window (window log 27), so less
// would refuse every zstd kernel; a larger one is refused.
const zstdMaxWindow = 128 << 20

// checkTimeout bounds one check whatever the image: a slow decompression
// ends as Unknown, never as a stuck Create.
const checkTimeout = 30 * time.Second

// Options are how a check reaches what it does not do itself.
type Options struct {
	// XZ is the host's xz program, which decompresses an xz payload
	// (there is no xz decoder in this module's dependencies); "" looks
	// for it on PATH and in /usr/bin, /bin.
	XZ string
	// Start starts cmd and returns how to wait for it; nil is cmd.Start
	// and cmd.Wait. A process whose children another reaper reaps (the
	// shim) passes its own.
	Start func(cmd *exec.Cmd) (wait func() error, err error)
	// Limit overrides MaxKernelBytes (tests).
	Limit int64
	// Statfs is unix.Fstatfs unless set (tests).
	Statfs func(fd int, buf *unix.Statfs_t) error
}

func (o Options) limit() int64 {
	if o.Limit > 0 {
		return o.Limit
	}
	return MaxKernelBytes
}

// ErrUnknown wraps every reason a check ends Unknown.
var ErrUnknown = errors.New("cannot tell")

func unknown(format string, a ...any) error {
	return fmt.Errorf("%w: %s", ErrUnknown, fmt.Sprintf(format, a...))
}

// errBound marks an Unknown that a bound gave, which the file's contents
// alone decide: it is cached like a certain verdict, so a file made to
// reach the bounds costs their price once.
var errBound = errors.New("bound reached")

func bounded(format string, a ...any) error {
	return fmt.Errorf("%w: %s (%w)", ErrUnknown, fmt.Sprintf(format, a...), errBound)
}

// Check tells whether f, a kernel image of size bytes, has feat built
// in. An Unknown verdict comes with the reason (wrapping ErrUnknown).
func Check(ctx context.Context, f io.ReaderAt, size int64, feat Feature, opts Options) (Verdict, error) {
	ctx, cancel := context.WithTimeout(ctx, checkTimeout)
	defer cancel()
	limit := opts.limit()
	img, err := Locate(f, size)
	if err != nil {
		return Unknown, err
	}
	var found bool
	switch img.Compression {
	case "none":
		if img.Length > limit {
			return Unknown, bounded("the kernel is %d bytes, more than the %d read", img.Length, limit)
		}
		found, err = search(ctx, io.NewSectionReader(f, img.Offset, img.Length), []byte(feat.Marker), limit)
	case "gzip":
		// The decoders' buffers go back to the system at once: the
		// shim lives on for the container, the check does not.
		defer debug.FreeOSMemory()
		found, err = searchGzip(ctx, io.NewSectionReader(f, img.Offset, img.Length), feat, limit)
	case "zstd":
		defer debug.FreeOSMemory()
		found, err = searchZstd(ctx, img.payload(f), feat, limit)
	case "xz":
		found, err = searchXZ(ctx, io.NewSectionReader(f, img.Offset, img.Length), feat, limit, opts)
	default:
		return Unknown, unknown("%s payload: no decompressor here", img.Compression)
	}
	if err != nil {
		if errors.Is(err, ErrUnknown) {
			return Unknown, err
		}
		if errors.Is(err, zstd.ErrWindowSizeExceeded) || errors.Is(err, zstd.ErrDecoderSizeExceeded) {
			return Unknown, fmt.Errorf("%w: %s payload: %w (%w)", ErrUnknown, img.Compression, err, errBound)
		}
		return Unknown, fmt.Errorf("%w: %s payload: %w", ErrUnknown, img.Compression, err)
	}
	if found {
		return BuiltIn, nil
	}
	return Absent, nil
}

// Image is where a kernel file's kernel is and how it is compressed.
type Image struct {
	// Format is "elf", "arm64" (an uncompressed arm64 Image), "bzImage"
	// or "compressed" (the file is one compressed stream).
	Format string
	// Offset and Length are the kernel's (or its payload's) bytes in
	// the file, checked to lie inside it.
	Offset, Length int64
	// Compression is "none", "gzip", "xz", "zstd", "bzip2", "lzma",
	// "lzo" or "lz4".
	Compression string
	// sizeTrailer: the payload ends with the kernel's 4-byte
	// decompressed size (a bzImage's), after the compressed stream.
	sizeTrailer bool
}

// payload is the compressed stream alone, without a bzImage's size
// trailer: a decoder that reads frames to the end (zstd) would take the
// trailer for a broken next frame.
func (img Image) payload(f io.ReaderAt) io.Reader {
	n := img.Length
	if img.sizeTrailer && n >= 4 {
		n -= 4
	}
	return io.NewSectionReader(f, img.Offset, n)
}

// Offsets in an x86 boot sector and setup header (the kernel's boot
// protocol, Documentation/arch/x86/boot.rst).
const (
	offSetupSects    = 0x1f1
	offHeaderMagic   = 0x202
	offVersion       = 0x206
	offPayloadOffset = 0x248
	offPayloadLength = 0x24c
	headerEnd        = 0x250
	// payloadVersion is the boot protocol that added payload_offset.
	payloadVersion = 0x0208
	// arm64's Image header: "ARM\x64" at 0x38.
	offArm64Magic = 0x38
)

// Locate finds the kernel in f, a file of size bytes: an ELF vmlinux or
// an arm64 Image is the kernel itself; a bzImage's payload is found
// through its setup header; a file that is one compressed stream is its
// own payload.
func Locate(f io.ReaderAt, size int64) (Image, error) {
	if size <= 0 {
		return Image{}, unknown("empty kernel file")
	}
	head := make([]byte, headerEnd)
	n, err := f.ReadAt(head, 0)
	if err != nil && !errors.Is(err, io.EOF) {
		return Image{}, fmt.Errorf("read kernel header: %w", err)
	}
	head = head[:n]
	if bytes.HasPrefix(head, []byte("\x7fELF")) {
		return Image{Format: "elf", Length: size, Compression: "none"}, nil
	}
	if len(head) >= offArm64Magic+4 && string(head[offArm64Magic:offArm64Magic+4]) == "ARM\x64" {
		return Image{Format: "arm64", Length: size, Compression: "none"}, nil
	}
	if c := compressionOf(head); c != "" && c != "none" {
		return Image{Format: "compressed", Length: size, Compression: c}, nil
	}
	if len(head) < headerEnd || string(head[offHeaderMagic:offHeaderMagic+4]) != "HdrS" {
		return Image{}, unknown("neither an ELF kernel, an arm64 Image, a bzImage nor a compressed kernel")
	}
	img, err := bzImagePayload(head, size)
	if err != nil {
		return Image{}, err
	}
	magic := make([]byte, 6)
	if n, err := f.ReadAt(magic, img.Offset); err != nil && !(errors.Is(err, io.EOF) && n > 0) {
		return Image{}, fmt.Errorf("read bzImage payload: %w", err)
	} else {
		magic = magic[:n]
	}
	img.Compression = compressionOf(magic)
	if img.Compression == "" {
		return Image{}, unknown("bzImage payload of unknown compression (magic % x)", magic)
	}
	return img, nil
}

// bzImagePayload reads where a bzImage's payload is from its setup
// header, head (at least headerEnd bytes), refusing what lies outside
// the file.
func bzImagePayload(head []byte, size int64) (Image, error) {
	version := binary.LittleEndian.Uint16(head[offVersion:])
	if version < payloadVersion {
		return Image{}, unknown("bzImage boot protocol %d.%02d says nothing of its payload (2.08 does)", version>>8, version&0xff)
	}
	setupSects := int64(head[offSetupSects])
	if setupSects == 0 {
		setupSects = 4 // the protocol's meaning of 0
	}
	pmStart := (setupSects + 1) * 512
	off := pmStart + int64(binary.LittleEndian.Uint32(head[offPayloadOffset:]))
	length := int64(binary.LittleEndian.Uint32(head[offPayloadLength:]))
	if length == 0 || off >= size || length > size-off {
		return Image{}, unknown("bzImage header puts its payload (%d bytes at %d) outside the %d-byte file", length, off, size)
	}
	return Image{Format: "bzImage", Offset: off, Length: length, sizeTrailer: true}, nil
}

// compressionOf names the compression whose magic starts b (the kernel's
// choices: CONFIG_KERNEL_GZIP and its siblings), "none" for an ELF
// payload, "" for anything else.
func compressionOf(b []byte) string {
	for _, m := range []struct{ magic, name string }{
		{"\x1f\x8b", "gzip"},
		{"\xfd7zXZ\x00", "xz"},
		{"\x28\xb5\x2f\xfd", "zstd"},
		{"BZh", "bzip2"},
		{"\x5d\x00\x00", "lzma"},
		{"\x89LZO", "lzo"},
		{"\x02\x21\x4c\x18", "lz4"},
		{"\x7fELF", "none"},
	} {
		if bytes.HasPrefix(b, []byte(m.magic)) {
			return m.name
		}
	}
	return ""
}

// searchChunk is how much of the stream is searched at a time.
const searchChunk = 256 << 10

// search tells whether marker is in what r gives, reading at most limit
// bytes: past it the search ends Unknown. It holds one chunk and the
// marker's length less one byte carried over, so a marker across two
// reads is found.
func search(ctx context.Context, r io.Reader, marker []byte, limit int64) (bool, error) {
	if len(marker) == 0 {
		return false, errors.New("empty marker")
	}
	keep := len(marker) - 1
	buf := make([]byte, keep+searchChunk)
	carry := 0
	var total int64
	for {
		if err := ctx.Err(); err != nil {
			return false, unknown("search stopped: %v", err)
		}
		n, err := fill(r, buf[carry:])
		total += int64(n)
		if total > limit {
			return false, bounded("the kernel decompresses past %d bytes", limit)
		}
		if bytes.Contains(buf[:carry+n], marker) {
			return true, nil
		}
		if err == io.EOF {
			return false, nil
		}
		if err != nil {
			return false, err
		}
		end := carry + n
		carry = min(keep, end)
		copy(buf, buf[end-carry:end])
	}
}

// fill reads into b until it is full or r ends; io.EOF is r's clean end
// only (io.ReadFull would also call a decoder's own io.ErrUnexpectedEOF,
// a cut stream, an end).
func fill(r io.Reader, b []byte) (int, error) {
	n := 0
	for n < len(b) {
		m, err := r.Read(b[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// searchGzip searches a gzip payload: one member (a bzImage's payload
// ends with the kernel's size after it).
func searchGzip(ctx context.Context, r io.Reader, feat Feature, limit int64) (bool, error) {
	zr, err := gzip.NewReader(r)
	if err != nil {
		return false, err
	}
	defer zr.Close()
	zr.Multistream(false)
	return search(ctx, zr, []byte(feat.Marker), limit)
}

// searchZstd searches a zstd payload; the decoder's window and memory
// are bounded by zstdMaxWindow, and by the output's limit: no window
// needs more than the whole output read.
func searchZstd(ctx context.Context, r io.Reader, feat Feature, limit int64) (bool, error) {
	window := uint64(min(limit, zstdMaxWindow))
	zr, err := zstd.NewReader(r, zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true),
		zstd.WithDecoderMaxMemory(window), zstd.WithDecoderMaxWindow(window))
	if err != nil {
		return false, err
	}
	defer zr.Close()
	return search(ctx, zr, []byte(feat.Marker), limit)
}

// xzMemLimit bounds xz's own memory: a kernel's xz payload has a 32 MiB
// dictionary at most.
const xzMemLimit = "128MiB"

// nobody is the user xz runs as when the check runs as root: it reads
// its stdin and writes its stdout, and needs nothing of root's.
const nobody = 65534

// searchXZ searches an xz payload through the host's xz, which reads it
// on its stdin, unprivileged where it can be, its memory bounded, killed
// once the answer is known or the bound or the context's end is reached.
func searchXZ(ctx context.Context, r io.Reader, feat Feature, limit int64, opts Options) (bool, error) {
	xz, err := findXZ(opts.XZ)
	if err != nil {
		return false, err
	}
	cmd := exec.Command(xz, "--decompress", "--stdout", "--single-stream", "--quiet", "--memlimit-decompress="+xzMemLimit)
	cmd.Env = []string{}
	cmd.Dir = "/"
	cmd.WaitDelay = time.Second
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if os.Geteuid() == 0 {
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: nobody, Gid: nobody, Groups: []uint32{}}
	}
	// The pipes are this function's own, every end closed here: exec's
	// own pipes are closed by cmd.Wait, which a reaper's wait replaces.
	inR, inW, err := os.Pipe()
	if err != nil {
		return false, err
	}
	out, outW, err := os.Pipe()
	if err != nil {
		inR.Close()
		inW.Close()
		return false, err
	}
	defer out.Close()
	cmd.Stdin = inR
	cmd.Stdout = outW
	start := opts.Start
	if start == nil {
		start = func(c *exec.Cmd) (func() error, error) {
			if err := c.Start(); err != nil {
				return nil, err
			}
			return c.Wait, nil
		}
	}
	wait, err := start(cmd)
	// xz holds its own copies now.
	inR.Close()
	outW.Close()
	if err != nil {
		inW.Close()
		return false, fmt.Errorf("start %s: %w", xz, err)
	}
	// The payload goes in by a goroutine of its own, which ends when xz
	// has read it or has gone (its write then fails).
	fed := make(chan struct{})
	go func() {
		defer close(fed)
		_, _ = io.Copy(inW, r)
		inW.Close()
	}()
	stop := context.AfterFunc(ctx, func() { _ = cmd.Process.Kill() })
	found, serr := search(ctx, out, []byte(feat.Marker), limit)
	stop()
	if found || serr != nil {
		// Stopped before xz's end: it need not go on.
		_ = cmd.Process.Kill()
	}
	_, _ = io.Copy(io.Discard, out)
	werr := wait()
	// The handle (a pidfd) is let go: only cmd.Wait would.
	_ = cmd.Process.Release()
	<-fed
	switch {
	case serr != nil:
		return false, serr
	case found:
		return true, nil
	case werr != nil:
		// Not found, and xz did not read the stream to its end.
		return false, fmt.Errorf("%s: %w", xz, werr)
	}
	return false, nil
}

// findXZ is the xz program to run.
func findXZ(asked string) (string, error) {
	if asked != "" {
		return asked, nil
	}
	if p, err := exec.LookPath("xz"); err == nil {
		return p, nil
	}
	for _, p := range []string{"/usr/bin/xz", "/bin/xz"} {
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", unknown("xz payload, and no xz program on this host (xz-utils)")
}
