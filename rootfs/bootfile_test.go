package rootfs

import (
	"io"
	"os"
	"path/filepath"
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
	err = writeInitrdWithPodFiles(filepath.Join(dir, "initrd"), src, nil)
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
