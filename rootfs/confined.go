package rootfs

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"

	"github.com/urunc-dev/containerd-shim-urunc-v2/internal/confined"
)

// MonitorRootPlan is what a monitor's confined root holds: only the
// monitor's binary and libraries, its data files, the guest's files and
// the device nodes it uses. Nothing of the host or of the container rootfs
// beyond that is reachable from the monitor.
type MonitorRootPlan struct {
	Binary    string
	DataPaths []string // skipped when absent on this host
	Guest     []confined.Bind
	Devices   []string // host device nodes, bound at the same path
}

// Binds resolves the plan into the list of binds, failing with an error
// that names the missing piece.
func (p MonitorRootPlan) Binds() ([]confined.Bind, error) {
	var binds []confined.Bind
	seen := map[string]bool{}
	add := func(src, dst string, ro bool) {
		if seen[dst] {
			return
		}
		seen[dst] = true
		binds = append(binds, confined.Bind{Source: src, Target: dst, ReadOnly: ro})
	}
	var modules []string
	for _, dp := range p.DataPaths {
		st, err := os.Stat(dp)
		if err != nil {
			continue
		}
		add(dp, dp, true)
		if st.IsDir() {
			// Loadable modules (qemu's accelerators among them) bring
			// libraries of their own. Only accelerator modules are
			// needed headless.
			mods, _ := filepath.Glob(filepath.Join(dp, "accel-*.so"))
			modules = append(modules, mods...)
		}
	}
	deps, err := ELFDeps(p.Binary, modules...)
	if err != nil {
		return nil, fmt.Errorf("monitor %s: %w", p.Binary, err)
	}
	add(p.Binary, p.Binary, true)
	for _, d := range deps {
		add(d, d, true)
	}
	for _, g := range p.Guest {
		add(g.Source, g.Target, g.ReadOnly)
	}
	for _, dev := range p.Devices {
		if _, err := os.Stat(dev); err != nil {
			return nil, fmt.Errorf("device %s needed by the monitor: %w", dev, err)
		}
		add(dev, dev, false)
	}
	sort.SliceStable(binds, func(i, j int) bool { return binds[i].Target < binds[j].Target })
	return binds, nil
}
