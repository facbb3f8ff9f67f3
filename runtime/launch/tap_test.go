package launch

import (
	"os"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// The tap is the monitor's: its user and its group, never a uid taken
// for a gid.
func TestTapOwnerAndGroup(t *testing.T) {
	c := Confinement{User: &specs.User{UID: 1000, GID: 2000}}
	if c.TapOwner() != 1000 || c.TapGroup() != 2000 {
		t.Fatalf("spec's user 1000:2000: tap %d:%d", c.TapOwner(), c.TapGroup())
	}
	var none Confinement
	if none.TapOwner() != uint32(os.Geteuid()) || none.TapGroup() != uint32(os.Getegid()) {
		t.Fatalf("no user: tap %d:%d, want the launcher's %d:%d", none.TapOwner(), none.TapGroup(), os.Geteuid(), os.Getegid())
	}
}
