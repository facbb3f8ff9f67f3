package runtime

import (
	"strings"
	"testing"
)

func TestLinuxCmdline(t *testing.T) {
	tests := []struct {
		name    string
		req     BootRequest
		want    string
		wantErr string
	}{
		{
			name: "initrd with args",
			req:  BootRequest{Args: []string{"/init", "echo", "hi"}, HasInitrd: true},
			want: "panic=-1 console=ttyS0 root=/dev/ram0 rw rdinit=/init -- echo hi",
		},
		{
			name: "argument with spaces is single-quoted",
			req:  BootRequest{Args: []string{"/bin/app", "-g", "daemon off;"}, HasInitrd: true},
			want: "panic=-1 console=ttyS0 root=/dev/ram0 rw rdinit=/bin/app -- -g 'daemon off;'",
		},
		{
			name: "no initrd boots a block root",
			req:  BootRequest{Args: []string{"/sbin/init"}},
			want: "panic=-1 console=ttyS0 root=/dev/vda rw init=/sbin/init --",
		},
		{
			name: "network",
			req:  BootRequest{Args: []string{"/init"}, HasInitrd: true, Net: &GuestNet{Address: "198.18.0.2", Mask: "255.255.255.0", Gateway: "198.18.0.1"}},
			want: "panic=-1 console=ttyS0 root=/dev/ram0 rw ip=198.18.0.2::198.18.0.1:255.255.255.0:urunc:eth0:off rdinit=/init --",
		},
		{name: "no args", req: BootRequest{}, wantErr: "no init to run"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := linuxGuest{}.Cmdline(tc.req)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Fatalf("got  %q\nwant %q", got, tc.want)
			}
		})
	}
}

func TestGuestForUnknownType(t *testing.T) {
	_, err := guestFor("rumprun2")
	if err == nil || !strings.Contains(err.Error(), `unknown unikernelType "rumprun2"`) || !strings.Contains(err.Error(), "linux") {
		t.Fatalf("err = %v", err)
	}
}
