package network

import (
	"testing"
)

func TestChooseLink(t *testing.T) {
	c := func(names ...string) []linkCandidate {
		var out []linkCandidate
		for _, n := range names {
			out = append(out, linkCandidate{name: n})
		}
		return out
	}
	tests := []struct {
		name       string
		candidates []linkCandidate
		want       string
	}{
		{"eth0 among others", c("net1", "eth0", "net2"), "eth0"},
		{"the only interface", c("ens3"), "ens3"},
		{"several without eth0", c("net1", "net2"), ""},
		{"none (loopback only)", nil, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := chooseLink(tc.candidates)
			if (got == nil) != (tc.want == "") || (got != nil && got.name != tc.want) {
				t.Fatalf("chooseLink = %+v, want %q", got, tc.want)
			}
		})
	}
}

func TestTapNameIsUniqueAndFitsIFNAMSIZ(t *testing.T) {
	a, b := tapName("container-a"), tapName("container-b")
	if a == b {
		t.Fatalf("two containers share tap name %s", a)
	}
	for _, n := range []string{a, b, tapName(string(make([]byte, 300)))} {
		if len(n) > 15 {
			t.Fatalf("tap name %q is longer than IFNAMSIZ-1", n)
		}
	}
}
