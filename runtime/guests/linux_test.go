package guests

import (
	"fmt"
	"strings"
	"testing"

	"github.com/urunc-dev/containerd-shim-urunc-v2/rootfs"
)

func TestLinuxCmdline(t *testing.T) {
	initrd := rootfs.Root{Kind: rootfs.KindInitrd}
	cases := []cmdlineCase{
		{
			name: "initrd with args",
			req:  Request{Args: []string{"/init", "echo", "hi"}, Root: initrd},
			want: "panic=-1 console=ttyS0 printk.time=1 i8042.noaux root=/dev/ram0 rw rdinit=/init -- echo hi",
		},
		{
			name: "argument with spaces is single-quoted",
			req:  Request{Args: []string{"/bin/app", "-g", "daemon off;"}, Root: initrd},
			want: "panic=-1 console=ttyS0 printk.time=1 i8042.noaux root=/dev/ram0 rw rdinit=/bin/app -- -g 'daemon off;'",
		},
		{
			// The agent reads the app from its own config: nothing of
			// the app, and no environment, is on the command line.
			name: "initrd with the guest agent",
			req: Request{Args: []string{"/init", "echo", "hi"}, Root: initrd, Agent: "/.urunc/agent",
				Process: Process{Env: []string{"lower_case=has spaces"}}},
			want: "panic=-1 console=ttyS0 printk.time=1 i8042.noaux root=/dev/ram0 rw acpi=noirq rdinit=/.urunc/agent",
		},
		{
			// The agent mounts the root the kernel's parameters name.
			name: "9p root with the guest agent",
			req:  Request{Args: []string{"/init"}, Root: rootfs.Root{Kind: rootfs.Kind9p, Tag: "fs0"}, Agent: "/.urunc/agent"},
			want: "panic=-1 console=ttyS0 printk.time=1 i8042.noaux root=fs0 rw rootfstype=9p rootflags=trans=virtio,version=9p2000.L,msize=5000000,cache=mmap,posixacl acpi=noirq rdinit=/.urunc/agent",
		},
		{
			name:    "the guest agent needs a root",
			req:     Request{Args: []string{"/init"}, Root: rootfs.Root{Kind: rootfs.KindNone}, Agent: "/.urunc/agent"},
			wantErr: "the guest agent needs a root to boot from",
		},
		{
			name: "block root",
			req:  Request{Args: []string{"/sbin/init"}, Root: rootfs.Root{Kind: rootfs.KindBlock}},
			want: "panic=-1 console=ttyS0 printk.time=1 i8042.noaux root=/dev/vda rw init=/sbin/init --",
		},
		{
			name: "read-only block root",
			req:  Request{Args: []string{"/sbin/init"}, Root: rootfs.Root{Kind: rootfs.KindBlock, ReadOnly: true}},
			want: "panic=-1 console=ttyS0 printk.time=1 i8042.noaux root=/dev/vda ro init=/sbin/init --",
		},
		{
			name: "9p root",
			req:  Request{Args: []string{"/init", "x"}, Root: rootfs.Root{Kind: rootfs.Kind9p, Tag: "fs0"}},
			want: "panic=-1 console=ttyS0 printk.time=1 i8042.noaux root=fs0 rw rootfstype=9p rootflags=trans=virtio,version=9p2000.L,msize=5000000,cache=mmap,posixacl init=/init -- x",
		},
		{
			name: "virtiofs root",
			req:  Request{Args: []string{"/init"}, Root: rootfs.Root{Kind: rootfs.KindVirtiofs, Tag: "fs0"}},
			want: "panic=-1 console=ttyS0 printk.time=1 i8042.noaux root=fs0 rw rootfstype=virtiofs init=/init --",
		},
		{
			name: "no root",
			req:  Request{Args: []string{"/app"}},
			want: "panic=-1 console=ttyS0 printk.time=1 i8042.noaux init=/app --",
		},
		{
			name: "network",
			req:  Request{Args: []string{"/init"}, Root: initrd, Net: &Net{Address: "198.18.0.2", Mask: "255.255.255.0", Gateway: "198.18.0.1"}},
			want: "panic=-1 console=ttyS0 printk.time=1 i8042.noaux root=/dev/ram0 rw ip=198.18.0.2::198.18.0.1:255.255.255.0:urunc:eth0:off rdinit=/init --",
		},
		{name: "no args", req: Request{}, wantErr: "no init to run"},
		// Injection: none of these may add a kernel parameter.
		{name: "newline", req: Request{Args: []string{"/app", "x\ninit=/bin/sh"}, Root: initrd}, wantErr: `argument 1 ("x\ninit=/bin/sh") holds '\n'`},
		{name: "double quote", req: Request{Args: []string{"/app", `a" init=/bin/sh "b`}, Root: initrd}, wantErr: `holds '"'`},
		{name: "single quote in a quoted argument", req: Request{Args: []string{"/app", "it's ' init=/bin/sh"}, Root: initrd}, wantErr: "spaces and a single quote"},
		{name: "single quote alone is fine", req: Request{Args: []string{"/app", "it's"}, Root: initrd}, want: "panic=-1 console=ttyS0 printk.time=1 i8042.noaux root=/dev/ram0 rw rdinit=/app -- it's"},
		// Bytes the kernel's parser takes for spaces beyond ASCII's.
		{name: "à in the init adds a kernel parameter", req: Request{Args: []string{"/voil\u00e0rdinit=/bin/sh", "x"}, Root: initrd}, wantErr: "byte 0xA0"},
		{name: "no-break space in the init", req: Request{Args: []string{"/a\u00a0ip=1.2.3.4::1.2.3.5:255.0.0.0"}, Root: initrd}, wantErr: "byte 0xA0"},
		{name: "lone 0xA0 byte in the init", req: Request{Args: []string{"/a\xa0panic=0"}, Root: initrd}, wantErr: "byte 0xA0"},
		{name: "dagger (E2 80 A0) in an argument", req: Request{Args: []string{"/app", "a\u2020b"}, Root: initrd}, wantErr: "byte 0xA0"},
		{name: "vertical tab", req: Request{Args: []string{"/a\vinit=/x"}, Root: initrd}, wantErr: "cannot carry"},
		{name: "form feed", req: Request{Args: []string{"/app", "a\fb"}, Root: initrd}, wantErr: "cannot carry"},
		{name: "carriage return", req: Request{Args: []string{"/a\rrdinit=/x"}, Root: initrd}, wantErr: "cannot carry"},
		{name: "other Latin-1 and UTF-8 is fine", req: Request{Args: []string{"/caf\u00e9", "na\u00efve", "\u65e5\u672c"}, Root: initrd}, want: "panic=-1 console=ttyS0 printk.time=1 i8042.noaux root=/dev/ram0 rw rdinit=/caf\u00e9 -- na\u00efve \u65e5\u672c"},
		{name: "unknown root", req: Request{Args: []string{"/a"}, Root: rootfs.Root{Kind: "nfs"}}, wantErr: `unknown root kind "nfs"`},
		// The environment reaches any init as the kernel's unknown
		// KEY=VALUE parameters; the hostname through ip=.
		{
			name: "environment and hostname",
			req: Request{Args: []string{"/init", "x"}, Root: initrd, Hostname: "web-0",
				Net:     &Net{Address: "198.18.0.2", Mask: "255.255.255.0", Gateway: "198.18.0.1"},
				Process: Process{Env: []string{"PATH=/bin:/usr/bin", "GREETING=hello pod", "EMPTY=", "_X1=é"}}},
			want: `panic=-1 console=ttyS0 printk.time=1 i8042.noaux root=/dev/ram0 rw ip=198.18.0.2::198.18.0.1:255.255.255.0:web-0:eth0:off PATH=/bin:/usr/bin GREETING="hello pod" EMPTY= _X1=é rdinit=/init -- x`,
		},
		{name: "a value with 0xA0 is quoted", req: Request{Args: []string{"/init"}, Root: initrd, Process: Process{Env: []string{"A=voil\u00e0"}}},
			want: "panic=-1 console=ttyS0 printk.time=1 i8042.noaux root=/dev/ram0 rw A=\"voil\u00e0\" rdinit=/init --"},
		{name: "env name with a dot", req: Request{Args: []string{"/init"}, Root: initrd, Process: Process{Env: []string{"a.b=1"}}}, wantErr: `environment variable "a.b"`},
		{name: "env name lowercase", req: Request{Args: []string{"/init"}, Root: initrd, Process: Process{Env: []string{"init=/bin/sh"}}}, wantErr: `"init" starts with a lowercase letter`},
		{name: "env name with a space", req: Request{Args: []string{"/init"}, Root: initrd, Process: Process{Env: []string{"A B=1"}}}, wantErr: `environment variable "A B"`},
		{name: "env name with a digit first", req: Request{Args: []string{"/init"}, Root: initrd, Process: Process{Env: []string{"1A=1"}}}, wantErr: `environment variable "1A"`},
		{name: "env without =", req: Request{Args: []string{"/init"}, Root: initrd, Process: Process{Env: []string{"A"}}}, wantErr: "has no '='"},
		{name: "env value with a double quote", req: Request{Args: []string{"/init"}, Root: initrd, Process: Process{Env: []string{`A=x" rdinit=/bin/sh "`}}}, wantErr: `environment variable A holds '"'`},
		{name: "env value with a newline", req: Request{Args: []string{"/init"}, Root: initrd, Process: Process{Env: []string{"A=x\nrdinit=/bin/sh"}}}, wantErr: `environment variable A holds '\n'`},
		{name: "too many env", req: Request{Args: []string{"/init"}, Root: initrd, Process: Process{Env: manyEnv(31)}}, wantErr: "31 environment variables, more than the 30"},
		{name: "hostname with a colon", req: Request{Args: []string{"/init"}, Root: initrd, Hostname: "a:b",
			Net: &Net{Address: "198.18.0.2", Mask: "255.255.255.0"}}, wantErr: `hostname "a:b" holds ':'`},
		{name: "command line too long", req: Request{Args: []string{"/init", strings.Repeat("x", 2000)}, Root: initrd}, wantErr: "more than the 2047 the kernel keeps"},
	}
	for i := range cases {
		cases[i].guest = linux{}
	}
	checkCmdlines(t, cases)
}

func TestLinuxSupportsFS(t *testing.T) {
	for fs, want := range map[string]bool{"ext4": true, "ext2": true, "9p": true, "virtiofs": true, "xfs": false, "btrfs": false} {
		if got := (linux{}).SupportsFS(fs); got != want {
			t.Errorf("SupportsFS(%q) = %v, want %v", fs, got, want)
		}
	}
}

func TestForUnknownType(t *testing.T) {
	_, err := For("rumprun2")
	if err == nil || !strings.Contains(err.Error(), `unknown unikernelType "rumprun2"`) || !strings.Contains(err.Error(), "linux") {
		t.Fatalf("err = %v", err)
	}
}

// urunc's urunit takes its environment, identity and block volumes from a
// config file retained from the initrd, only where the root is not
// itself an initrd.
func TestLinuxUrunitConfig(t *testing.T) {
	req := Request{
		Args:    []string{"/urunit", "/bin/app"},
		Root:    rootfs.Root{Kind: rootfs.KindBlock},
		Volumes: []rootfs.Volume{{ID: "vol7", MountPoint: "/data"}},
		Process: Process{Env: []string{"A=1", "B=two words"}, UID: 1000, GID: 100, Cwd: "/srv"},
	}
	got := string(linux{}.InitConfig(req))
	want := "UES\nA=1\nB=two words\nUEE\nUCS\nUID:1000\nGID:100\nWD:/srv\nUCE\nUBS\nID: vol7\nMP: /data\nUBE\n"
	if got != want {
		t.Fatalf("config\n%q\nwant\n%q", got, want)
	}
	cmdline, err := linux{}.Cmdline(req)
	if err != nil {
		t.Fatal(err)
	}
	if want := "root=/dev/vda rw retain_initrd URUNIT_CONFIG=/sys/firmware/initrd init=/urunit -- /bin/app"; !strings.Contains(cmdline, want) {
		t.Fatalf("cmdline %q lacks %q", cmdline, want)
	}
	for _, r := range []Request{
		{Args: []string{"/bin/app"}, Root: rootfs.Root{Kind: rootfs.KindBlock}},
		{Args: []string{"/urunit"}, Root: rootfs.Root{Kind: rootfs.KindInitrd}},
	} {
		if c := (linux{}).InitConfig(r); c != nil {
			t.Fatalf("%+v: config %q, want none", r, c)
		}
	}
}

func manyEnv(n int) []string {
	var env []string
	for i := range n {
		env = append(env, fmt.Sprintf("V%d=%d", i, i))
	}
	return env
}
