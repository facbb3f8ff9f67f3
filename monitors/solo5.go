package monitors

import (
	"context"
	"fmt"
	"os/exec"
	"regexp"
	"strconv"
	"time"

	"github.com/urunc-dev/containerd-shim-urunc-v2/rootfs"
)

// solo5 runs a solo5 unikernel under one of solo5's tenders: hvt (KVM) or
// spt (seccomp, no virtualization). Both take the same command line form.
type solo5 struct {
	name   string
	binary string
	cfg    Config
}

func newHvt(binary string, cfg Config) Monitor { return &solo5{name: "hvt", binary: binary, cfg: cfg} }
func newSpt(binary string, cfg Config) Monitor { return &solo5{name: "spt", binary: binary, cfg: cfg} }

func (s *solo5) Name() string                 { return s.name }
func (s *solo5) Binary() string               { return s.binary }
func (s *solo5) NeedsKVM() bool               { return s.name == "hvt" }
func (s *solo5) Control() Control             { return ControlNone }
func (s *solo5) SupportsInheritedDisks() bool { return false }

// SupportsShare: solo5 tenders offer block and net devices only.
func (s *solo5) SupportsShare(rootfs.Kind) bool { return false }
func (s *solo5) DataPaths() []string            { return nil }

func (s *solo5) Args(g Guest) ([]string, error) {
	if g.Kernel == "" {
		return nil, fmt.Errorf("%s: no guest kernel", s.name)
	}
	if g.Initrd != "" && !BootsInitrd(s.name) {
		return nil, fmt.Errorf("%s: solo5 tenders cannot boot an initrd", s.name)
	}
	args := []string{s.binary, "--mem=" + strconv.Itoa(g.MemoryMB)}
	if g.Net != nil {
		name := g.Solo5Net
		if name == "" {
			name = "service"
		}
		args = append(args, "--net:"+name+"="+g.Net.Tap, "--net-mac:"+name+"="+g.Net.MAC)
	}
	for i, d := range g.Disks {
		// The guest's manifest names its one disk; solo5 attaches by name.
		name := d.ID
		if i == 0 && g.Solo5Block != "" {
			name = g.Solo5Block
		}
		// solo5's block devices are always writable.
		if d.ReadOnly {
			return nil, fmt.Errorf("solo5-%s cannot attach disk %s read-only", s.name, d.ID)
		}
		args = append(args, "--block:"+name+"="+d.Path)
	}
	args = append(args, g.Kernel)
	if g.Cmdline != "" {
		args = append(args, g.Cmdline)
	}
	return args, nil
}

func (s *solo5) Powerdown(context.Context, string) error { return ErrNoPowerdown }

// The first solo5 release whose hvt tender installs its own seccomp
// filter (spt always has: it is a seccomp sandbox).
const solo5SelfFilterMajor, solo5SelfFilterMinor = 0, 11

// FiltersItself: spt always; hvt from solo5 0.11, read from the tender's
// --version. A version that cannot be read counts as not filtering
// itself, so the tender gets the project's filter: the filter guards the
// host against a guest that escapes into the tender, and an unknown tender
// must not run unfiltered. Every solo5 release prints its version; a
// tender that does not and yet filters itself fails at its start (its own
// filter stacked on the project's), loudly, rather than running open.
func (s *solo5) FiltersItself(ctx context.Context, run Runner) bool {
	if s.name == "spt" {
		return true
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	out, err := run(exec.CommandContext(ctx, s.binary, "--version"))
	if err != nil && len(out) == 0 {
		return false
	}
	v, ok := parseSolo5Version(string(out))
	return ok && (v[0] > solo5SelfFilterMajor || (v[0] == solo5SelfFilterMajor && v[1] >= solo5SelfFilterMinor))
}

// solo5VersionRE finds the release in a tender's --version output, as in
// "solo5-hvt v0.9.3" or "solo5-hvt 0.10.1-3-gabc".
var solo5VersionRE = regexp.MustCompile(`\bv?(\d+)\.(\d+)(?:\.\d+)?`)

func parseSolo5Version(out string) ([2]int, bool) {
	m := solo5VersionRE.FindStringSubmatch(out)
	if m == nil {
		return [2]int{}, false
	}
	major, _ := strconv.Atoi(m[1])
	minor, _ := strconv.Atoi(m[2])
	return [2]int{major, minor}, true
}
