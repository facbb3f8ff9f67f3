package stdio

import (
	"context"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/exec"
	"syscall"
)

// startLogger runs a logging binary as containerd defines it: the
// container's stdout on fd 3, stderr on fd 4, and fd 5 closed once the
// logger is ready; CONTAINER_ID and CONTAINER_NAMESPACE in its environment.
func (s *Streams) startLogger(ctx context.Context, u *url.URL, id, namespace string) error {
	var args []string
	for k, vs := range u.Query() {
		args = append(args, k)
		if len(vs) > 0 && vs[0] != "" {
			args = append(args, vs[0])
		}
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		return err
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		outR.Close()
		outW.Close()
		return err
	}
	readyR, readyW, err := os.Pipe()
	if err != nil {
		for _, f := range []*os.File{outR, outW, errR, errW} {
			f.Close()
		}
		return err
	}
	// stdout, the guest's console, passes through the shim, which reads
	// the guest's exit status from it.
	consoleW, err := s.copyThroughTap(outW)
	if err != nil {
		for _, f := range []*os.File{outR, errR, errW, readyR, readyW} {
			f.Close()
		}
		return err
	}
	s.monitor.Stdout, s.monitor.Stderr = consoleW, errW
	cmd := exec.Command(u.Path, args...)
	cmd.Env = append(os.Environ(), "CONTAINER_ID="+id, "CONTAINER_NAMESPACE="+namespace)
	cmd.ExtraFiles = []*os.File{outR, errR, readyW}
	// Started without subscribing to the reaper: a subscription that is
	// read only at Close fills after 32 exits of the shim's other
	// children, and then every exit waits a second. The reaper's loop
	// still reaps the logger; Close waits on a pidfd, which reports the
	// exit without taking the status.
	pidfd := -1
	cmd.SysProcAttr = &syscall.SysProcAttr{PidFD: &pidfd}
	err = cmd.Start()
	outR.Close()
	errR.Close()
	readyW.Close()
	if err != nil {
		readyR.Close()
		return fmt.Errorf("start logger %s: %w", u.Path, err)
	}
	s.loggerPidfd = pidfd
	defer readyR.Close()
	ready := make(chan error, 1)
	go func() {
		_, err := io.Copy(io.Discard, readyR)
		ready <- err
	}()
	select {
	case err := <-ready:
		if err != nil {
			return fmt.Errorf("logger %s: %w", u.Path, err)
		}
	case <-ctx.Done():
		return fmt.Errorf("logger %s did not become ready: %w", u.Path, ctx.Err())
	}
	return nil
}
