package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"strings"
	"syscall"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/remotes/docker"
	"github.com/containerd/containerd/v2/core/remotes/docker/config"
	"github.com/containerd/containerd/v2/pkg/namespaces"

	"github.com/urunc-dev/containerd-shim-urunc-v2/monitors"
	"github.com/urunc-dev/containerd-shim-urunc-v2/runtime/guests"
	"github.com/urunc-dev/containerd-shim-urunc-v2/unikimage"
)

// listFlag collects a repeated flag.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

func buildMain(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("build", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: urunc build -t NAME -type GUEST -monitor MONITOR -kernel FILE [-initrd FILE | -rootfs DIR | -block FILE] [-o FILE.tar] [-import] [-push] [--] [APP ARGS...]")
		fmt.Fprintln(stderr, "\nWrites an image in urunc's format (com.urunc.unikernel.* labels, /urunc.json); at least one of -o, -import, -push.")
		fs.PrintDefaults()
	}
	var s unikimage.Spec
	var env listFlag
	fs.StringVar(&s.Name, "t", "", "image name, as docker.io/library/app:latest")
	fs.StringVar(&s.UnikernelType, "type", "", "guest type: "+strings.Join(guests.Names(), ", "))
	fs.StringVar(&s.Hypervisor, "monitor", "", "monitor: "+strings.Join(monitors.Names(), ", "))
	fs.StringVar(&s.Kernel, "kernel", "", "the guest kernel (or unikernel binary)")
	fs.StringVar(&s.Initrd, "initrd", "", "an initrd for the guest's root")
	fs.StringVar(&s.Rootfs, "rootfs", "", "a directory that becomes the image's root and the guest's (mountRootfs=true)")
	fs.StringVar(&s.Block, "block", "", "a disk image the guest boots from (its root)")
	fs.StringVar(&s.Version, "version", "", "unikernelVersion (Unikraft's command-line form)")
	fs.Var(&env, "env", "KEY=VALUE of the app's environment (repeatable)")
	out := fs.String("o", "", "write an OCI image layout tar to this file")
	doImport := fs.Bool("import", false, "import into containerd (and unpack)")
	push := fs.Bool("push", false, "push to the registry the name points at, through containerd (implies -import)")
	plainHTTP := fs.Bool("plain-http", false, "push over HTTP rather than HTTPS")
	address := fs.String("address", "/run/containerd/containerd.sock", "containerd's socket")
	namespace := fs.String("namespace", "default", "containerd namespace to import into (k8s.io for the CRI)")
	snapshotter := fs.String("snapshotter", "overlayfs", "snapshotter to unpack into")
	if code, stop := parseFlags(fs, args, nil); stop {
		return code
	}
	s.Args, s.Env, s.Progress = fs.Args(), env, stderr
	if *out == "" && !*doImport && !*push {
		fmt.Fprintln(stderr, "urunc build: nothing to do: give -o FILE, -import or -push")
		return 2
	}
	if err := s.Validate(); err != nil {
		fmt.Fprintf(stderr, "urunc build: %v\n", err)
		return 1
	}
	if *doImport || *push {
		// Before any work: containerd's client would only say "timeout"
		// after seconds of retrying a socket that is not there.
		if err := checkContainerdSocket(*address); err != nil {
			fmt.Fprintf(stderr, "urunc build: %v\n", err)
			return 1
		}
	}
	if err := build(ctx, s, *out, *doImport || *push, *push, *plainHTTP, *address, *namespace, *snapshotter, stdout); err != nil {
		fmt.Fprintf(stderr, "urunc build: %v\n", err)
		return 1
	}
	return 0
}

func build(ctx context.Context, s unikimage.Spec, out string, doImport, push, plainHTTP bool, address, namespace, snapshotter string, stdout io.Writer) error {
	path := out
	if path == "" {
		f, err := os.CreateTemp("", "urunc-build-*.tar")
		if err != nil {
			return err
		}
		f.Close()
		path = f.Name()
		defer os.Remove(path)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	desc, err := s.WriteLayout(f)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return err
	}
	if out != "" {
		fmt.Fprintf(stdout, "wrote %s (%s, manifest %s)\n", out, s.Name, desc.Digest)
	}
	if !doImport {
		return nil
	}
	client, err := containerd.New(address, containerd.WithDefaultNamespace(namespace))
	if err != nil {
		return fmt.Errorf("connect to containerd at %s: %w", address, err)
	}
	defer client.Close()
	ctx = namespaces.WithNamespace(ctx, namespace)
	layout, err := os.Open(path)
	if err != nil {
		return err
	}
	defer layout.Close()
	imgs, err := client.Import(ctx, layout)
	if err != nil {
		return fmt.Errorf("import into containerd: %w", err)
	}
	for _, img := range imgs {
		if err := containerd.NewImage(client, img).Unpack(ctx, snapshotter); err != nil {
			return fmt.Errorf("unpack %s into %s: %w", img.Name, snapshotter, err)
		}
		fmt.Fprintf(stdout, "imported %s into containerd namespace %s\n", img.Name, namespace)
	}
	if !push {
		return nil
	}
	opts := docker.ResolverOptions{Hosts: config.ConfigureHosts(ctx, config.HostOptions{DefaultScheme: scheme(plainHTTP)})}
	if err := client.Push(ctx, s.Name, desc, containerd.WithResolver(docker.NewResolver(opts))); err != nil {
		return fmt.Errorf("push %s: %w", s.Name, err)
	}
	fmt.Fprintf(stdout, "pushed %s\n", s.Name)
	return nil
}

// checkContainerdSocket says what is wrong with containerd's socket at
// address, naming it: missing, not a socket, refused, not permitted.
func checkContainerdSocket(address string) error {
	path := strings.TrimPrefix(address, "unix://")
	const hint = "is containerd running? (-address names its socket)"
	st, err := os.Stat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("containerd socket %s: no such file: %s", path, hint)
	case errors.Is(err, fs.ErrPermission):
		return fmt.Errorf("containerd socket %s: permission denied: run as root", path)
	case err != nil:
		return fmt.Errorf("containerd socket: %w", err)
	case st.Mode()&fs.ModeSocket == 0:
		return fmt.Errorf("containerd socket %s: not a socket (%s): -address names containerd's socket", path, st.Mode().Type())
	}
	conn, err := net.DialTimeout("unix", path, 5*time.Second)
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Errorf("containerd socket %s: connection refused: nobody listens (a stale socket): %s", path, hint)
	case errors.Is(err, syscall.EACCES), errors.Is(err, syscall.EPERM):
		return fmt.Errorf("containerd socket %s: permission denied: run as root", path)
	case err != nil:
		return fmt.Errorf("containerd socket %s: %w", path, err)
	}
	conn.Close()
	return nil
}

func scheme(plainHTTP bool) string {
	if plainHTTP {
		return "http"
	}
	return "https"
}
