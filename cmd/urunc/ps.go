package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urunc-dev/containerd-shim-urunc-v2/inventory"
)

// psRow is one container as ps shows it (and as -o json writes it).
type psRow struct {
	Namespace  string `json:"namespace"`
	ID         string `json:"id"`
	Kind       string `json:"kind"` // unikernel | plain
	Guest      string `json:"guest,omitempty"`
	Monitor    string `json:"monitor,omitempty"`
	Pid        int    `json:"pid,omitempty"`
	State      string `json:"state"` // running | exited N | gone
	Shim       string `json:"shim"`  // answers | hung | gone | unknown
	Orphan     bool   `json:"orphan"`
	RootfsMode string `json:"rootfsMode,omitempty"`
	Tap        string `json:"tap,omitempty"`
	Address    string `json:"address,omitempty"`
	Uptime     string `json:"uptime,omitempty"`
	Bundle     string `json:"bundle"`
	Error      string `json:"error,omitempty"`
}

func psMain(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("ps", flag.ContinueOnError)
	fs.SetOutput(stderr)
	discovery, probing := inventory.DiscoveryFlags(fs)
	output := outputFlag(fs)
	if code, stop := parseFlags(fs, args, output); stop {
		return code
	}
	sources, err := inventory.FindTaskDirs(*discovery)
	if err != nil {
		fmt.Fprintf(stderr, "urunc ps: %v\n", err)
		return 1
	}
	rows := []psRow{}
	code := 0
	for _, src := range sources {
		entries, err := inventory.List(ctx, src.Dir, probing.Timeout)
		if err != nil {
			fmt.Fprintf(stderr, "urunc ps: %v (from %s)\n", err, src.From)
			code = 1
			continue
		}
		for _, e := range entries {
			rows = append(rows, rowOf(e, time.Now()))
		}
	}
	if *output == "json" {
		if err := writeJSON(stdout, rows); err != nil {
			return 1
		}
		return code
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAMESPACE\tID\tGUEST\tMONITOR\tPID\tSTATE\tSHIM\tROOTFS\tTAP\tADDRESS\tUPTIME")
	for _, r := range rows {
		shim := r.Shim
		if r.Orphan {
			shim += " (ORPHAN)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Namespace, r.ID, dash(r.Guest), dash(r.Monitor),
			dash(pidText(r.Pid)), r.State, shim, dash(r.RootfsMode), dash(r.Tap), dash(r.Address), dash(r.Uptime))
	}
	if err := tw.Flush(); err != nil {
		return 1
	}
	return code
}

func rowOf(e inventory.Entry, now time.Time) psRow {
	ns, id := e.Namespace, e.ID
	if ns == "" || id == "" {
		// The state could not be read: name it by its bundle.
		parts := strings.Split(strings.TrimRight(e.Bundle, "/"), "/")
		ns, id = parts[len(parts)-2], parts[len(parts)-1]
	}
	r := psRow{Namespace: ns, ID: id, Kind: "unikernel", Guest: e.GuestType, Monitor: e.Monitor, Pid: e.Pid,
		RootfsMode: e.RootfsMode, Bundle: e.Bundle, Shim: e.Shim.String(), Orphan: e.Orphan()}
	if e.Plain {
		r.Kind, r.Guest, r.Monitor = "plain", "(runc)", ""
	}
	switch {
	case e.Err != nil:
		r.State, r.Error = "unknown", e.Err.Error()
	case e.Exit != nil:
		r.State = "exited " + strconv.Itoa(e.Exit.Status)
	case e.Alive:
		r.State = "running"
		if !e.Started.IsZero() {
			r.Uptime = now.Sub(e.Started).Truncate(time.Second).String()
		}
	case e.Pid == 0:
		r.State = "created"
	default:
		r.State = "gone"
	}
	if len(e.Taps) > 0 {
		r.Tap, r.Address = e.Taps[0].Name, e.Taps[0].Address
	}
	return r
}

func pidText(pid int) string {
	if pid == 0 {
		return ""
	}
	return strconv.Itoa(pid)
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
