// Package inventory lists this runtime's containers on a host from the
// bundles containerd keeps, for operators: what runs under which monitor,
// whether its shim still answers, and which are orphans to clean. It reads
// what the runtime persisted; it never asks a shim.
package inventory

import (
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/urunc-dev/containerd-shim-urunc-v2/runtime/lifecycle"
)

// DefaultTaskStateDir is where containerd keeps its v2 task bundles, by
// namespace.
const DefaultTaskStateDir = "/run/containerd/io.containerd.runtime.v2.task"

// Entry is one container of this runtime.
type Entry struct {
	Bundle string
	lifecycle.Summary
	// ShimAnswers tells whether the container's shim still answers on its
	// socket; a container whose shim does not is an orphan, which only
	// cleanup-orphans (or containerd's delete command) will clean.
	ShimAnswers bool
	// Err is why the bundle's state could not be read.
	Err error
}

// Orphan tells whether nobody will clean the container unless asked.
func (e Entry) Orphan() bool { return !e.ShimAnswers }

// List returns every bundle under stateDir (NAMESPACE/ID) that holds this
// runtime's state, sorted by namespace and ID.
func List(stateDir string) ([]Entry, error) {
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
		if addr := ShimAddress(b); addr != "" {
			e.ShimAnswers = Answers(addr)
		}
		out = append(out, e)
	}
	return out, nil
}

// Orphans lists the bundles under stateDir whose shim no longer answers.
func Orphans(stateDir string) ([]string, error) {
	entries, err := List(stateDir)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range entries {
		if e.Orphan() {
			out = append(out, e.Bundle)
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

// Answers tells whether a shim accepts connections on address.
func Answers(address string) bool {
	conn, err := net.DialTimeout("unix", strings.TrimPrefix(address, "unix://"), 100*time.Millisecond)
	if err != nil {
		return false
	}
	conn.Close()
	return true
}
