package kernelimage

import (
	"context"
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

// fileKey is a kernel file's identity as the cache knows it. The device
// is left out: an overlay snapshot reports a device of its own for each
// container's mount of the same image layer, so it would never match;
// the inode, size and times, to the nanosecond, with the change time that
// no image sets, stand for the file.
type fileKey struct {
	Ino   uint64 `json:"ino"`
	Size  int64  `json:"size"`
	Mtime int64  `json:"mtime"`
	Ctime int64  `json:"ctime"`
}

type cacheEntry struct {
	fileKey
	Marker string `json:"marker"`
	// BuiltIn is the verdict: only certain ones (BuiltIn, Absent) are
	// kept.
	BuiltIn bool `json:"builtin"`
}

// CheckFile checks f, an open kernel file, for feat, through the cache
// in cacheDir ("" for none): a file seen before is not read again. A
// cache that cannot be read or written costs a check, nothing more.
func CheckFile(ctx context.Context, f *os.File, feat Feature, cacheDir string, opts Options) (Verdict, error) {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return Unknown, fmt.Errorf("stat kernel: %w", err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return Unknown, unknown("the kernel is not a regular file")
	}
	key := fileKey{Ino: st.Ino, Size: st.Size, Mtime: st.Mtim.Nano(), Ctime: st.Ctim.Nano()}
	var entries []cacheEntry
	if cacheDir != "" {
		entries = readCache(filepath.Join(cacheDir, CacheFile))
		for _, e := range entries {
			if e.fileKey == key && e.Marker == feat.Marker {
				if e.BuiltIn {
					return BuiltIn, nil
				}
				return Absent, nil
			}
		}
	}
	v, err := Check(ctx, f, st.Size, feat, opts)
	if v == Unknown || cacheDir == "" {
		return v, err
	}
	// Newest first; the oldest go past the bound.
	entries = append([]cacheEntry{{fileKey: key, Marker: feat.Marker, BuiltIn: v == BuiltIn}}, entries...)
	if len(entries) > maxCacheEntries {
		entries = entries[:maxCacheEntries]
	}
	_ = writeCache(cacheDir, entries)
	return v, nil
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
	if len(entries) > maxCacheEntries {
		entries = entries[:maxCacheEntries]
	}
	return entries
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
