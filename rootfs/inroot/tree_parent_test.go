package inroot

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Above an entry a non-directory of the image is refused, not replaced:
// only the entries themselves are the pod's to replace.
func TestTreeRefusesNonDirectoryAboveEntry(t *testing.T) {
	root := t.TempDir()
	if err := os.WriteFile(filepath.Join(root, "etc"), []byte("image"), 0o644); err != nil {
		t.Fatal(err)
	}
	tr, err := OpenTree(root)
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	if err := tr.Parent("etc/config"); err == nil || !strings.Contains(err.Error(), "/etc/config") {
		t.Fatalf("Parent over a file: %v, want it refused, naming the directory", err)
	}
	if err := tr.File("etc/hosts", strings.NewReader("x"), 1, 0o644, 0, 0); err == nil {
		t.Fatal("File under a file written")
	}
	if data, err := os.ReadFile(filepath.Join(root, "etc")); err != nil || string(data) != "image" {
		t.Fatalf("the image's /etc is now %q, %v", data, err)
	}
}
