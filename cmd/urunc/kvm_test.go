package main

import (
	"errors"
	goruntime "runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func out(value byte, at time.Duration) vcpuExit {
	return vcpuExit{Reason: kvmExitIO, IODir: 1, IOSize: 1, IOPort: probePort, IOData: value, At: at}
}

func hlt(at time.Duration) vcpuExit { return vcpuExit{Reason: kvmExitHLT, At: at} }

func TestKVMVerdict(t *testing.T) {
	ms := time.Millisecond
	for _, tc := range []struct {
		name   string
		probe  kvmProbe
		ok     bool
		detail string
	}{
		{"every stage, then HLT", kvmProbe{Exits: []vcpuExit{out(1, ms), out(2, 2*ms), out(3, 40*ms), hlt(41 * ms)}}, true, "(its loop: 38ms) and HLT"},
		{"a slow loop under a loaded host still passes", kvmProbe{Exits: []vcpuExit{out(1, 0), out(2, ms), out(3, 900*ms), hlt(900 * ms)}}, true, "HLT"},
		{"a loop that crawls", kvmProbe{Exits: []vcpuExit{out(1, 0), out(2, ms), out(3, 2500*ms), hlt(2500 * ms)}}, false, "64-bit loop took 2.499s"},
		{"timed out in 64-bit mode (this host's PVM)", kvmProbe{Exits: []vcpuExit{out(1, 0), out(2, ms)}, TimedOut: true, Timeout: 3 * time.Second}, false, "in 64-bit mode ran 3s without its next exit"},
		{"timed out before any exit", kvmProbe{TimedOut: true, Timeout: 3 * time.Second}, false, "in real mode ran 3s without its next exit (exits: none)"},
		{"internal error, emulation failure", kvmProbe{Exits: []vcpuExit{out(1, 0), {Reason: kvmExitInternalError, Suberror: kvmInternalErrorEmulation}}}, false,
			"KVM internal error (emulation failure) in a test guest's 32-bit protected mode"},
		{"internal error, other", kvmProbe{Exits: []vcpuExit{{Reason: kvmExitInternalError, Suberror: 3}}}, false, "KVM internal error (suberror 3) in a test guest's real mode"},
		{"entry failure", kvmProbe{Exits: []vcpuExit{{Reason: kvmExitFailEntry, Suberror: 0x80000021}}}, false, "hardware entry failure 0x80000021"},
		{"triple fault at the switch to 64-bit mode", kvmProbe{Exits: []vcpuExit{out(1, 0), {Reason: kvmExitShutdown}}}, false,
			"exited with IO port 0x10 dir 1 size 1 data 1, SHUTDOWN (triple fault), want it to reach 64-bit mode"},
		{"a halt too early", kvmProbe{Exits: []vcpuExit{hlt(0)}}, false, "want it to reach 32-bit protected mode"},
		{"an OUT of the wrong value", kvmProbe{Exits: []vcpuExit{out(2, 0)}}, false, "want it to reach 32-bit protected mode"},
		{"an OUT to another port", kvmProbe{Exits: []vcpuExit{{Reason: kvmExitIO, IODir: 1, IOSize: 1, IOPort: 0x80, IOData: 1}}}, false, "port 0x80"},
		{"an IN, not an OUT", kvmProbe{Exits: []vcpuExit{{Reason: kvmExitIO, IODir: 0, IOSize: 1, IOPort: probePort, IOData: 1}}}, false, "dir 0"},
		{"no HLT after the last stage", kvmProbe{Exits: []vcpuExit{out(1, 0), out(2, 0), out(3, 0), {Reason: 6}}}, false, "MMIO, want HLT"},
		{"an unnamed exit reason", kvmProbe{Exits: []vcpuExit{{Reason: 99}}}, false, "reason 99"},
		{"an ioctl failed", kvmProbe{Err: errors.New("KVM_CREATE_VM: operation not permitted")}, false, "a test guest in real mode: KVM_CREATE_VM: operation not permitted"},
		{"no exits at all", kvmProbe{}, false, "stopped: exits none"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ok, detail := kvmVerdict(tc.probe)
			if ok != tc.ok || !strings.Contains(detail, tc.detail) {
				t.Errorf("kvmVerdict = %v, %q; want %v, …%q…", ok, detail, tc.ok, tc.detail)
			}
		})
	}
}

// A KVM that fails is a failed check that says how to choose TCG, unless
// the host config already has qemu on TCG.
func TestKVMResult(t *testing.T) {
	if goruntime.GOARCH != "amd64" {
		t.Skip("the vCPU check is x86-64 only")
	}
	t.Setenv("URUNC_CONFIG_FILE", "/etc/urunc/test.toml")
	works := func() kvmProbe { return kvmProbe{Exits: []vcpuExit{out(1, 0), out(2, 0), out(3, 0), hlt(0)}} }
	hangs := func() kvmProbe { return kvmProbe{Exits: []vcpuExit{out(1, 0), out(2, 0)}, TimedOut: true} }
	for _, tc := range []struct {
		name   string
		tcg    bool
		probe  func() kvmProbe
		status string
		fix    string
	}{
		{"works", false, works, checkOK, ""},
		{"works, TCG selected anyway", true, works, checkOK, ""},
		{"hangs", false, hangs, checkFail, `in /etc/urunc/test.toml set [monitors.qemu] accel = "tcg"`},
		{"hangs, TCG selected", true, hangs, checkWarn, "none needed for qemu"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := kvmResult(tc.tcg, tc.probe)
			if r.Check != "kvm" || r.Status != tc.status || !strings.Contains(r.Fix, tc.fix) || (tc.fix == "" && r.Fix != "") {
				t.Errorf("kvmResult = %+v, want status %s, fix …%q…", r, tc.status, tc.fix)
			}
		})
	}
}

// On a host with a KVM, the probe runs and its verdict is one of the
// kinds above; without /dev/kvm it names the device.
func TestRunKVMProbeOnThisHost(t *testing.T) {
	if goruntime.GOARCH != "amd64" {
		t.Skip("the vCPU check is x86-64 only")
	}
	if p := runKVMProbe("/nonexistent/kvm", time.Second); p.Err == nil || !strings.Contains(p.Err.Error(), "open /nonexistent/kvm") {
		t.Errorf("a missing device: %+v", p)
	}
	if unix.Access("/dev/kvm", unix.R_OK|unix.W_OK) != nil {
		t.Skip("no usable /dev/kvm")
	}
	start := time.Now()
	p := runKVMProbe("/dev/kvm", time.Second)
	took := time.Since(start)
	ok, detail := kvmVerdict(p)
	t.Logf("this host: ok=%v %s (%s)", ok, detail, took.Round(time.Millisecond))
	// Bounded: a vCPU that never exits is given up on.
	if took > 3*time.Second {
		t.Errorf("the probe took %s with a 1s timeout", took)
	}
	if p.Err != nil {
		t.Errorf("an ioctl failed: %v", p.Err)
	}
	if len(p.Exits) == 0 && !p.TimedOut {
		t.Errorf("no exit and no timeout: %+v", p)
	}
}
