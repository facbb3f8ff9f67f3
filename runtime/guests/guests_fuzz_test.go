package guests

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/urunc-dev/containerd-shim-urunc-v2/rootfs"
)

// Every guest type's command line, rendered from an image's arguments: an
// argument is refused or carried as data; it never adds a control
// character, and never changes what the runtime set before the arguments
// (network, root, console). rumprun's JSON must also parse, with the
// arguments in its cmdline and the runtime's fields as they were.
func FuzzGuestCmdlines(f *testing.F) {
	for _, seed := range [][2]string{
		{"app", "x"}, {"app", "a\nb"}, {"app", `"},"net":{"addr":"6.6.6.6`}, {"app", "x -- netdev.ip=6.6.6.6"},
		{"app\x00", "y"}, {"/a b", "c"}, {"app", "it's"}, {"app", "\u2028"},
	} {
		f.Add(seed[0], seed[1])
	}
	net := &Net{Address: "198.18.0.2", Mask: "255.255.255.0", Gateway: "198.18.0.1", MAC: "02:00:00:00:00:01"}
	f.Fuzz(func(t *testing.T, app, arg string) {
		for name, g := range known {
			for _, root := range []rootfs.Root{{Kind: rootfs.KindNone}, {Kind: rootfs.KindInitrd}, {Kind: rootfs.KindBlock}} {
				req := func(args ...string) Request { return Request{Args: args, Net: net, Root: root} }
				benign, err := g.Cmdline(req("app", "x"))
				if err != nil {
					continue // this guest takes no such root
				}
				got, err := g.Cmdline(req(app, arg))
				if err != nil {
					continue
				}
				for _, r := range got {
					// linux single-quotes an argument with spaces or
					// tabs (urunc's convention); no other control passes.
					if (r < 0x20 || r == 0x7f) && !(name == "linux" && r == '\t') {
						t.Fatalf("%s: args %q %q put %q in the command line %q", name, app, arg, r, got)
					}
				}
				if name == "rumprun" {
					checkRumprunJSON(t, benign, got, app+" "+arg)
					continue
				}
				at := strings.Index(benign, "app")
				if at < 0 {
					// A guest that takes no arguments (mewz).
					if got != benign {
						t.Fatalf("%s: args %q %q changed a command line that has none: %q, want %q", name, app, arg, got, benign)
					}
					continue
				}
				// What precedes the arguments, without the separator a
				// guest leaves out when they are empty.
				if prefix := strings.TrimRight(benign[:at], " -"); !strings.HasPrefix(got, prefix) {
					t.Fatalf("%s: args %q %q changed what precedes them: %q, want the prefix %q", name, app, arg, got, prefix)
				}
			}
		}
	})
}

func checkRumprunJSON(t *testing.T, benign, got, cmdline string) {
	t.Helper()
	var b, g map[string]any
	if err := json.Unmarshal([]byte(benign), &b); err != nil {
		t.Fatalf("rumprun: %q is not JSON: %v", benign, err)
	}
	if err := json.Unmarshal([]byte(got), &g); err != nil {
		t.Fatalf("rumprun: %q is not JSON: %v", got, err)
	}
	if g["cmdline"] != cmdline {
		t.Fatalf("rumprun: cmdline %q, want %q", g["cmdline"], cmdline)
	}
	delete(b, "cmdline")
	delete(g, "cmdline")
	bj, _ := json.Marshal(b)
	gj, _ := json.Marshal(g)
	if string(bj) != string(gj) {
		t.Fatalf("rumprun: the arguments changed the runtime's fields: %s, want %s", gj, bj)
	}
}
