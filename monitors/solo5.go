package monitors

import (
	"context"
	"fmt"
	"strconv"
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

func (s *solo5) Name() string          { return s.name }
func (s *solo5) Binary() string        { return s.binary }
func (s *solo5) NeedsKVM() bool        { return s.name == "hvt" }
func (s *solo5) SupportsControl() bool { return false }

// SupportsShare: solo5 tenders offer block and net devices only.
func (s *solo5) SupportsShare(string) bool { return false }
func (s *solo5) DataPaths() []string       { return nil }

func (s *solo5) Args(g Guest) ([]string, error) {
	if g.Kernel == "" {
		return nil, fmt.Errorf("%s: no guest kernel", s.name)
	}
	if g.Initrd != "" {
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
		args = append(args, "--block:"+name+"="+d.Path)
	}
	args = append(args, g.Kernel)
	if g.Cmdline != "" {
		args = append(args, g.Cmdline)
	}
	return args, nil
}

func (s *solo5) Powerdown(context.Context, string) error { return ErrNoPowerdown }
