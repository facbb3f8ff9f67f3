package guests

import (
	"strings"
	"testing"
)

// Whatever the app's arguments, a rendered command line holds the same
// kernel parameters before "--": an argument can never add one.
func FuzzLinuxCmdlineArgs(f *testing.F) {
	for _, seed := range [][2]string{
		{"/init", "echo hi"}, {"/app panic=0", "x"}, {"/app", "x\ninit=/bin/sh"},
		{"/app", `a" init=/bin/sh "b`}, {"/app", "it's ' rw init=/x"}, {"/a\tb", "c"},
	} {
		f.Add(seed[0], seed[1])
	}
	f.Fuzz(func(t *testing.T, app, arg string) {
		req := Request{Args: []string{app, arg, "last"}, Root: Root{Kind: RootBlock}}
		got, err := linux{}.Cmdline(req)
		if err != nil {
			return
		}
		before, _, ok := strings.Cut(got, " -- ")
		if !ok {
			t.Fatalf("no \" -- \" in %q", got)
		}
		// The kernel splits on spaces and tabs (and knows no single
		// quotes); the renderer refuses the rest.
		fields := strings.FieldsFunc(before, func(r rune) bool { return r == ' ' || r == '\t' })
		want := []string{"panic=-1", "console=ttyS0", "printk.time=1", "root=/dev/vda", "rw"}
		if len(fields) != len(want)+1 || strings.Join(fields[:len(want)], " ") != strings.Join(want, " ") ||
			!strings.HasPrefix(fields[len(want)], "init=") {
			t.Fatalf("args %q %q changed the kernel's parameters: %q", app, arg, before)
		}
	})
}
