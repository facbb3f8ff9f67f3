// Package unikimage writes a unikernel image in urunc's format: one layer
// with the guest's files under /boot (or the guest's root filesystem at /),
// /urunc.json with the com.urunc.unikernel.* values in base64, and the same
// values as the image's labels. Such an image runs under urunc and under
// this shim alike. The guest/monitor pair and the files are checked with
// the code the shim uses, before anything is written.
package unikimage

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	"github.com/urunc-dev/containerd-shim-urunc-v2/internal/annotation"
	"github.com/urunc-dev/containerd-shim-urunc-v2/monitors"
	"github.com/urunc-dev/containerd-shim-urunc-v2/runtime/guests"
)

// Where the guest's files go in the image.
const (
	KernelPath = "/boot/kernel"
	InitrdPath = "/boot/initrd"
	BlockPath  = "/boot/rootfs.img"
)

// Spec is what the image holds: a kernel and at most one of an initrd, a
// root filesystem directory or a block image.
type Spec struct {
	// Name is the image reference, as in "docker.io/library/app:latest".
	Name string
	// UnikernelType and Hypervisor are the guest type and the monitor.
	UnikernelType, Hypervisor string
	// Version is the unikernelVersion (Unikraft's command-line form).
	Version string
	// Kernel, Initrd and Block are host files; Rootfs a host directory
	// that becomes the image's root (mountRootfs=true).
	Kernel, Initrd, Block, Rootfs string
	// Args are the app and its arguments; Env its environment.
	Args, Env []string
	// Progress, when set, receives a line at each quarter of a large
	// file written.
	Progress io.Writer
}

// Validate checks the spec as the shim would check the image it makes:
// the guest type and the monitor exist and fit, the guest takes the root
// asked for, the monitor boots an initrd when there is one, and every file
// is a regular file (the root a directory).
func (s Spec) Validate() error {
	if s.Name == "" {
		return errors.New("no image name")
	}
	g, err := guests.For(s.UnikernelType)
	if err != nil {
		return err
	}
	if !slices.Contains(monitors.Names(), s.Hypervisor) {
		return fmt.Errorf("unknown hypervisor %q (known: %s)", s.Hypervisor, strings.Join(monitors.Names(), ", "))
	}
	if err := guests.CheckMonitor(g, s.Hypervisor); err != nil {
		return err
	}
	roots := 0
	for _, r := range []string{s.Initrd, s.Block, s.Rootfs} {
		if r != "" {
			roots++
		}
	}
	if roots > 1 {
		return errors.New("give at most one of an initrd, a rootfs directory and a block image")
	}
	if s.Kernel == "" {
		return errors.New("no kernel")
	}
	for what, p := range map[string]string{"kernel": s.Kernel, "initrd": s.Initrd, "block image": s.Block} {
		if p == "" {
			continue
		}
		st, err := os.Stat(p)
		if err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		if !st.Mode().IsRegular() {
			return fmt.Errorf("%s %s is not a regular file", what, p)
		}
	}
	if s.Rootfs != "" {
		st, err := os.Stat(s.Rootfs)
		if err != nil {
			return fmt.Errorf("rootfs: %w", err)
		}
		if !st.IsDir() {
			return fmt.Errorf("rootfs %s is not a directory", s.Rootfs)
		}
		// Shared as a directory (9p, virtiofs), or a block snapshot.
		if !g.SupportsFS("9p") && !g.SupportsFS("virtiofs") && !g.SupportsFS("ext4") {
			return fmt.Errorf("guest %s cannot boot from the container's rootfs", s.UnikernelType)
		}
	}
	if s.Block != "" && !g.SupportsBlock() {
		return fmt.Errorf("guest %s cannot boot from a block image", s.UnikernelType)
	}
	if s.Initrd != "" && !monitors.BootsInitrd(s.Hypervisor) {
		return fmt.Errorf("monitor %s cannot boot an initrd", s.Hypervisor)
	}
	if _, err := g.Cmdline(guests.Request{Args: s.Args, Version: s.Version, Process: guests.Process{Env: s.Env}}); err != nil {
		return err
	}
	return nil
}

// Config returns the unikernel config the image carries, by annotation
// key without its prefix.
func (s Spec) Config() map[string]string {
	cfg := map[string]string{
		"unikernelType": s.UnikernelType,
		"hypervisor":    s.Hypervisor,
		"binary":        KernelPath,
	}
	if s.Version != "" {
		cfg["unikernelVersion"] = s.Version
	}
	if len(s.Args) > 0 {
		cfg["cmdline"] = strings.Join(s.Args, " ")
	}
	switch {
	case s.Initrd != "":
		cfg["initrd"] = InitrdPath
	case s.Block != "":
		cfg["block"], cfg["blkMntPoint"] = BlockPath, "/"
	case s.Rootfs != "":
		cfg["mountRootfs"] = "true"
	}
	return cfg
}

// uruncJSON renders /urunc.json: urunc's keys with base64 values.
func (s Spec) uruncJSON() []byte {
	out := map[string]string{}
	for k, v := range s.Config() {
		out[annotation.Prefix+k] = base64.StdEncoding.EncodeToString([]byte(v))
	}
	data, _ := json.MarshalIndent(out, "", "  ")
	return data
}

// Labels are the config as image labels, with their full keys.
func (s Spec) Labels() map[string]string {
	out := map[string]string{}
	for k, v := range s.Config() {
		out[annotation.Prefix+k] = v
	}
	return out
}
