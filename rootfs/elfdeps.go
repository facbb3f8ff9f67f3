package rootfs

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/urunc-dev/containerd-shim-urunc-v2/internal/elfdyn"
)

// libraryDirs are searched for DT_NEEDED libraries when the binary carries
// no RUNPATH that has them; these are the multiarch and classic locations.
var libraryDirs = []string{
	"/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu",
	"/lib64", "/usr/lib64", "/lib", "/usr/lib",
}

// ELFDeps lists the host files a dynamically linked binary needs to run:
// its interpreter and every shared library, transitively, each as the path
// the loader opens (symlinks are kept as paths; the caller binds the files
// they resolve to at those paths). Reading ELF headers directly avoids
// running ldd on a binary as root.
//
// modules are what the binary loads itself at run time (qemu's
// accelerators): their libraries are added best effort, since a module
// that cannot load only loses its feature, and in the same walk, so that
// the libraries they share with the binary (libc, glib) are read once.
func ELFDeps(binary string, modules ...string) ([]string, error) {
	seen := map[string]bool{}
	var out []string
	var visit func(path string, required bool) error
	visit = func(path string, required bool) error {
		if seen[path] {
			return nil
		}
		seen[path] = true
		info, err := elfdyn.Read(path)
		if err != nil {
			if !required {
				return nil
			}
			return err
		}
		if info.Interp != "" && !seen[info.Interp] {
			seen[info.Interp] = true
			out = append(out, info.Interp)
		}
		var dirs []string
		for _, d := range info.SearchPath {
			dirs = append(dirs, strings.ReplaceAll(d, "$ORIGIN", filepath.Dir(path)))
		}
		dirs = append(dirs, libraryDirs...)
		for _, lib := range info.Needed {
			found := ""
			for _, d := range dirs {
				cand := filepath.Join(d, lib)
				if _, err := os.Stat(cand); err == nil {
					found = cand
					break
				}
			}
			if found == "" {
				if required {
					return fmt.Errorf("%s needs %s, which is not on this host", path, lib)
				}
				continue
			}
			if !seen[found] {
				out = append(out, found)
			}
			if err := visit(found, required); err != nil {
				return err
			}
		}
		return nil
	}
	if err := visit(binary, true); err != nil {
		return nil, err
	}
	for _, m := range modules {
		if err := visit(m, false); err != nil {
			return nil, err
		}
	}
	return out, nil
}
