package rootfs_test

import (
	"testing"

	"github.com/urunc-dev/containerd-shim-urunc-v2/monitors"
	"github.com/urunc-dev/containerd-shim-urunc-v2/rootfs"
)

// BenchmarkMonitorRootBinds resolves the confined root of the host's qemu
// with its data directories, as a qemu Create does: the binary's libraries
// and those of its accelerator modules.
func BenchmarkMonitorRootBinds(b *testing.B) {
	qemu, err := monitors.New("qemu", monitors.Config{})
	if err != nil {
		b.Skipf("no qemu on this host: %v", err)
	}
	plan := rootfs.MonitorRootPlan{Binary: qemu.Binary(), DataPaths: qemu.DataPaths()}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := plan.Binds(); err != nil {
			b.Fatal(err)
		}
	}
}
