package rootfs

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/containerd/v2/core/mount"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/urunc-dev/containerd-shim-urunc-v2/internal/confined"
)

type fakeGuest struct {
	block          bool
	fs             map[string]bool
	appendedInitrd bool
}

func (fakeGuest) Name() string                    { return "g" }
func (g fakeGuest) SupportsBlock() bool           { return g.block }
func (g fakeGuest) SupportsFS(fsType string) bool { return g.fs[fsType] }
func (g fakeGuest) UnpacksAppendedInitrd() bool   { return g.appendedInitrd }

type fakeMonitor struct{ shares map[string]bool }

func (fakeMonitor) Name() string                   { return "m" }
func (m fakeMonitor) SupportsShare(kind Kind) bool { return m.shares[string(kind)] }

func TestSelect(t *testing.T) {
	dir := t.TempDir()
	blockFile := filepath.Join(dir, "snapshot.ext4")
	virtiofsd := filepath.Join(dir, "virtiofsd")
	for _, f := range []string{blockFile, virtiofsd} {
		if err := os.WriteFile(f, nil, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	linuxLike := fakeGuest{block: true, fs: map[string]bool{"ext4": true, "9p": true, "virtiofs": true}}
	qemuLike := fakeMonitor{shares: map[string]bool{"9p": true, "virtiofs": true}}
	blockfile := []mount.Mount{{Type: "ext4", Source: blockFile, Options: []string{"rw", "loop"}}}
	overlay := []mount.Mount{{Type: "overlay", Source: "overlay", Options: []string{"lowerdir=/a"}}}
	base := Request{Bundle: dir, RootfsDir: filepath.Join(dir, "rootfs"), Kernel: "/k", Guest: linuxLike, Monitor: qemuLike}
	with := func(f func(r *Request)) Request { r := base; f(&r); return r }

	tests := []struct {
		name     string
		req      Request
		wantMode string
		wantRoot Root
		wantDisk string
		wantErr  string
	}{
		{name: "nothing asked: no rootfs", req: base, wantMode: "none"},
		{name: "initrd wins over everything", req: with(func(r *Request) {
			r.Initrd, r.Block, r.BlkMntPoint, r.MountRootfs, r.Mounts = "/i", "/d", "/", true, blockfile
		}), wantMode: "initrd", wantRoot: Root{Kind: KindInitrd}},
		{name: "block annotation at /", req: with(func(r *Request) {
			r.Block, r.BlkMntPoint, r.MountRootfs, r.Mounts = "/host/disk.img", "/", true, blockfile
		}), wantMode: "block", wantRoot: Root{Kind: KindBlock}, wantDisk: "/host/disk.img"},
		{name: "block annotation elsewhere is not the root", req: with(func(r *Request) {
			r.Block, r.BlkMntPoint = "/host/disk.img", "/data"
		}), wantMode: "none"},
		{name: "block annotation, guest without block", req: with(func(r *Request) {
			r.Block, r.BlkMntPoint, r.Guest = "/host/disk.img", "/", fakeGuest{}
		}), wantErr: "block names a root disk, but guest g cannot boot from a block device (monitor m)"},
		{name: "mountRootfs on a block file", req: with(func(r *Request) {
			r.MountRootfs, r.Mounts = true, blockfile
		}), wantMode: "block", wantRoot: Root{Kind: KindBlock}, wantDisk: blockFile},
		{name: "mountRootfs on a block file of a filesystem the guest lacks: shared", req: with(func(r *Request) {
			r.MountRootfs, r.Mounts = true, []mount.Mount{{Type: "xfs", Source: blockFile, Options: []string{"loop"}}}
		}), wantMode: "9p", wantRoot: Root{Kind: Kind9p, Tag: "fs0"}},
		{name: "mountRootfs on overlay, virtiofsd present", req: with(func(r *Request) {
			r.MountRootfs, r.Mounts, r.Virtiofsd = true, overlay, Virtiofsd{Path: virtiofsd}
		}), wantMode: "virtiofs", wantRoot: Root{Kind: KindVirtiofs, Tag: "fs0"}},
		{name: "mountRootfs on overlay, virtiofsd missing: 9p", req: with(func(r *Request) {
			r.MountRootfs, r.Mounts, r.Virtiofsd = true, overlay, Virtiofsd{Path: filepath.Join(dir, "nope")}
		}), wantMode: "9p", wantRoot: Root{Kind: Kind9p, Tag: "fs0"}},
		{name: "mountRootfs, monitor without shares", req: with(func(r *Request) {
			r.MountRootfs, r.Mounts, r.Monitor = true, overlay, fakeMonitor{}
		}), wantErr: "mountRootfs is set, but guest g cannot boot from the container rootfs (overlay) and monitor m shares no directory"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, err := Select(tc.req)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if p.Mode() != tc.wantMode || p.Root != tc.wantRoot {
				t.Fatalf("mode %q root %+v, want %q %+v", p.Mode(), p.Root, tc.wantMode, tc.wantRoot)
			}
			if tc.wantDisk != "" && (len(p.Disks) == 0 || p.Disks[0].Source != tc.wantDisk || p.Disks[0].ID != "rootfs") {
				t.Fatalf("disks %+v, want rootfs %s first", p.Disks, tc.wantDisk)
			}
		})
	}
}

// A block rootfs copies the kernel out and takes nothing else; the copy is
// recorded for undo before it exists.
func TestContainerBlockPlanUndo(t *testing.T) {
	dir := t.TempDir()
	blockFile := filepath.Join(dir, "snap")
	if err := os.WriteFile(blockFile, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	p, err := Select(Request{Bundle: dir, Kernel: "/k", MountRootfs: true,
		Mounts: []mount.Mount{{Type: "ext4", Source: blockFile, Options: []string{"loop"}}},
		Guest:  fakeGuest{block: true, fs: map[string]bool{"ext4": true}}, Monitor: fakeMonitor{}})
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(dir, "boot"); len(p.Undo.Dirs) != 1 || p.Undo.Dirs[0] != want || p.Kernel != filepath.Join(want, "kernel") {
		t.Fatalf("undo %+v kernel %s", p.Undo, p.Kernel)
	}
	if len(p.Devices) != 0 {
		t.Fatalf("a block file needs no device rule: %v", p.Devices)
	}
}

// Volumes: a shared root binds them at their destinations; a block root
// refuses a directory that is not a block device, naming it; the
// runtime's own mounts are not volumes.
func TestVolumes(t *testing.T) {
	dir := t.TempDir()
	vols := []specs.Mount{
		{Destination: "/proc", Type: "proc", Source: "proc"},
		{Destination: "/dev/shm", Type: "bind", Source: dir, Options: []string{"rbind"}},
		{Destination: "/data", Type: "bind", Source: dir, Options: []string{"rbind", "ro"}},
	}
	guest := fakeGuest{block: true, fs: map[string]bool{"ext4": true, "9p": true}}
	p, err := Select(Request{Kernel: "/k", MountRootfs: true, Volumes: vols, Guest: guest,
		Monitor: fakeMonitor{shares: map[string]bool{"9p": true}}})
	if err != nil {
		t.Fatal(err)
	}
	if len(p.VolumeBinds) != 1 || p.VolumeBinds[0] != (confined.Bind{Source: dir, Target: "/data", ReadOnly: true}) {
		t.Fatalf("volume binds %+v", p.VolumeBinds)
	}
	_, err = Select(Request{Kernel: "/k", Block: "/d", BlkMntPoint: "/", Volumes: vols, Guest: guest, Monitor: fakeMonitor{}})
	if err == nil || !strings.Contains(err.Error(), "volume /data (from "+dir+")") {
		t.Fatalf("err = %v", err)
	}
}

// spec.root.readonly reaches every mode: a block root disk is read-only,
// a shared root is bound read-only (ReadOnlyShare) and served read-only
// unless a writable volume lives in it; "rro" is a read-only volume.
func TestReadOnlyRoot(t *testing.T) {
	dir := t.TempDir()
	blockFile := filepath.Join(dir, "snap")
	if err := os.WriteFile(blockFile, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	guest := fakeGuest{block: true, fs: map[string]bool{"ext4": true, "9p": true}}
	for _, ro := range []bool{false, true} {
		p, err := Select(Request{Kernel: "/k", Block: "/d", BlkMntPoint: "/", ReadOnlyRoot: ro, Guest: guest, Monitor: fakeMonitor{}})
		if err != nil || p.Disks[0].ReadOnly != ro || p.Root.ReadOnly != ro {
			t.Errorf("block annotation, read-only root %v: disks %+v, root %+v, err %v", ro, p.Disks, p.Root, err)
		}
		p, err = Select(Request{Bundle: dir, Kernel: "/k", MountRootfs: true, ReadOnlyRoot: ro,
			Mounts: []mount.Mount{{Type: "ext4", Source: blockFile, Options: []string{"loop"}}},
			Guest:  guest, Monitor: fakeMonitor{}})
		if err != nil || p.Disks[0].ReadOnly != ro || p.Root.ReadOnly != ro {
			t.Errorf("container block, read-only root %v: disks %+v, root %+v, err %v", ro, p.Disks, p.Root, err)
		}
	}
	share := func(vols ...specs.Mount) *Plan {
		t.Helper()
		p, err := Select(Request{Kernel: "/k", MountRootfs: true, ReadOnlyRoot: true, Volumes: vols, Guest: guest,
			Monitor: fakeMonitor{shares: map[string]bool{"9p": true}}})
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	if p := share(); !p.ReadOnlyShare || !p.Shares[0].ReadOnly {
		t.Errorf("read-only 9p root: share %+v, bound read-only %v", p.Shares[0], p.ReadOnlyShare)
	}
	rro := specs.Mount{Destination: "/data", Type: "bind", Source: dir, Options: []string{"rbind", "rro"}}
	if p := share(rro); !p.Shares[0].ReadOnly || !p.VolumeBinds[0].ReadOnly {
		t.Errorf("rro volume in a read-only root: share %+v, binds %+v", p.Shares[0], p.VolumeBinds)
	}
	rw := specs.Mount{Destination: "/data", Type: "bind", Source: dir, Options: []string{"rbind", "rw"}}
	if p := share(rw); !p.ReadOnlyShare || p.Shares[0].ReadOnly || p.VolumeBinds[0].ReadOnly {
		t.Errorf("writable volume in a read-only root: share %+v, bound read-only %v, binds %+v", p.Shares[0], p.ReadOnlyShare, p.VolumeBinds)
	}
}
