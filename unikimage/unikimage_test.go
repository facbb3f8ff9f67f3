package unikimage

import (
	"archive/tar"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func writeFile(t *testing.T, dir, name string, size int) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, bytes.Repeat([]byte{'k'}, size), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// What Validate refuses, each named as the shim would name it.
func TestValidate(t *testing.T) {
	dir := t.TempDir()
	k := writeFile(t, dir, "kernel", 10)
	base := Spec{Name: "a/b:c", UnikernelType: "linux", Hypervisor: "qemu", Kernel: k, Args: []string{"/init"}}
	for _, tc := range []struct {
		name   string
		change func(s *Spec)
		want   string
	}{
		{"ok", func(*Spec) {}, ""},
		{"no name", func(s *Spec) { s.Name = "" }, "no image name"},
		{"unknown guest", func(s *Spec) { s.UnikernelType = "plan9" }, `unknown unikernelType "plan9"`},
		{"unknown monitor", func(s *Spec) { s.Hypervisor = "bhyve" }, `unknown hypervisor "bhyve"`},
		{"pair", func(s *Spec) { s.UnikernelType = "mewz"; s.Hypervisor = "firecracker" }, "cannot run under monitor firecracker"},
		{"two roots", func(s *Spec) { s.Initrd, s.Block = k, k }, "at most one of"},
		{"kernel a directory", func(s *Spec) { s.Kernel = dir }, "is not a regular file"},
		{"rootfs a file", func(s *Spec) { s.Rootfs = k }, "is not a directory"},
		{"solo5 initrd", func(s *Spec) { s.UnikernelType, s.Hypervisor, s.Initrd = "rumprun", "hvt", k }, "monitor hvt cannot boot an initrd"},
		{"argument with a newline", func(s *Spec) { s.Args = []string{"/init", "a\nb"} }, "linux guest: argument 1"},
	} {
		s := base
		tc.change(&s)
		err := s.Validate()
		if (tc.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
	}
}

// The layout holds one image whose layer has the kernel under /boot and
// /urunc.json in urunc's form (base64 values), named for containerd.
func TestWriteLayout(t *testing.T) {
	dir := t.TempDir()
	var progress bytes.Buffer
	s := Spec{Name: "docker.io/x/app:v2", UnikernelType: "linux", Hypervisor: "qemu",
		Kernel: writeFile(t, dir, "kernel", 9<<20), Block: writeFile(t, dir, "disk", 4096),
		Args: []string{"/init", "go"}, Progress: &progress}
	var out bytes.Buffer
	if _, err := s.WriteLayout(&out); err != nil {
		t.Fatal(err)
	}
	blobs := map[string][]byte{}
	tr := tar.NewReader(&out)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		blobs[h.Name], _ = io.ReadAll(tr)
	}
	var index struct {
		Manifests []struct {
			Digest      string
			Annotations map[string]string
		}
	}
	if err := json.Unmarshal(blobs["index.json"], &index); err != nil || len(index.Manifests) != 1 {
		t.Fatalf("index.json: %v %s", err, blobs["index.json"])
	}
	if n := index.Manifests[0].Annotations["io.containerd.image.name"]; n != s.Name {
		t.Errorf("image name %q", n)
	}
	var manifest struct{ Layers []struct{ Digest string } }
	_ = json.Unmarshal(blobs["blobs/sha256/"+strings.TrimPrefix(index.Manifests[0].Digest, "sha256:")], &manifest)
	if len(manifest.Layers) != 1 {
		t.Fatalf("manifest %+v", manifest)
	}
	files := map[string][]byte{}
	lr := tar.NewReader(bytes.NewReader(blobs["blobs/sha256/"+strings.TrimPrefix(manifest.Layers[0].Digest, "sha256:")]))
	for {
		h, err := lr.Next()
		if err != nil {
			break
		}
		files[h.Name], _ = io.ReadAll(lr)
	}
	if len(files["boot/kernel"]) != 9<<20 || len(files["boot/rootfs.img"]) != 4096 {
		t.Errorf("layer files: kernel %d, disk %d bytes", len(files["boot/kernel"]), len(files["boot/rootfs.img"]))
	}
	var cfg map[string]string
	if err := json.Unmarshal(files["urunc.json"], &cfg); err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]string{"binary": "/boot/kernel", "block": "/boot/rootfs.img", "blkMntPoint": "/", "cmdline": "/init go", "unikernelType": "linux"} {
		got, _ := base64.StdEncoding.DecodeString(cfg["com.urunc.unikernel."+k])
		if string(got) != want {
			t.Errorf("urunc.json %s = %q, want %q", k, got, want)
		}
	}
	if !strings.Contains(progress.String(), "/boot/kernel: 100% (9 of 9 MiB)") {
		t.Errorf("no progress for the 9 MiB kernel:\n%s", progress.String())
	}
}
