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
	busybox := flag.String("busybox", "/bin/busybox", "static busybox")
	name := flag.String("name", testimage.ImageName, "image name")
	plain := flag.Bool("plain", false, "write the plain busybox image (for runc) instead")
	flag.Parse()
	var err error
	if *plain {
		err = testimage.WritePlainArchive(*out, *busybox)
	} else {
		err = testimage.WriteOCIArchive(*out, testimage.Options{Name: *name, Kernel: *kernel, Busybox: *busybox})
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "mkimage:", err)
		os.Exit(1)
	}
}
