// Command urunc-agent is the guest agent of containerd-shim-urunc-v2: PID 1
// of a Linux guest, in front of the app. The shim adds it to the guest's
// initrd as an archive of its own (with the app's config) and boots the
// kernel with rdinit= naming it, so the image is never changed.
//
// It mounts /proc, /sys and /dev, mounts the real root where the guest
// boots from a disk or a share and switches to it, sets the hostname, starts the app with
// the spec's args, env, cwd and identity, reaps every process, forwards
// the signals it gets to the app, and serves the shim on a virtio-serial
// port, or a vsock port where the monitor gives vsock instead
// (runtime/guestagent): the app's exit status (Wait), signals (Kill)
// and execs beside the app. When the app ends and the shim has its status (Shutdown), it
// powers the VM off. Where the shim is not there, or the kernel has no
// driver for the channel, it exits with the app's status instead: the kernel then
// prints it on the console as it does for any init, which the shim reads
// as it does for guests without the agent, so the status is never lost.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/containerd/ttrpc"
	"golang.org/x/sys/unix"

	"github.com/urunc-dev/containerd-shim-urunc-v2/runtime/guestagent"
	"github.com/urunc-dev/containerd-shim-urunc-v2/runtime/guestagent/agentapi"
)

// Bounds of the agent's waits for the shim.
const (
	// portWait bounds the wait for the virtio-serial port to appear: the
	// driver adds ports as the host announces them, just after boot.
	portWait = 3 * time.Second
	// deliverWait bounds the wait, once the app has ended, for the shim
	// to take its status.
	deliverWait = 10 * time.Second
)

func main() {
	if err := mountSystem(); err != nil {
		logf("%v", err)
	}
	cfg, err := readConfig(guestagent.ConfigPath)
	if err != nil {
		// Nothing to run: the kernel reports the exit on the console.
		logf("%v", err)
		os.Exit(127)
	}
	if data, err := os.ReadFile("/proc/cmdline"); err == nil {
		if root, ok := rootFromCmdline(string(data)); ok {
			if err := switchRoot(root); err != nil {
				// No root, no app: the kernel reports the status.
				logf("%v", err)
				os.Exit(statusNotStarted)
			}
		}
	}
	if cfg.Hostname != "" {
		if err := unix.Sethostname([]byte(cfg.Hostname)); err != nil {
			logf("set hostname %q: %v", cfg.Hostname, err)
		}
	}
	sup := newSupervisor()
	sup.forwardSignals()
	a := &agent{sup: sup, delivered: make(chan struct{})}
	status, serving := run(a, func() error { return sup.start(cfg) }, serve)
	if serving && a.waitDelivered(deliverWait) {
		unix.Sync()
		if err := unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF); err != nil {
			logf("power off: %v", err)
		}
	} else if serving {
		logf("the shim did not take the app's exit status (%d) within %s; ending with it for the console", status, deliverWait)
	}
	unix.Sync()
	os.Exit(int(status))
}

// run serves the shim and starts the app side by side, and returns the
// app's exit status once it has ended and whether the shim is served. The
// channel's port appears only once the host has announced it (polled),
// which the app does not wait for; what concerns the app waits for its
// start (supervisor.waitStarted).
func run(a *agent, start func() error, serve func(*agent) bool) (status uint32, serving bool) {
	served := make(chan bool, 1)
	go func() { served <- serve(a) }()
	if err := start(); err != nil {
		logf("start the app: %v", err)
	}
	status = a.sup.wait()
	return status, <-served
}

// serve serves the shim on the guest's channel, and says whether it
// does; without a channel the app's status goes by the console.
func serve(a *agent) bool {
	ln, err := guestChannel.listen()
	if err != nil {
		logf("%v; the app's exit status goes by the console", err)
		return false
	}
	srv, err := ttrpc.NewServer()
	if err != nil {
		ln.Close()
		logf("%v; the app's exit status goes by the console", err)
		return false
	}
	agentapi.RegisterAgentService(srv, a)
	go func() { _ = srv.Serve(context.Background(), ln) }()
	return true
}

// waitDelivered waits up to d for the shim to have the app's status.
func (a *agent) waitDelivered(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-a.delivered:
		return true
	case <-t.C:
		return false
	}
}

// logf writes one line to the console, which the shim copies to the
// container's log.
func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "urunc-agent: "+format+"\n", args...)
}

// readConfig reads the app's config the shim put in the agent's archive.
func readConfig(path string) (guestagent.Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return guestagent.Config{}, fmt.Errorf("the app's config: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, guestagent.MaxConfigBytes+1))
	if err != nil {
		return guestagent.Config{}, fmt.Errorf("the app's config %s: %w", path, err)
	}
	cfg, err := guestagent.ParseConfig(data)
	if err != nil {
		return cfg, fmt.Errorf("the app's config %s: %w", path, err)
	}
	return cfg, nil
}

// mountSystem mounts what an app expects of a Linux system: /proc, /sys,
// /dev, and /dev/pts for a terminal exec's pty. A mount already there
// (the kernel's own devtmpfs) is kept.
func mountSystem() error {
	var first error
	for _, m := range []struct {
		fstype, target string
		flags          uintptr
		data           string
	}{
		{"proc", "/proc", unix.MS_NOSUID | unix.MS_NOEXEC | unix.MS_NODEV, ""},
		{"sysfs", "/sys", unix.MS_NOSUID | unix.MS_NOEXEC | unix.MS_NODEV, ""},
		{"devtmpfs", "/dev", unix.MS_NOSUID, ""},
		{"devpts", "/dev/pts", unix.MS_NOSUID | unix.MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620"},
	} {
		if err := os.MkdirAll(m.target, 0o755); err != nil && first == nil {
			first = fmt.Errorf("mkdir %s: %w", m.target, err)
			continue
		}
		err := unix.Mount(m.fstype, m.target, m.fstype, m.flags, m.data)
		if err != nil && err != unix.EBUSY && first == nil {
			first = fmt.Errorf("mount %s on %s: %w", m.fstype, m.target, err)
		}
	}
	return first
}
