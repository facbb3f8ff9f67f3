package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// playMonitor tells from argv which monitor the stand-in is run as and
// returns the guest command line it was given. As firecracker or
// cloud-hypervisor it first checks its confined root and starts serving
// the power-down request on the control socket it was given.
func playMonitor(args []string) (string, error) {
	flags := map[string]string{}
	for i := 0; i+1 < len(args); i++ {
		if strings.HasPrefix(args[i], "-") {
			flags[args[i]] = args[i+1]
		}
	}
	switch {
	case flags["--config-file"] != "":
		return playFirecracker(flags)
	case flags["--api-socket"] != "":
		return playCloudHypervisor(flags)
	}
	return flags["-append"], nil // qemu
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
	}
	if err := json.Unmarshal(data, &cfg); err != nil {
		return "", fmt.Errorf("firecracker config %s: %w", flags["--config-file"], err)
	}
	b := cfg.BootSource
	tap := ""
	if len(cfg.NICs) > 0 {
		tap = cfg.NICs[0].Tap
	}
	if err := announce("firecracker", b.Kernel, b.Initrd, tap, b.Cmdline); err != nil {
		return "", err
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
func playCloudHypervisor(flags map[string]string) (string, error) {
	tap := ""
	for _, opt := range strings.Split(flags["--net"], ",") {
		if v, ok := strings.CutPrefix(opt, "tap="); ok {
			tap = v
		}
	}
	if err := announce("clh", flags["--kernel"], flags["--initramfs"], tap, flags["--cmdline"]); err != nil {
		return "", err
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
// kernel and initrd it was given, /dev/kvm as a character device, and,
// with a NIC, the tap, attached through /dev/net/tun as both monitors
// attach theirs (STANDIN_NET, with the guest's ip= argument).
func announce(monitor, kernel, initrd, tap, cmdline string) error {
	for _, f := range []string{kernel, initrd} {
		if f == "" {
			continue
		}
		if _, err := os.ReadFile(f); err != nil {
			return fmt.Errorf("%s: %w", monitor, err)
		}
	}
	st, err := os.Stat("/dev/kvm")
	if err != nil {
		return fmt.Errorf("%s: %w", monitor, err)
	}
	if st.Mode()&os.ModeCharDevice == 0 {
		return fmt.Errorf("%s: /dev/kvm is %s, not a character device", monitor, st.Mode())
	}
	fmt.Printf("STANDIN_MONITOR %s kernel %s initrd %s /dev/kvm\n", monitor, kernel, initrd)
	if tap == "" {
		return nil
	}
	if err := attachTap(tap); err != nil {
		return fmt.Errorf("%s: tap %s: %w", monitor, tap, err)
	}
	ip := ""
	for _, f := range strings.Fields(cmdline) {
		if strings.HasPrefix(f, "ip=") {
			ip = f
		}
	}
	fmt.Printf("STANDIN_NET %s %s attached %s\n", monitor, tap, ip)
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
	if err != nil {
		return err
	}
	ifr.SetUint16(unix.IFF_TAP | unix.IFF_NO_PI | unix.IFF_VNET_HDR)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		return fmt.Errorf("TUNSETIFF: %w", err)
	}
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
