package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// The monitors other than qemu are played for the test of their launch
// through containerd (integration's TestKVMMonitorsUnderTheStandIn):
// firecracker and cloud-hypervisor, which need KVM and do not install
// here, and solo5's tenders. As each, the stand-in reads its guest from
// that monitor's command line or config file, opens what it names in its
// confined root and prints it (STANDIN_MONITOR; with a NIC, STANDIN_NET),
// and serves the monitor's control API: the power-down request the shim
// sends for a stop ends it with status 0 (STANDIN_POWERDOWN).

// playMonitor tells from argv which monitor the stand-in is run as, plays
// its part, and returns the guest's arguments.
func playMonitor(args []string) ([]string, error) {
	if len(args) > 0 && strings.HasPrefix(args[0], "--mem=") {
		return playSolo5(args)
	}
	if len(args) == 1 && args[0] == "--version" {
		// What the solo5 0.9 tenders answer; the shim reads it to tell
		// whether hvt filters itself.
		fmt.Println("solo5-hvt v0.9.3 (stand-in)")
		os.Exit(0)
	}
	flags := map[string]string{}
	for i := 0; i+1 < len(args); i++ {
		if strings.HasPrefix(args[i], "-") {
			flags[args[i]] = args[i+1]
		}
	}
	var cmdline string
	var err error
	switch {
	case flags["--config-file"] != "":
		cmdline, err = playFirecracker(flags)
	case flags["--api-socket"] != "":
		cmdline, err = playCloudHypervisor(args, flags)
	default: // qemu
		cmdline = flags["-append"]
	}
	_, guestArgs, _ := strings.Cut(cmdline, " -- ")
	return strings.Fields(guestArgs), err
}

// solo5's tenders (hvt, spt): options, the kernel, then the guest's
// command line: a mirage guest's options (--ipv4=...) before its
// arguments, or rumprun's JSON ({"cmdline": ..., "net": ...}).
func playSolo5(args []string) ([]string, error) {
	tap, kernel, cmdline := "", "", ""
	for _, a := range args {
		switch {
		case kernel != "":
			cmdline = strings.TrimSpace(cmdline + " " + a)
		case strings.HasPrefix(a, "--net:"):
			_, tap, _ = strings.Cut(a, "=")
		case !strings.HasPrefix(a, "--"):
			kernel = a
		}
	}
	guestArgs, netArgs, err := solo5GuestArgs(cmdline)
	if err != nil {
		return nil, err
	}
	if err := announce("solo5", kernel, "", tap, netArgs); err != nil {
		return nil, err
	}
	if _, err := os.Stat("/dev/kvm"); err == nil {
		// hvt (spt has no /dev/kvm) ends on SIGTERM and SIGINT as its
		// tender does: "Exiting on signal N", status 1. spt installs no
		// handler, and as its pid namespace's init ignores them.
		sigs := make(chan os.Signal, 1)
		signal.Notify(sigs, unix.SIGTERM, unix.SIGINT)
		go func() {
			s := (<-sigs).(unix.Signal)
			fmt.Fprintf(os.Stderr, "solo5-hvt: Exiting on signal %d\n", int(s))
			os.Exit(1)
		}()
	}
	return guestArgs, nil
}

// solo5GuestArgs splits a solo5 guest's command line into its arguments
// and its network arguments.
func solo5GuestArgs(cmdline string) (args, netArgs []string, err error) {
	if !strings.HasPrefix(cmdline, "{") {
		args = strings.Fields(cmdline)
		for len(args) > 0 && strings.HasPrefix(args[0], "--") {
			args = args[1:]
		}
		return args, netArgsOf(cmdline), nil
	}
	var rumprun struct {
		Cmdline string `json:"cmdline"`
		Net     *struct {
			Addr string `json:"addr"`
			Mask string `json:"mask"`
			Gw   string `json:"gw"`
		} `json:"net"`
	}
	if err := json.Unmarshal([]byte(cmdline), &rumprun); err != nil {
		return nil, nil, fmt.Errorf("solo5: rumprun's command line %q: %w", cmdline, err)
	}
	if n := rumprun.Net; n != nil {
		netArgs = []string{"addr=" + n.Addr + "/" + n.Mask, "gw=" + n.Gw}
	}
	return strings.Fields(rumprun.Cmdline), netArgs, nil
}

// netArgsOf picks the network arguments of a guest's command line:
// Linux's ip=, mirage's --ipv4 and --ipv4-gateway.
func netArgsOf(cmdline string) []string {
	var out []string
	for _, f := range strings.Fields(cmdline) {
		if strings.HasPrefix(f, "ip=") || strings.HasPrefix(f, "--ipv4") {
			out = append(out, f)
		}
	}
	return out
}

// firecracker: the VM is described by --config-file; the API socket is a
// path it binds itself (--api-sock).
func playFirecracker(flags map[string]string) (string, error) {
	data, err := os.ReadFile(flags["--config-file"])
	if err != nil {
		return "", fmt.Errorf("firecracker config: %w", err)
	}
	var cfg struct {
		BootSource struct {
			Kernel  string `json:"kernel_image_path"`
			Initrd  string `json:"initrd_path"`
			Cmdline string `json:"boot_args"`
		} `json:"boot-source"`
		NICs []struct {
			Tap string `json:"host_dev_name"`
		} `json:"network-interfaces"`
		Drives []struct {
			ID       string `json:"drive_id"`
			Path     string `json:"path_on_host"`
			ReadOnly bool   `json:"is_read_only"`
		} `json:"drives"`
		Vsock *struct {
			UDSPath string `json:"uds_path"`
		} `json:"vsock"`
	}
	if err := json.Unmarshal(data, &cfg); err != nil {
		return "", fmt.Errorf("firecracker config %s: %w", flags["--config-file"], err)
	}
	b := cfg.BootSource
	tap := ""
	if len(cfg.NICs) > 0 {
		tap = cfg.NICs[0].Tap
	}
	if err := announce("firecracker", b.Kernel, b.Initrd, tap, netArgsOf(b.Cmdline)); err != nil {
		return "", err
	}
	for _, d := range cfg.Drives {
		if err := openDrive("firecracker", d.ID, d.Path, d.ReadOnly); err != nil {
			return "", err
		}
	}
	if cfg.Vsock != nil {
		if err := serveHybridVsock("firecracker", cfg.Vsock.UDSPath); err != nil {
			return "", err
		}
	}
	if _, target, ok := strings.Cut(b.Cmdline, "-- symlink-api "); ok {
		// A monitor taken over by its guest: instead of its API, a
		// symlink to a socket outside its root.
		if err := os.Symlink(strings.TrimSpace(target), flags["--api-sock"]); err != nil {
			return "", fmt.Errorf("firecracker --api-sock as a symlink: %w", err)
		}
		return b.Cmdline, nil
	}
	l, err := net.Listen("unix", flags["--api-sock"])
	if err != nil {
		return "", fmt.Errorf("firecracker --api-sock: %w", err)
	}
	go servePowerdown(l, "firecracker", "/actions", "SendCtrlAltDel")
	return b.Cmdline, nil
}

// cloud-hypervisor: the VM is on its command line; the API socket is
// inherited listening (--api-socket fd=N).
func playCloudHypervisor(args []string, flags map[string]string) (string, error) {
	tap := options(flags["--net"])["tap"]
	if err := announce("clh", flags["--kernel"], flags["--initramfs"], tap, netArgsOf(flags["--cmdline"])); err != nil {
		return "", err
	}
	for i := 0; i+1 < len(args); i++ {
		opts := options(args[i+1])
		switch args[i] {
		case "--disk":
			if err := openDrive("clh", opts["id"], opts["path"], false); err != nil {
				return "", err
			}
		case "--fs":
			if err := connectFS("clh", opts["tag"], opts["socket"], flags["--memory"]); err != nil {
				return "", err
			}
		}
	}
	if v := flags["--vsock"]; v != "" {
		if err := serveHybridVsock("clh", vsockSocket(v)); err != nil {
			return "", err
		}
	}
	fd, err := strconv.Atoi(strings.TrimPrefix(flags["--api-socket"], "fd="))
	if err != nil {
		return "", fmt.Errorf("clh --api-socket %q: want fd=N", flags["--api-socket"])
	}
	l, err := net.FileListener(os.NewFile(uintptr(fd), "api-socket"))
	if err != nil {
		return "", fmt.Errorf("clh --api-socket fd=%d: %w", fd, err)
	}
	go servePowerdown(l, "clh", "/api/v1/vm.power-button", "")
	return flags["--cmdline"], nil
}

// announce checks that what the monitor would open is in its root: the
// kernel and initrd it was given, whether /dev/kvm is there (as a
// character device), its seccomp mode, and, with a NIC, the tap, attached
// through /dev/net/tun as these monitors attach theirs (STANDIN_NET, with
// the guest's network arguments).
func announce(monitor, kernel, initrd, tap string, netArgs []string) error {
	for _, f := range []string{kernel, initrd} {
		if f == "" {
			continue
		}
		if _, err := os.ReadFile(f); err != nil {
			return fmt.Errorf("%s: %w", monitor, err)
		}
	}
	kvm := "no"
	if st, err := os.Stat("/dev/kvm"); err == nil {
		if st.Mode()&os.ModeCharDevice == 0 {
			return fmt.Errorf("%s: /dev/kvm is %s, not a character device", monitor, st.Mode())
		}
		kvm = "yes"
	}
	// The seccomp mode it runs in (2: a filter), read without /proc,
	// which its root lacks.
	mode, err := unix.PrctlRetInt(unix.PR_GET_SECCOMP, 0, 0, 0, 0)
	if err != nil {
		return fmt.Errorf("%s: PR_GET_SECCOMP: %w", monitor, err)
	}
	fmt.Printf("STANDIN_MONITOR %s kernel %s initrd %s kvm %s seccomp %d\n", monitor, kernel, initrd, kvm, mode)
	if tap == "" {
		return nil
	}
	if err := attachTap(tap); err != nil {
		return fmt.Errorf("%s: tap %s: %w", monitor, tap, err)
	}
	fmt.Printf("STANDIN_NET %s %s attached %s\n", monitor, tap, strings.Join(netArgs, " "))
	return nil
}

// attachTap opens /dev/net/tun for the tap as firecracker and
// cloud-hypervisor do. The descriptor stays open for the process's life,
// as the monitor's does.
func attachTap(name string) error {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open /dev/net/tun: %w", err)
	}
	ifr, err := unix.NewIfreq(name)
	if err == nil {
		ifr.SetUint16(unix.IFF_TAP | unix.IFF_NO_PI | unix.IFF_VNET_HDR)
		err = unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr)
	}
	if err != nil {
		unix.Close(fd)
		return fmt.Errorf("TUNSETIFF: %w", err)
	}
	return nil
}

// options splits cloud-hypervisor's key=value,key=value option lists.
func options(s string) map[string]string {
	out := map[string]string{}
	for _, kv := range strings.Split(s, ",") {
		k, v, _ := strings.Cut(kv, "=")
		out[k] = v
	}
	return out
}

// openDrive opens a disk the monitor was given as it would, and says what
// it holds: ext4 (its superblock's magic) or raw (STANDIN_DRIVE).
func openDrive(monitor, id, path string, readOnly bool) error {
	flag := os.O_RDWR
	if readOnly {
		flag = os.O_RDONLY
	}
	f, err := os.OpenFile(path, flag, 0)
	if err != nil {
		return fmt.Errorf("%s: drive %s: %w", monitor, id, err)
	}
	defer f.Close()
	kind := "raw"
	magic := make([]byte, 2)
	if _, err := f.ReadAt(magic, 1024+56); err == nil && magic[0] == 0x53 && magic[1] == 0xef {
		kind = "ext4"
	}
	fmt.Printf("STANDIN_DRIVE %s %s %s %s\n", monitor, id, path, kind)
	return nil
}

// connectFS connects to virtiofsd's vhost-user socket, as the monitor
// does, and keeps the connection for the process's life (virtiofsd serves
// one and ends with it). Guest memory must be shared for virtiofsd to map
// it (STANDIN_FS, with the --memory option).
func connectFS(monitor, tag, socket, memory string) error {
	// A raw descriptor: a net.Conn nobody holds would be closed by its
	// finalizer.
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("%s: fs %s: %w", monitor, tag, err)
	}
	if err := unix.Connect(fd, &unix.SockaddrUnix{Name: socket}); err != nil {
		return fmt.Errorf("%s: fs %s: connect %s: %w", monitor, tag, socket, err)
	}
	fmt.Printf("STANDIN_FS %s %s connected memory %s\n", monitor, tag, memory)
	return nil
}

// servePowerdown answers the monitor's API as the shim uses it: a PUT to
// path (whose body holds want) ends the guest cleanly; anything else is
// 400, as the real APIs answer a request they do not know.
func servePowerdown(l net.Listener, monitor, path, want string) {
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(io.LimitReader(r.Body, 4096))
		if r.Method != http.MethodPut || r.URL.Path != path || !strings.Contains(string(body), want) {
			fmt.Printf("STANDIN_API %s %s %s: refused\n", monitor, r.Method, r.URL.Path)
			http.Error(w, "unknown request", http.StatusBadRequest)
			return
		}
		fmt.Println("STANDIN_POWERDOWN", monitor)
		w.WriteHeader(http.StatusNoContent)
		// The guest powers off after the answer, as a real one does.
		go func() {
			time.Sleep(100 * time.Millisecond)
			os.Exit(0)
		}()
	})
	if err := http.Serve(l, handler); err != nil && !errors.Is(err, net.ErrClosed) {
		fmt.Fprintln(os.Stderr, "standin-monitor: serve the API:", err)
	}
}
