package kernelimage

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// CacheFile is the cache's name in its directory.
const CacheFile = "kernel-check.json"

// Bounds of the cache: the shim is one per container, so the verdicts
// outlive it in a file, which never grows past these.
const (
	maxCacheEntries = 64
	maxCacheBytes   = 64 << 10
)

// cacheEntry is one verdict, keyed by the SHA-256 of the kernel file's
// contents: the file's identity (inode, size, times) is not enough, as
// block snapshotters (an ext4 of its own per snapshot) and erofs number
// their inodes alike, so one image's file could take another's verdict.
type cacheEntry struct {
	SHA256 string `json:"sha256"`
	Marker string `json:"marker"`
	// Verdict is BuiltIn, Absent, or Unknown for a file that reached a
	// bound (which its contents alone decide), Reason saying which.
	Verdict Verdict `json:"verdict"`
	Reason  string  `json:"reason,omitempty"`
}

// Filesystem magics (statfs(2)) of files whose read can block beyond the
// check's bound, between the chunks where the context is looked at: a
// lazily pulled snapshot's FUSE (stargz, nydus) and network filesystems.
const (
	fuseMagic = 0x65735546
	nfsMagic  = 0x6969
	cifsMagic = 0xFF534D42
	smb2Magic = 0xFE534D42
	v9fsMagic = 0x01021997
	// fsTypeMask: statfs's f_type is 32 bits wide in the kernel.
	fsTypeMask = 0xffffffff
)

const (
	// hashChunk is how much of the file is hashed at a time.
	hashChunk = 1 << 20
	// sha256Hex is a SHA-256's length in hex.
	sha256Hex = 64
)

// remoteFilesystems names the filesystems whose files are not read.
var remoteFilesystems = map[uint32]string{
	fuseMagic: "FUSE (a lazily pulled snapshot?)",
	nfsMagic:  "NFS",
	cifsMagic: "CIFS",
	smb2Magic: "SMB2",
	v9fsMagic: "9p",
}

// CheckFile checks f, an open kernel file, for feat, through the cache
// in cacheDir ("" for none): a file whose contents were seen before is
// not decompressed again. A cache that cannot be read or written costs a
// check, nothing more.
func CheckFile(ctx context.Context, f *os.File, feat Feature, cacheDir string, opts Options) (Verdict, error) {
	ctx, cancel := context.WithTimeout(ctx, checkTimeout)
	defer cancel()
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return Unknown, fmt.Errorf("stat kernel: %w", err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return Unknown, unknown("the kernel is not a regular file")
	}
	statfs := opts.Statfs
	if statfs == nil {
		statfs = unix.Fstatfs
	}
	var sfs unix.Statfs_t
	if err := statfs(int(f.Fd()), &sfs); err != nil {
		return Unknown, fmt.Errorf("statfs kernel: %w", err)
	}
	if name, ok := remoteFilesystems[uint32(sfs.Type&fsTypeMask)]; ok {
		return Unknown, unknown("the kernel is on %s, whose read may block: not read", name)
	}
	limit := opts.limit()
	if st.Size > limit {
		return Unknown, unknown("the kernel file is %d bytes, more than the %d read", st.Size, limit)
	}
	var sum string
	var entries []cacheEntry
	if cacheDir != "" {
		var err error
		if sum, err = contentHash(ctx, f, st.Size); err != nil {
			return Unknown, err
		}
		entries = readCache(filepath.Join(cacheDir, CacheFile))
		for _, e := range entries {
			if e.SHA256 == sum && e.Marker == feat.Marker {
				if e.Verdict == Unknown {
					return Unknown, unknown("%s (kept from an earlier check)", e.Reason)
				}
				return e.Verdict, nil
			}
		}
	}
	v, err := Check(ctx, f, st.Size, feat, opts)
	if cacheDir == "" || (v == Unknown && !errors.Is(err, errBound)) {
		return v, err
	}
	e := cacheEntry{SHA256: sum, Marker: feat.Marker, Verdict: v}
	if err != nil {
		e.Reason = err.Error()
	}
	// Newest first; the oldest go past the bound.
	entries = append([]cacheEntry{e}, entries...)
	if len(entries) > maxCacheEntries {
		entries = entries[:maxCacheEntries]
	}
	_ = writeCache(cacheDir, entries)
	return v, err
}

// contentHash is the hex SHA-256 of f's size bytes, read once (the page
// cache then serves the check's read), the context looked at between
// chunks.
func contentHash(ctx context.Context, f io.ReaderAt, size int64) (string, error) {
	h := sha256.New()
	buf := make([]byte, hashChunk)
	for off := int64(0); off < size; {
		if err := ctx.Err(); err != nil {
			return "", unknown("hash stopped: %v", err)
		}
		n, err := f.ReadAt(buf[:min(int64(len(buf)), size-off)], off)
		h.Write(buf[:n])
		off += int64(n)
		if err != nil && !(errors.Is(err, io.EOF) && off == size) {
			return "", fmt.Errorf("read kernel: %w", err)
		}
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// readCache reads the cache's entries; a missing, oversized or broken
// cache is empty.
func readCache(path string) []cacheEntry {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxCacheBytes+1))
	if err != nil || len(data) > maxCacheBytes {
		return nil
	}
	var entries []cacheEntry
	if json.Unmarshal(data, &entries) != nil {
		return nil
	}
	// Entries of another form (an older shim's) are left out.
	kept := entries[:0]
	for _, e := range entries {
		if len(e.SHA256) == sha256Hex && e.Marker != "" && e.Verdict >= Unknown && e.Verdict <= Absent {
			kept = append(kept, e)
		}
	}
	if len(kept) > maxCacheEntries {
		kept = kept[:maxCacheEntries]
	}
	return kept
}

// writeCache replaces the cache at once (a new file renamed over it):
// a reader sees the old or the new, never half of one. Two shims that
// write at the same time keep one's entry; the other is checked again.
func writeCache(dir string, entries []cacheEntry) error {
	data, err := json.Marshal(entries)
	if err != nil {
		return err
	}
	if len(data) > maxCacheBytes {
		return errors.New("kernel check cache too large")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, "."+CacheFile+".*")
	if err != nil {
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return err
	}
	if err := tmp.Close(); err != nil {
		os.Remove(tmp.Name())
		return err
	}
	if err := os.Rename(tmp.Name(), filepath.Join(dir, CacheFile)); err != nil {
		os.Remove(tmp.Name())
		return err
	}
	return nil
}
