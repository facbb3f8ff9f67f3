package unikimage

import (
	"archive/tar"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/urunc-dev/containerd-shim-urunc-v2/runtime/config"
)

func versioned() specs.Versioned { return specs.Versioned{SchemaVersion: 2} }

// WriteLayout writes the image as an OCI image layout tar to w, which
// `ctr images import` and containerd's client import. The layer is built
// in a temporary file first: the layout's tar needs its size and digest
// before its bytes.
func (s Spec) WriteLayout(w io.Writer) (ocispec.Descriptor, error) {
	if err := s.Validate(); err != nil {
		return ocispec.Descriptor{}, err
	}
	layerFile, err := os.CreateTemp("", "unikimage-layer-*")
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	defer os.Remove(layerFile.Name())
	defer layerFile.Close()
	h := sha256.New()
	if err := s.writeLayer(io.MultiWriter(layerFile, h)); err != nil {
		return ocispec.Descriptor{}, err
	}
	size, err := layerFile.Seek(0, io.SeekCurrent)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	layer := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayer, Digest: digest.NewDigestFromBytes(digest.SHA256, h.Sum(nil)), Size: size}

	created := time.Unix(0, 0).UTC()
	config, _ := json.Marshal(ocispec.Image{
		Created:  &created,
		Platform: ocispec.Platform{Architecture: runtime.GOARCH, OS: "linux"},
		Config:   ocispec.ImageConfig{Cmd: s.Args, Env: s.Env, Labels: s.Labels()},
		RootFS:   ocispec.RootFS{Type: "layers", DiffIDs: []digest.Digest{layer.Digest}},
	})
	configDesc := blobDescriptor(ocispec.MediaTypeImageConfig, config)
	manifest, _ := json.Marshal(ocispec.Manifest{
		Versioned:   versioned(),
		MediaType:   ocispec.MediaTypeImageManifest,
		Config:      configDesc,
		Layers:      []ocispec.Descriptor{layer},
		Annotations: s.Labels(),
	})
	manifestDesc := blobDescriptor(ocispec.MediaTypeImageManifest, manifest)
	indexed := manifestDesc
	indexed.Annotations = map[string]string{
		// containerd names the imported image after this one.
		"io.containerd.image.name": s.Name,
		ocispec.AnnotationRefName:  tagOf(s.Name),
	}
	index, _ := json.Marshal(ocispec.Index{Versioned: versioned(), MediaType: ocispec.MediaTypeImageIndex, Manifests: []ocispec.Descriptor{indexed}})

	tw := tar.NewWriter(w)
	for _, f := range []struct {
		name string
		data []byte
	}{
		{ocispec.ImageLayoutFile, []byte(`{"imageLayoutVersion":"` + ocispec.ImageLayoutVersion + `"}`)},
		{"index.json", index},
		{blobPath(configDesc.Digest), config},
		{blobPath(manifestDesc.Digest), manifest},
	} {
		if err := writeTarFile(tw, f.name, f.data); err != nil {
			return ocispec.Descriptor{}, err
		}
	}
	if _, err := layerFile.Seek(0, io.SeekStart); err != nil {
		return ocispec.Descriptor{}, err
	}
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: blobPath(layer.Digest), Mode: 0o644, Size: size}); err != nil {
		return ocispec.Descriptor{}, err
	}
	if _, err := io.Copy(tw, layerFile); err != nil {
		return ocispec.Descriptor{}, err
	}
	return manifestDesc, tw.Close()
}

// writeLayer writes the image's one layer: the rootfs directory (if any),
// then /boot with the guest's files, then /urunc.json.
func (s Spec) writeLayer(w io.Writer) error {
	tw := tar.NewWriter(w)
	if s.Rootfs != "" {
		if err := addTree(tw, s.Rootfs); err != nil {
			return err
		}
	}
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: "boot/", Mode: 0o755}); err != nil {
		return err
	}
	for _, f := range []struct{ host, path string }{{s.Kernel, KernelPath}, {s.Initrd, InitrdPath}, {s.Block, BlockPath}} {
		if f.host == "" {
			continue
		}
		if err := s.addFile(tw, f.host, f.path); err != nil {
			return err
		}
	}
	if err := writeTarFile(tw, config.ConfigFileInRootfs, s.uruncJSON()); err != nil {
		return err
	}
	return tw.Close()
}

// addFile copies a host file into the layer at path, reporting progress.
func (s Spec) addFile(tw *tar.Writer, host, path string) error {
	f, err := os.Open(host)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: strings.TrimPrefix(path, "/"), Mode: 0o644, Size: st.Size()}); err != nil {
		return err
	}
	var src io.Reader = f
	if s.Progress != nil && st.Size() >= progressMinSize {
		src = &progressReader{r: f, total: st.Size(), name: path, out: s.Progress}
	}
	if _, err := io.Copy(tw, src); err != nil {
		return fmt.Errorf("add %s as %s: %w", host, path, err)
	}
	return nil
}

// addTree copies a host directory into the layer as the image's root,
// keeping modes, owners, symlinks and device nodes. /boot and /urunc.json
// are the image's own and must not be in it.
func addTree(tw *tar.Writer, root string) error {
	return filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil || rel == "." {
			return err
		}
		if rel == "boot" || strings.HasPrefix(rel, "boot/") || rel == config.ConfigFileInRootfs {
			return fmt.Errorf("rootfs %s holds /%s, which the image's own files take", root, rel)
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		link := ""
		if info.Mode()&fs.ModeSymlink != 0 {
			if link, err = os.Readlink(p); err != nil {
				return err
			}
		}
		hdr, err := tar.FileInfoHeader(info, link)
		if err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
		hdr.Name = filepath.ToSlash(rel)
		if info.IsDir() {
			hdr.Name += "/"
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if !info.Mode().IsRegular() {
			return nil
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		_, err = io.Copy(tw, f)
		return err
	})
}

// progressMinSize is the smallest file whose copy reports progress.
const progressMinSize = 8 << 20

type progressReader struct {
	r           io.Reader
	total, n    int64
	name        string
	out         io.Writer
	lastQuarter int64
}

func (p *progressReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	p.n += int64(n)
	if q := p.n * 4 / p.total; q > p.lastQuarter {
		p.lastQuarter = q
		fmt.Fprintf(p.out, "%s: %d%% (%d of %d MiB)\n", p.name, q*25, p.n>>20, p.total>>20)
	}
	return n, err
}

func writeTarFile(tw *tar.Writer, name string, data []byte) error {
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: int64(len(data))}); err != nil {
		return err
	}
	_, err := tw.Write(data)
	return err
}

func blobDescriptor(mediaType string, data []byte) ocispec.Descriptor {
	sum := sha256.Sum256(data)
	return ocispec.Descriptor{MediaType: mediaType, Digest: digest.Digest("sha256:" + hex.EncodeToString(sum[:])), Size: int64(len(data))}
}

func blobPath(d digest.Digest) string { return "blobs/" + d.Algorithm().String() + "/" + d.Encoded() }

// tagOf is the tag of a reference ("latest" when it has none).
func tagOf(ref string) string {
	if i := strings.LastIndexAny(ref, ":/"); i >= 0 && ref[i] == ':' {
		return ref[i+1:]
	}
	return "latest"
}
