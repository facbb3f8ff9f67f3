package guests

import (
	"strings"
	"testing"

	"github.com/urunc-dev/containerd-shim-urunc-v2/rootfs"
)

// Whatever the app's arguments, a rendered command line holds the same
// kernel parameters before "--": an argument can never add one.
func FuzzLinuxCmdlineArgs(f *testing.F) {
	for _, seed := range [][2]string{
		{"/init", "echo hi"}, {"/app panic=0", "x"}, {"/app", "x\ninit=/bin/sh"},
		{"/app", `a" init=/bin/sh "b`}, {"/app", "it's ' rw init=/x"}, {"/a\tb", "c"},
		{"/voil\u00e0 rdinit=/bin/sh", "x"}, {"/a\xa0ip=1.2.3.4", "x"}, {"/a", "b\u00a0c"}, {"/a\vb", "c"},
	} {
		f.Add(seed[0], seed[1])
	}
	f.Fuzz(func(t *testing.T, app, arg string) {
		req := Request{Args: []string{app, arg, "last"}, Root: rootfs.Root{Kind: rootfs.KindBlock}}
		got, err := linux{}.Cmdline(req)
		if err != nil {
			return
		}
		before, _, ok := strings.Cut(got, " -- ")
		if !ok {
			t.Fatalf("no \" -- \" in %q", got)
		}
		// Split as the kernel's own parser does, byte by byte.
		fields := kernelArgs(before)
		want := []string{"panic=-1", "console=ttyS0", "printk.time=1", "i8042.noaux", "root=/dev/vda", "rw"}
		if len(fields) != len(want)+1 || strings.Join(fields[:len(want)], " ") != strings.Join(want, " ") ||
			!strings.HasPrefix(fields[len(want)], "init=") {
			t.Fatalf("args %q %q changed the kernel's parameters: %q", app, arg, before)
		}
	})
}

// kernelIsSpace is the kernel's isspace (lib/ctype.c's _ctype table): the
// ASCII white space 0x09 to 0x0D and 0x20, and Latin-1's 0xA0.
func kernelIsSpace(b byte) bool {
	return b == ' ' || (b >= '\t' && b <= '\r') || b == 0xA0
}

// kernelArgs splits a command line as the kernel's next_arg does: on its
// spaces, except between double quotes, which it does not keep.
func kernelArgs(cmdline string) []string {
	var args []string
	var cur []byte
	inArg, inQuote := false, false
	for i := 0; i < len(cmdline); i++ {
		b := cmdline[i]
		switch {
		case b == '"':
			inQuote, inArg = !inQuote, true
		case kernelIsSpace(b) && !inQuote:
			if inArg {
				args = append(args, string(cur))
			}
			cur, inArg = cur[:0], false
		default:
			cur, inArg = append(cur, b), true
		}
	}
	if inArg {
		args = append(args, string(cur))
	}
	return args
}

// Whatever the container's environment, each variable is one kernel
// parameter, the variable itself once the kernel strips its quotes, and
// none adds or changes another parameter.
func FuzzLinuxCmdlineEnv(f *testing.F) {
	for _, seed := range []string{
		"A=b", "GREETING=hello pod", `A=x" init=/bin/sh "`, "A=x\ninit=/bin/sh", "A=voil\u00e0 rdinit=/x",
		"init=/bin/sh", "a.b=c", "A=\t", "A= rdinit=/x", "A=", "=x", "A=\xa0rw",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, e string) {
		req := Request{Args: []string{"/init", "x"}, Root: rootfs.Root{Kind: rootfs.KindBlock}, Process: Process{Env: []string{e}}}
		got, err := linux{}.Cmdline(req)
		if err != nil {
			return
		}
		before, _, ok := strings.Cut(got, " -- ")
		if !ok {
			t.Fatalf("no \" -- \" in %q", got)
		}
		fields := kernelArgs(before)
		want := []string{"panic=-1", "console=ttyS0", "printk.time=1", "i8042.noaux", "root=/dev/vda", "rw", e, "init=/init"}
		if strings.Join(fields, "\x00") != strings.Join(want, "\x00") {
			t.Fatalf("environment %q: the kernel reads %q, want %q", e, fields, want)
		}
	})
}
