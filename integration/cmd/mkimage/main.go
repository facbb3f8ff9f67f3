// Command mkimage writes the test guest image as an OCI archive for
// `ctr images import`; the demo and the integration tests use it.
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/urunc-dev/containerd-shim-urunc-v2/integration/testimage"
)

func main() {
	out := flag.String("o", "urunc-test-guest.tar", "output OCI archive")
	kernel := flag.String("kernel", "/var/cache/urunc-test/guest/vmlinuz", "guest kernel")
	modules := flag.String("modules", "/var/cache/urunc-test/guest/modules", "the guest kernel's modules dir, for an initrd guest (virtio-net, ACPI button); empty: none")
	busybox := flag.String("busybox", "/bin/busybox", "static busybox")
	name := flag.String("name", testimage.ImageName, "image name")
	plain := flag.Bool("plain", false, "write the plain busybox image (for runc) instead")
	kind := flag.String("kind", "initrd", "initrd: the guest in an initrd; initrd-file: only that initrd, as a file (for urunc build); rootfs: the guest's files in the image, mountRootfs; block: a disk image named by the block annotation; pause: a pod sandbox image (busybox sleeping)")
	flag.Parse()
	var err error
	switch {
	case *plain:
		err = testimage.WritePlainArchive(*out, *busybox)
	case *kind == "initrd" || *kind == "initrd-file":
		o := testimage.Options{Name: *name, Kernel: *kernel, Busybox: *busybox}
		if *modules != "" {
			o.ModulesDir, o.Modules = *modules, testimage.DebianGuestModules
		}
		if *kind == "initrd" {
			err = testimage.WriteOCIArchive(*out, o)
			break
		}
		var data []byte
		if data, err = testimage.BuildInitrd(o); err == nil {
			err = os.WriteFile(*out, data, 0o644)
		}
	case *kind == "rootfs":
		err = testimage.WriteRootfsArchive(*out, *kernel, *busybox)
	case *kind == "block":
		err = testimage.WriteBlockArchive(*out, *kernel, *busybox)
	case *kind == "pause":
		err = testimage.WritePauseArchive(*out, *busybox)
	default:
		err = fmt.Errorf("unknown -kind %q: want initrd, initrd-file, rootfs, block or pause", *kind)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "mkimage:", err)
		os.Exit(1)
	}
}
