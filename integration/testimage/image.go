package testimage

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// ImageName is the name the test guest image is imported under.
const ImageName = "docker.io/urunc/test-guest:latest"

// GuestInit is the test guest's /init. Its first argument picks what it
// does, so one image serves every test:
//
//	noacpi CMD...  as CMD, but ignore the ACPI power button
//	echo ARGS...   print the arguments and power off
//	say ARGS...    print the arguments alone on a line, as an app's log line, and power off
//	count          print a counter every second, forever
//	sleep          print a ready line and idle forever
//	sh             an interactive shell on the console
//	httpd          configure eth0 from ip= on the kernel command line and serve HTTP
//	write FILE TEXT  write TEXT to FILE (in the guest's root, making its directory), sync, print it back, then idle
//	cat FILE...    print each file, prefixed "URUNC_GUEST_CAT FILE:"
//	sleepcat FILE...  as cat, then as sleep
//	chmodcat MODE FILE CATFILE...  chmod FILE, print the outcome ("URUNC_GUEST_CHMOD FILE: ok" or the error), then as sleepcat CATFILE...
//	exit N         end init with status N (the kernel reports it and resets)
//	envcat VAR[,VAR...] FILE...  print each VAR's value and the hostname, then each file as cat does
//	               with its mode ("URUNC_GUEST_MODE FILE: 644", through symlinks), then URUNC_GUEST_DONE
//	catvol FILE    mount the first disk whose serial starts with "vol" and print FILE of it
//	memhog MARGIN FILE...  print each file as cat does, then fill a tmpfs with all the memory the
//	               kernel says is available but MARGIN MiB (so the guest's RAM is touched, on the host
//	               too), print "URUNC_GUEST_MEMHOG N MiB", then as sleep
//	trapterm       print a ready line, then on SIGTERM print URUNC_GUEST_TERM and exit 7
//	forge          print the kernel's line of init's end with status 9, then exit 0
//	ident VAR      print its uid, gid, cwd, hostname and VAR's value, then exit 0
//
// trapterm, forge and ident end with exit, not a power-off: under the guest agent the
// app is not PID 1, and its exit is what the agent reports.
const GuestInit = `#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys /dev /tmp /bin /sbin /usr/bin /usr/sbin
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sys /sys
/bin/busybox mount -t devtmpfs dev /dev 2>/dev/null
/bin/busybox --install -s
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
for m in $(cat /etc/modules 2>/dev/null); do insmod /lib/modules/$m.ko 2>/dev/null; done
if [ "$1" = "noacpi" ]; then
	# A guest that ignores the ACPI power button.
	shift
else
	# ACPI power button: a clean power-off, like a real distribution.
	acpid -f -c /etc/acpi -l /dev/null &
fi
cmd=$1
[ $# -gt 0 ] && shift
case "$cmd" in
echo)
	echo "URUNC_GUEST_ARGS: $*"
	;;
say)
	echo "$*"
	;;
count)
	i=0
	while :; do i=$((i+1)); echo "count $i"; sleep 1; done
	;;
sleep)
	echo "URUNC_GUEST_READY"
	while :; do sleep 1000; done
	;;
sh)
	echo "URUNC_GUEST_SHELL"
	setsid cttyhack sh
	;;
httpd)
	ipcfg=$(tr ' ' '\n' < /proc/cmdline | grep '^ip=' | cut -d= -f2)
	addr=$(echo "$ipcfg" | cut -d: -f1)
	gw=$(echo "$ipcfg" | cut -d: -f3)
	mask=$(echo "$ipcfg" | cut -d: -f4)
	ip link set lo up
	ip link set eth0 up
	ifconfig eth0 "$addr" netmask "$mask"
	[ -n "$gw" ] && route add default gw "$gw"
	mkdir -p /www
	echo "hello from the urunc guest" > /www/index.html
	httpd -h /www -p 80
	echo "URUNC_GUEST_HTTPD $addr"
	while :; do sleep 1000; done
	;;
write)
	f=$1
	shift
	mkdir -p "$(dirname "$f")" && echo "$*" > "$f" && sync && echo "URUNC_GUEST_WROTE $f: $(cat "$f")"
	while :; do sleep 1000; done
	;;
cat)
	for f in "$@"; do echo "URUNC_GUEST_CAT $f: $(cat "$f" 2>&1)"; done
	;;
envcat)
	for v in $(echo "$1" | tr ',' ' '); do
		eval "val=\${$v}"
		echo "URUNC_GUEST_ENV $v=$val"
	done
	shift
	echo "URUNC_GUEST_HOSTNAME $(hostname)"
	for f in "$@"; do
		echo "URUNC_GUEST_CAT $f: $(cat "$f" 2>&1)"
		echo "URUNC_GUEST_MODE $f: $(stat -L -c %a "$f" 2>&1)"
	done
	echo "URUNC_GUEST_DONE"
	;;
exit)
	sync
	exit "$1"
	;;
trapterm)
	trap 'echo URUNC_GUEST_TERM; exit 7' TERM
	echo "URUNC_GUEST_READY"
	while :; do sleep 1000 & wait $!; done
	;;
forge)
	echo "[    1.000000] Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000900"
	exit 0
	;;
ident)
	eval "val=\${$1}"
	echo "URUNC_GUEST_IDENT uid=$(/bin/busybox id -u) gid=$(/bin/busybox id -g) cwd=$(pwd) host=$(/bin/busybox hostname) $1=$val"
	exit 0
	;;
catvol)
	for s in /sys/block/vd*/serial; do
		case "$(cat "$s")" in vol*)
			id=$(cat "$s")
			mkdir -p /vol && mount "/dev/$(basename "$(dirname "$s")")" /vol &&
				echo "URUNC_GUEST_VOL $id $1: $(cat "/vol/$1" 2>&1)" && umount /vol
			break
			;;
		esac
	done
	;;
chmodcat)
	m=$1 f=$2
	shift 2
	if out=$(chmod "$m" "$f" 2>&1); then echo "URUNC_GUEST_CHMOD $f: ok"; else echo "URUNC_GUEST_CHMOD $f: $out"; fi
	for f in "$@"; do echo "URUNC_GUEST_CAT $f: $(cat "$f" 2>&1)"; done
	echo "URUNC_GUEST_READY"
	while :; do sleep 1000; done
	;;
sleepcat)
	for f in "$@"; do echo "URUNC_GUEST_CAT $f: $(cat "$f" 2>&1)"; done
	echo "URUNC_GUEST_READY"
	while :; do sleep 1000; done
	;;
memhog)
	margin=$1
	shift
	for f in "$@"; do echo "URUNC_GUEST_CAT $f: $(cat "$f" 2>&1)"; done
	avail=$(awk '/^MemAvailable:/ { print int($2 / 1024) }' /proc/meminfo)
	n=$((avail - margin))
	mkdir -p /hog && mount -t tmpfs -o size=${n}m hog /hog
	dd if=/dev/zero of=/hog/fill bs=1M count=$n 2>/dev/null
	echo "URUNC_GUEST_MEMHOG $(($(stat -c %s /hog/fill) >> 20)) MiB"
	echo "URUNC_GUEST_READY"
	while :; do sleep 1000; done
	;;
*)
	echo "URUNC_GUEST: unknown command $cmd"
	;;
esac
sync
poweroff -f
`

// Options say what goes into a test image.
type Options struct {
	Name       string // image name; ImageName if empty
	Kernel     string // host path of the guest kernel
	Busybox    string // host path of a static busybox
	ModulesDir string // the guest kernel's /lib/modules/VERSION, for Modules
	Modules    []string
	// Annotations are written into /urunc.json (base64), as urunc's image
	// builders do; keys without the com.urunc.unikernel. prefix.
	Annotations map[string]string
	Entrypoint  []string
	Cmd         []string
	// InitAlias, when set, is a second path of the init in the initrd
	// ("urunit": an app named so stays the guest's init).
	InitAlias string
}

// DebianGuestModules are the modules of Debian's guest kernel that the
// test guest's init loads, in dependency order: virtio networking and the
// ACPI power button (without it SIGTERM cannot power the guest down).
var DebianGuestModules = []string{
	"drivers/virtio/virtio_ring", "drivers/virtio/virtio",
	"drivers/virtio/virtio_pci_legacy_dev", "drivers/virtio/virtio_pci_modern_dev",
	"drivers/virtio/virtio_pci",
	"net/core/failover", "drivers/net/net_failover", "drivers/net/virtio_net",
	"drivers/input/evdev", "drivers/acpi/button",
}

// DefaultAnnotations make a Linux guest under qemu with its initrd.
func DefaultAnnotations() map[string]string {
	return map[string]string{
		"unikernelType": "linux",
		"hypervisor":    "qemu",
		"binary":        "/kernel",
		"initrd":        "/initrd",
	}
}

// BuildInitrd returns a newc initramfs with busybox, the init above and
// the listed kernel modules (paths relative to ModulesDir/kernel, without
// .ko), loaded in the listed order.
func BuildInitrd(o Options) ([]byte, error) {
	bb, err := os.ReadFile(o.Busybox)
	if err != nil {
		return nil, fmt.Errorf("read busybox: %w", err)
	}
	entries := map[string]cpioEntry{
		"bin":           {mode: modeDir | 0o755},
		"bin/busybox":   {mode: modeFile | 0o755, data: bb},
		"init":          {mode: modeFile | 0o755, data: []byte(GuestInit)},
		"dev":           {mode: modeDir | 0o755},
		"dev/console":   {mode: modeChar | 0o600, rdevMajor: 5, rdevMinor: 1},
		"dev/null":      {mode: modeChar | 0o666, rdevMajor: 1, rdevMinor: 3},
		"etc":           {mode: modeDir | 0o755},
		"etc/acpi":      {mode: modeDir | 0o755},
		"etc/acpi/PWRF": {mode: modeDir | 0o755},
		"etc/acpi/PWRF/00000080": {mode: modeFile | 0o755,
			data: []byte("#!/bin/sh\necho URUNC_GUEST_POWERDOWN\npoweroff -f\n")},
		"proc": {mode: modeDir | 0o755},
		"sys":  {mode: modeDir | 0o755},
		"tmp":  {mode: modeDir | 0o1777},
	}
	if o.InitAlias != "" {
		entries[o.InitAlias] = cpioEntry{mode: modeFile | 0o755, data: []byte(GuestInit)}
	}
	if len(o.Modules) > 0 {
		entries["lib"] = cpioEntry{mode: modeDir | 0o755}
		entries["lib/modules"] = cpioEntry{mode: modeDir | 0o755}
		var order []string
		for _, m := range o.Modules {
			data, err := os.ReadFile(filepath.Join(o.ModulesDir, "kernel", m+".ko"))
			if err != nil {
				return nil, fmt.Errorf("module %s: %w", m, err)
			}
			base := filepath.Base(m)
			entries["lib/modules/"+base+".ko"] = cpioEntry{mode: modeFile | 0o644, data: data}
			order = append(order, base)
		}
		entries["etc/modules"] = cpioEntry{mode: modeFile | 0o644, data: []byte(strings.Join(order, "\n") + "\n")}
	}
	var buf bytes.Buffer
	if err := writeNewc(&buf, entries); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// WriteOCIArchive writes the test image as an OCI image layout tar, the
// input of `ctr images import`.
func WriteOCIArchive(path string, o Options) error {
	if o.Name == "" {
		o.Name = ImageName
	}
	if o.Annotations == nil {
		o.Annotations = DefaultAnnotations()
	}
	kernel, err := os.ReadFile(o.Kernel)
	if err != nil {
		return fmt.Errorf("read kernel: %w", err)
	}
	initrd, err := BuildInitrd(o)
	if err != nil {
		return err
	}
	cfg := map[string]string{}
	for k, v := range o.Annotations {
		cfg["com.urunc.unikernel."+k] = base64.StdEncoding.EncodeToString([]byte(v))
	}
	cfgJSON, _ := json.Marshal(cfg)
	entrypoint, cmd := o.Entrypoint, o.Cmd
	if entrypoint == nil {
		entrypoint = []string{"/init"}
	}
	if cmd == nil {
		cmd = []string{"echo", "hello", "from", "urunc"}
	}
	return writeArchive(path, o.Name, []tarFile{
		{"kernel", 0o644, kernel},
		{"initrd", 0o644, initrd},
		{"urunc.json", 0o644, cfgJSON},
	}, entrypoint, cmd)
}

// PlainImageName is a plain (non-unikernel) busybox image, for the
// containers this shim hands to runc.
const PlainImageName = "docker.io/urunc/test-plain:latest"

// WritePlainArchive writes a plain busybox image: no unikernel annotation,
// no /urunc.json.
func WritePlainArchive(path, busybox string) error {
	bb, err := os.ReadFile(busybox)
	if err != nil {
		return fmt.Errorf("read busybox: %w", err)
	}
	return writeArchive(path, PlainImageName, []tarFile{
		{"bin/busybox", 0o755, bb},
		{"bin/sh", 0o755, bb},
		{"tmp/.keep", 0o644, nil},
	}, []string{"/bin/busybox"}, []string{"echo", "hello", "from", "runc"})
}

// PauseImageName is the pod sandbox image of the CRI tests (no registry
// is reachable for the real pause image): busybox sleeping forever.
const PauseImageName = "docker.io/urunc/test-pause:latest"

// WritePauseArchive writes the pause image.
func WritePauseArchive(path, busybox string) error {
	bb, err := os.ReadFile(busybox)
	if err != nil {
		return fmt.Errorf("read busybox: %w", err)
	}
	return writeArchive(path, PauseImageName, []tarFile{{"bin/busybox", 0o755, bb}},
		[]string{"/bin/busybox", "sleep", "2147483647"}, nil)
}

// writeArchive writes a one-layer image as an OCI image layout tar.
func writeArchive(path, name string, files []tarFile, entrypoint, cmd []string) error {
	return writeArchiveWithSpecials(path, name, files, nil, entrypoint, cmd)
}

// writeArchiveWithSpecials is writeArchive with extra layer entries that
// are not regular files (FIFOs, devices, symlinks).
func writeArchiveWithSpecials(path, name string, files []tarFile, specials []tar.Header, entrypoint, cmd []string) error {
	layer, err := tarOf(files, specials...)
	if err != nil {
		return err
	}
	layerDigest := digest(layer)
	imgConfig, _ := json.Marshal(map[string]any{
		"architecture": "amd64",
		"os":           "linux",
		"created":      time.Unix(0, 0).UTC().Format(time.RFC3339),
		"config":       map[string]any{"Entrypoint": entrypoint, "Cmd": cmd, "Env": []string{"PATH=/bin"}},
		"rootfs":       map[string]any{"type": "layers", "diff_ids": []string{layerDigest}},
	})
	manifest, _ := json.Marshal(map[string]any{
		"schemaVersion": 2,
		"mediaType":     "application/vnd.oci.image.manifest.v1+json",
		"config":        descriptor("application/vnd.oci.image.config.v1+json", imgConfig),
		"layers":        []any{descriptor("application/vnd.oci.image.layer.v1.tar", layer)},
	})
	md := descriptor("application/vnd.oci.image.manifest.v1+json", manifest)
	tag := name[strings.LastIndex(name, ":")+1:]
	md["annotations"] = map[string]string{
		"io.containerd.image.name":          name,
		"org.opencontainers.image.ref.name": tag,
	}
	index, _ := json.Marshal(map[string]any{
		"schemaVersion": 2,
		"mediaType":     "application/vnd.oci.image.index.v1+json",
		"manifests":     []any{md},
	})
	archive, err := tarOf([]tarFile{
		{"oci-layout", 0o644, []byte(`{"imageLayoutVersion":"1.0.0"}`)},
		{"index.json", 0o644, index},
		{blobPath(imgConfig), 0o644, imgConfig},
		{blobPath(manifest), 0o644, manifest},
		{blobPath(layer), 0o644, layer},
	})
	if err != nil {
		return err
	}
	return os.WriteFile(path, archive, 0o644)
}

type tarFile struct {
	name string
	mode int64
	data []byte
}

func tarOf(files []tarFile, specials ...tar.Header) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	dirs := map[string]bool{}
	for _, f := range files {
		for d := filepath.Dir(f.name); d != "." && !dirs[d]; d = filepath.Dir(d) {
			dirs[d] = true
		}
	}
	var dirList []string
	for d := range dirs {
		dirList = append(dirList, d)
	}
	// Shorter paths (parents) first.
	for i := range dirList {
		for j := i + 1; j < len(dirList); j++ {
			if len(dirList[j]) < len(dirList[i]) {
				dirList[i], dirList[j] = dirList[j], dirList[i]
			}
		}
	}
	for _, d := range dirList {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d + "/", Mode: 0o755}); err != nil {
			return nil, err
		}
	}
	for _, f := range files {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: f.name, Mode: f.mode, Size: int64(len(f.data))}); err != nil {
			return nil, err
		}
		if _, err := tw.Write(f.data); err != nil {
			return nil, err
		}
	}
	for i := range specials {
		if err := tw.WriteHeader(&specials[i]); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func digest(b []byte) string { return fmt.Sprintf("sha256:%x", sha256.Sum256(b)) }

func blobPath(b []byte) string { return fmt.Sprintf("blobs/sha256/%x", sha256.Sum256(b)) }

func descriptor(mediaType string, b []byte) map[string]any {
	return map[string]any{"mediaType": mediaType, "digest": digest(b), "size": len(b)}
}

// RootfsImageName is a guest whose container rootfs is its root: the
// kernel (with virtio-blk, ext4, 9p and virtiofs built in), busybox and
// the init as plain files of the image, and mountRootfs=true.
const RootfsImageName = "docker.io/urunc/test-rootfs-guest:latest"

// BlockImageName is a guest whose root is a disk image in the container
// rootfs, named by the block annotation.
const BlockImageName = "docker.io/urunc/test-block-guest:latest"

// RootfsFiles are the files of a guest root filesystem: busybox, the init,
// the ACPI power-button handler, the kernel at /kernel and /urunc.json
// with annotations.
func RootfsFiles(kernel, busybox string, annotations map[string]string) ([]tarFile, error) {
	k, err := os.ReadFile(kernel)
	if err != nil {
		return nil, fmt.Errorf("read kernel: %w", err)
	}
	bb, err := os.ReadFile(busybox)
	if err != nil {
		return nil, fmt.Errorf("read busybox: %w", err)
	}
	cfg := map[string]string{}
	for key, v := range annotations {
		cfg["com.urunc.unikernel."+key] = base64.StdEncoding.EncodeToString([]byte(v))
	}
	cfgJSON, _ := json.Marshal(cfg)
	return []tarFile{
		{"bin/busybox", 0o755, bb},
		{"init", 0o755, []byte(GuestInit)},
		{"etc/acpi/PWRF/00000080", 0o755, []byte("#!/bin/sh\necho URUNC_GUEST_POWERDOWN\nsync\npoweroff -f\n")},
		{"kernel", 0o644, k},
		{"urunc.json", 0o644, cfgJSON},
		{"tmp/.keep", 0o644, nil},
		{"dev/.keep", 0o644, nil},
		{"proc/.keep", 0o644, nil},
		{"sys/.keep", 0o644, nil},
	}, nil
}

// WriteRootfsArchive writes the rootfs guest image (RootfsImageName).
func WriteRootfsArchive(path, kernel, busybox string) error {
	files, err := RootfsFiles(kernel, busybox, map[string]string{
		"unikernelType": "linux", "hypervisor": "qemu", "binary": "/kernel", "mountRootfs": "true",
	})
	if err != nil {
		return err
	}
	return writeArchive(path, RootfsImageName, files, []string{"/init"}, []string{"echo", "hello", "from", "the", "rootfs"})
}

// WriteExt4Image writes an ext4 filesystem image of sizeMB holding files,
// with mkfs.ext4 -d.
func WriteExt4Image(path string, files []tarFile, sizeMB int) error {
	dir, err := os.MkdirTemp("", "urunc-ext4-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	for _, f := range files {
		p := filepath.Join(dir, f.name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(p, f.data, os.FileMode(f.mode)); err != nil {
			return err
		}
	}
	out, err := exec.Command("mkfs.ext4", "-q", "-F", "-d", dir, path, fmt.Sprintf("%dM", sizeMB)).CombinedOutput()
	if err != nil {
		return fmt.Errorf("mkfs.ext4: %v: %s", err, out)
	}
	return nil
}

// WriteBlockArchive writes the block guest image (BlockImageName): the
// kernel, and /disk.img, an ext4 image of the guest's root, as the block
// annotation with blkMntPoint "/".
func WriteBlockArchive(path, kernel, busybox string) error {
	annotations := map[string]string{
		"unikernelType": "linux", "hypervisor": "qemu", "binary": "/kernel", "block": "/disk.img", "blkMntPoint": "/",
	}
	files, err := RootfsFiles(kernel, busybox, annotations)
	if err != nil {
		return err
	}
	disk, err := os.CreateTemp("", "urunc-disk-")
	if err != nil {
		return err
	}
	disk.Close()
	defer os.Remove(disk.Name())
	if err := WriteExt4Image(disk.Name(), files, 16); err != nil {
		return err
	}
	img, err := os.ReadFile(disk.Name())
	if err != nil {
		return err
	}
	top := []tarFile{{"disk.img", 0o644, img}}
	for _, f := range files {
		if f.name == "kernel" || f.name == "urunc.json" {
			top = append(top, f)
		}
	}
	return writeArchive(path, BlockImageName, top, []string{"/init"}, []string{"echo", "hello", "from", "the", "disk"})
}

// HostileImageName is the name of an image WriteHostileArchive writes.
func HostileImageName(kind string) string { return "docker.io/urunc/test-hostile-" + kind + ":latest" }

// HostileKinds are the hostile images WriteHostileArchive can write.
var HostileKinds = []string{"fifo-config", "device-config", "huge-config", "symlink-kernel"}

// WriteHostileArchive writes an image that attacks the runtime through
// what it reads from the rootfs: /urunc.json as a FIFO (a plain open
// blocks), as /dev/zero's device (a read never ends) or 2 MiB large, or a
// guest kernel that is a symlink to a host file.
func WriteHostileArchive(path, kind string) error {
	cfg := map[string]string{}
	for k, v := range map[string]string{"unikernelType": "linux", "hypervisor": "qemu", "binary": "/kernel", "initrd": "/initrd"} {
		cfg["com.urunc.unikernel."+k] = base64.StdEncoding.EncodeToString([]byte(v))
	}
	cfgJSON, _ := json.Marshal(cfg)
	files := []tarFile{{"initrd", 0o644, []byte("not an initrd")}}
	var specials []tar.Header
	switch kind {
	case "fifo-config":
		specials = append(specials, tar.Header{Typeflag: tar.TypeFifo, Name: "urunc.json", Mode: 0o644})
	case "device-config":
		specials = append(specials, tar.Header{Typeflag: tar.TypeChar, Name: "urunc.json", Mode: 0o644, Devmajor: 1, Devminor: 5})
	case "huge-config":
		files = append(files, tarFile{"urunc.json", 0o644, append(cfgJSON, bytes.Repeat([]byte(" "), 2<<20)...)})
	case "symlink-kernel":
		files = append(files, tarFile{"urunc.json", 0o644, cfgJSON})
		specials = append(specials, tar.Header{Typeflag: tar.TypeSymlink, Name: "kernel", Linkname: "/etc/passwd"})
	default:
		return fmt.Errorf("unknown hostile image %q", kind)
	}
	return writeArchiveWithSpecials(path, HostileImageName(kind), files, specials, []string{"/init"}, nil)
}

// The CRI validation suite's (critest) images cannot be pulled here;
// these stand in for them: busybox with every applet on PATH, and busybox's
// httpd serving a page, on port 80 or, for the host-network spec, 12003.
const (
	BusyboxImageName          = "docker.io/urunc/critest-busybox:latest"
	WebServerImageName        = "docker.io/urunc/critest-webserver:latest"
	HostNetWebServerImageName = "docker.io/urunc/critest-hostnet-webserver:latest"
)

// WriteBusyboxArchive writes busybox with each applet under /bin, as the
// suite's busybox image has them; with webPort set, the image says so on
// stdout (the suite looks for "httpd" in its log) and serves
// /www/index.html on that port, under name.
func WriteBusyboxArchive(path, busybox, name string, webPort int) error {
	bb, err := os.ReadFile(busybox)
	if err != nil {
		return fmt.Errorf("read busybox: %w", err)
	}
	out, err := exec.Command(busybox, "--list").Output()
	if err != nil {
		return fmt.Errorf("list busybox applets: %w", err)
	}
	files := []tarFile{{"bin/busybox", 0o755, bb}, {"tmp/.keep", 0o644, nil}, {"etc/passwd", 0o644, []byte("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n")},
		{"etc/group", 0o644, []byte("root:x:0:\nnogroup:x:65534:\n")}}
	var links []tar.Header
	applets := strings.Fields(string(out))
	for _, applet := range applets {
		if applet != "busybox" {
			// Hard links, as the suite's busybox has them: masking one
			// applet (MaskedPaths /bin/ls) must not mask busybox.
			links = append(links, tar.Header{Typeflag: tar.TypeLink, Name: "bin/" + applet, Linkname: "bin/busybox", Mode: 0o755})
		}
	}
	if !slices.Contains(applets, "pgrep") {
		// The suite checks for leftover processes with pgrep, which
		// Debian's busybox-static lacks: a stand-in matching /proc's comm.
		files = append(files, tarFile{"bin/pgrep", 0o755, []byte(pgrepScript)})
	}
	cmd := []string{"sh"}
	if webPort != 0 {
		// The pid file is where the suite's nginx image keeps its pid.
		cmd = []string{"sh", "-c", fmt.Sprintf("echo httpd serving /www on port %d; mkdir -p /var/run; echo $$ > /var/run/nginx.pid; exec httpd -f -p %d -h /www", webPort, webPort)}
		files = append(files, tarFile{"www/index.html", 0o644, []byte("<html>hello from busybox httpd</html>\n")})
	}
	return writeArchiveWithSpecials(path, name, files, links, nil, cmd)
}

const pgrepScript = `#!/bin/sh
for d in /proc/[0-9]*; do
	read -r comm < "$d/comm" 2>/dev/null || continue
	case "$comm" in *"$1"*) echo "${d#/proc/}" ;; esac
done
`
