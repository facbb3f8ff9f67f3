// Package inventory lists this runtime's containers on a host from the
// bundles containerd keeps, for operators: what runs under which monitor,
// whether its shim still answers, and which are orphans to clean. It reads
// what the runtime persisted; of a shim it asks only whether its ttrpc
// server answers.
package inventory

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/urunc-dev/containerd-shim-urunc-v2/runtime/lifecycle"
)

// Entry is one container of this runtime.
type Entry struct {
	Bundle string
	lifecycle.Summary
	// Shim is how the container's shim answered a probe; a container
	// whose shim does not answer is an orphan, which only cleanup-orphans
	// (or containerd's delete command) will clean.
	Shim ShimState
	// ShimPid and ShimProcess say, for a hung shim, what the process
	// table shows of it (from the bundle's shim.pid).
	ShimPid     int
	ShimProcess ShimProcess
	// Err is why the bundle's state could not be read.
	Err error
}

// Orphan tells whether nobody will clean the container unless asked: its
// shim is gone, or hung with its process gone, a zombie or stopped. A
// hung shim still running (slow on a loaded host, or wedged) may yet act
// for its containers, and one whose process cannot be told is not known
// dead: neither is an orphan, nor is a shim that could not be asked
// (permission).
func (e Entry) Orphan() bool {
	return e.Shim == ShimGone || e.Shim == ShimHung && (e.ShimProcess == ShimProcessStopped || e.ShimProcess == ShimProcessDead)
}

// maxProbes bounds the probes in flight: each waits up to its timeout, so
// a host of hung shims is listed in a few timeouts rather than one each.
const maxProbes = 16

// procDir is the host's process table.
var procDir = "/proc"

// List returns every bundle under stateDir (NAMESPACE/ID) that holds this
// runtime's state, sorted by namespace and ID, each shim probed with
// timeout.
func List(ctx context.Context, stateDir string, timeout time.Duration) ([]Entry, error) {
	if _, err := os.Stat(stateDir); err != nil {
		return nil, fmt.Errorf("containerd task state: %w", err)
	}
	bundles, err := filepath.Glob(filepath.Join(stateDir, "*", "*"))
	if err != nil {
		return nil, err
	}
	sort.Strings(bundles)
	var out []Entry
	for _, b := range bundles {
		if !lifecycle.HasState(b) {
			continue
		}
		e := Entry{Bundle: b}
		e.Summary, e.Err = lifecycle.Describe(b)
		out = append(out, e)
	}
	var wg sync.WaitGroup
	slots := make(chan struct{}, maxProbes)
	for i := range out {
		addr := ShimAddress(out[i].Bundle)
		if addr == "" {
			out[i].Shim = ShimGone
			continue
		}
		wg.Add(1)
		slots <- struct{}{}
		go func(e *Entry) {
			defer wg.Done()
			e.Shim = Probe(ctx, addr, timeout)
			if e.Shim == ShimHung {
				e.ShimPid, e.ShimProcess = shimProcessOf(e.Bundle, procDir)
			}
			<-slots
		}(&out[i])
	}
	wg.Wait()
	return out, nil
}

// Orphans lists the entries under stateDir whose shim is gone or hung:
// the orphans, and the hung shims that are not (Orphan).
func Orphans(ctx context.Context, stateDir string, timeout time.Duration) ([]Entry, error) {
	entries, err := List(ctx, stateDir, timeout)
	if err != nil {
		return nil, err
	}
	var out []Entry
	for _, e := range entries {
		if e.Orphan() || e.Shim == ShimHung {
			out = append(out, e)
		}
	}
	return out, nil
}

// ShimAddress reads the shim's address from the bundle: bootstrap.json
// (containerd 2.x) or address (1.7).
func ShimAddress(bundle string) string {
	if data, err := os.ReadFile(filepath.Join(bundle, "bootstrap.json")); err == nil {
		var b struct {
			Address string `json:"address"`
		}
		if json.Unmarshal(data, &b) == nil {
			return b.Address
		}
	}
	data, err := os.ReadFile(filepath.Join(bundle, "address"))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(data))
}
