package unikernel

import (
	"context"
	"fmt"
	"os/exec"

	"github.com/containerd/containerd/v2/pkg/sys/reaper"
	"github.com/containerd/log"

	"github.com/urunc-dev/containerd-shim-urunc-v2/internal/annotation"
	"github.com/urunc-dev/containerd-shim-urunc-v2/internal/kernelimage"
	"github.com/urunc-dev/containerd-shim-urunc-v2/monitors"
	"github.com/urunc-dev/containerd-shim-urunc-v2/rootfs"
	"github.com/urunc-dev/containerd-shim-urunc-v2/runtime/config"
)

// agentChannelDriver is what the agent's channel needs built into the
// guest's kernel: the virtio console for a virtio-serial port, virtio's
// vsock transport for hybrid vsock.
func agentChannelDriver(t monitors.AgentTransport) kernelimage.Feature {
	if t == monitors.AgentHybridVsock {
		return kernelimage.VirtioVsock
	}
	return kernelimage.VirtioConsole
}

// kernelTakesAgent tells, at Create, whether the guest's kernel (binary,
// a path in the image at rootfsDir) has driver, which the agent's
// channel needs. A
// kernel that lacks the driver boots without the agent, as a guest
// without it (the agent could only say so on the console, after a boot
// that bought nothing), and the shim's log names the option and the file;
// a kernel that cannot be told boots with the agent, whose own check at
// run time then names the option. The verdict is kept in the host's state
// dir by the file's SHA-256: a kernel of the same contents is hashed, not
// decompressed again, at the next Create.
func kernelTakesAgent(ctx context.Context, host config.HostConfig, id, rootfsDir, binary string, driver kernelimage.Feature) bool {
	logger := log.G(ctx).WithField("id", id)
	// The same open as the kernel's check for the plan: inside the
	// rootfs, a regular file only, no device node ever opened.
	f, err := rootfs.OpenInRootfs(rootfsDir, binary, "guest kernel ("+annotation.Prefix+"binary)")
	if err != nil {
		logger.WithError(err).Info("guest agent: the guest kernel was not checked for its channel")
		return true
	}
	defer f.Close()
	v, err := kernelimage.CheckFile(ctx, f, driver, host.StateDir(), kernelimage.Options{Start: startReaped})
	switch v {
	case kernelimage.Absent:
		logger.Warnf("guest agent: the guest kernel %s lacks %s=y (built in; a module cannot serve the agent's channel): the guest boots without the agent, its exit status read from the console, SIGTERM pressing the power button, exec refused",
			binary, driver.Option)
		return false
	case kernelimage.Unknown:
		logger.WithError(err).Infof("guest agent: whether the guest kernel %s has %s=y cannot be told from its file; it boots with the agent, which says so if it lacks it",
			binary, driver.Option)
	}
	return true
}

// startReaped starts cmd through containerd's reaper, which reaps every
// child of the shim: exec.Cmd.Wait alone would race it for the status.
func startReaped(cmd *exec.Cmd) (func() error, error) {
	ec, err := reaper.Default.Start(cmd)
	if err != nil {
		return nil, err
	}
	return func() error {
		status, err := reaper.Default.Wait(cmd, ec)
		if err == nil && status != 0 {
			err = fmt.Errorf("%s exited with status %d", cmd.Path, status)
		}
		return err
	}, nil
}
