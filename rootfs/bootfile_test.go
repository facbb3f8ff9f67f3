package rootfs

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// hugeFile makes a sparse file one byte over MaxBootFileBytes.
func hugeFile(t *testing.T, dir string) string {
	t.Helper()
	p := filepath.Join(dir, "huge")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(MaxBootFileBytes + 1); err != nil {
		t.Fatal(err)
	}
	return p
}

// A kernel copied out of a block rootfs, or an image's initrd copied
// with the pod's files, larger than MaxBootFileBytes is refused, naming
// it, before anything fills the host's /run.
func TestBootFilesAreBounded(t *testing.T) {
	dir := t.TempDir()
	src := hugeFile(t, dir)
	err := copyFile(src, filepath.Join(dir, "kernel"), 0o644)
	if err == nil || !strings.Contains(err.Error(), src) || !strings.Contains(err.Error(), "more than") {
		t.Fatalf("kernel: %v", err)
	}
	err = writeInitrdWithPodFiles(filepath.Join(dir, "initrd"), src, nil, nil)
	if err == nil || !strings.Contains(err.Error(), src) || !strings.Contains(err.Error(), "more than") {
		t.Fatalf("initrd: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "initrd")); !os.IsNotExist(err) {
		t.Fatalf("initrd left: %v", err)
	}
}

// A file that grows past the bound while copied (its size said less)
// stops the copy one byte past it.
func TestCopyBootFileStopsPastTheBound(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	go func() {
		defer w.Close()
		buf := make([]byte, 1<<20)
		for i := 0; i < MaxBootFileBytes>>20+2; i++ {
			if _, err := w.Write(buf); err != nil {
				return
			}
		}
	}()
	n, err := copyBootFile(io.Discard, r, "growing")
	if err == nil || !strings.Contains(err.Error(), "growing grew past") || n != MaxBootFileBytes+1 {
		t.Fatalf("copied %d: %v", n, err)
	}
}

// hugeDir hands out names of a directory with a million entries, and
// counts them.
type hugeDir struct{ given, most int }

func (d *hugeDir) Readdirnames(n int) ([]string, error) {
	if n <= 0 || n > 1_000_000-d.given {
		n = 1_000_000 - d.given
	}
	d.most = max(d.most, n)
	names := make([]string, n)
	for i := range names {
		names[i] = strconv.Itoa(d.given + i)
	}
	d.given += n
	if n == 0 {
		return nil, io.EOF
	}
	return names, nil
}

// A huge volume directory is refused after reading just past the limit,
// never read whole.
func TestReadNamesStopsPastTheLimit(t *testing.T) {
	d := &hugeDir{}
	_, err := readNamesUpTo(d, maxPodArchiveEntries)
	if !errors.Is(err, errTooManyNames) {
		t.Fatalf("err = %v", err)
	}
	if d.given > maxPodArchiveEntries+1 || d.most > maxPodArchiveEntries+1 {
		t.Fatalf("read %d names, %d at once, for a limit of %d", d.given, d.most, maxPodArchiveEntries)
	}
	names, err := readNamesUpTo(&hugeDir{given: 1_000_000 - 3}, 3)
	if err != nil || len(names) != 3 {
		t.Fatalf("names %v, err %v", names, err)
	}
}
