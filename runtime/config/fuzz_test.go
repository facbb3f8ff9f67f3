package config

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/urunc-dev/containerd-shim-urunc-v2/internal/annotation"
)

// Untrusted or operator-written input never panics the shim: /urunc.json
// from an image, the host config, the persisted state.
func FuzzURuncJSON(f *testing.F) {
	f.Add([]byte(`{"com.urunc.unikernel.binary":"L2tlcm5lbA=="}`))
	f.Add([]byte(`{"com.urunc.unikernel.binary":"!!"}`))
	f.Add([]byte(`[1,2]`))
	f.Fuzz(func(t *testing.T, data []byte) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "urunc.json"), data, 0o644); err != nil {
			t.Fatal(err)
		}
		cfg, err := ResolveUnikernelConfig(map[string]string{annotation.Prefix + "hypervisor": "qemu"}, dir)
		if err == nil {
			_, _ = cfg.WantsRootfs()
		}
	})
}

func FuzzHostConfig(f *testing.F) {
	f.Add([]byte("[monitors.qemu]\naccel = \"tcg\"\n[extra_binaries.virtiofsd]\npath = \"/x\"\n"))
	f.Add([]byte("[runtime]\nstop_grace_s = -1\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := ParseHostConfig("fuzz.toml", data)
		if err == nil {
			_ = cfg.Monitor("qemu")
			_ = cfg.Virtiofsd()
			_ = cfg.StopGrace()
		}
	})
}
