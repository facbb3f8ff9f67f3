package lifecycle

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/urunc-dev/containerd-shim-urunc-v2/rootfs"
)

// StateFile is kept in the bundle: it is what the delete subcommand, run by
// containerd after a shim died, needs to undo everything Create did.
const StateFile = "urunc-state.json"

// stateVersion is bumped on any incompatible change of PersistedState.
const stateVersion = 1

// PersistedState lists everything a container holds on the host.
type PersistedState struct {
	Version   int    `json:"version"`
	ID        string `json:"id"`
	Namespace string `json:"namespace"`
	// Pid and PidStartTime identify the monitor; the start time guards
	// against signalling a pid the kernel has since given to another
	// process.
	Pid          int    `json:"pid,omitempty"`
	PidStartTime uint64 `json:"pidStartTime,omitempty"`
	// Rootfs is where the request's rootfs mounts went; bundle/rootfs
	// when empty.
	Rootfs string `json:"rootfs,omitempty"`
	// RootfsMode is the guest's rootfs mode; RootfsUndo what the mode
	// took from the host and must give back.
	RootfsMode    string      `json:"rootfsMode,omitempty"`
	RootfsUndo    rootfs.Undo `json:"rootfsUndo,omitempty"`
	Cgroup        string      `json:"cgroup,omitempty"`
	ControlSocket string      `json:"controlSocket,omitempty"`
	// AgentSocket is the host end of the guest agent's channel.
	AgentSocket string `json:"agentSocket,omitempty"`
	Taps        []Tap  `json:"taps,omitempty"`
	// PoststopHooks is set once createRuntime hooks ran (CNI set up by
	// nerdctl's hook, say): poststop hooks must then run on cleanup.
	PoststopHooks bool `json:"poststopHooks,omitempty"`
	// Runc is set for a plain container run by runc, with runc's root.
	Runc     bool   `json:"runc,omitempty"`
	RuncRoot string `json:"runcRoot,omitempty"`
	// Exit is set once the monitor has exited and been reaped.
	Exit *ExitStatus `json:"exit,omitempty"`
	// GuestType and Monitor name the boot plan's choices, for operators
	// (urunc ps); nothing is undone from them.
	GuestType string `json:"guestType,omitempty"`
	Monitor   string `json:"monitor,omitempty"`
}

// Tap is a tap device created for a guest, with the namespace it lives in.
type Tap struct {
	Name  string `json:"name"`
	Netns string `json:"netns"`
	Link  string `json:"link"` // the container interface it is joined to
	// Address is the guest's, taken over from Link (for operators).
	Address string `json:"address,omitempty"`
	// ViaPid is set when Netns is /proc/PID/ns/net of the monitor.
	ViaPid bool `json:"viaPid,omitempty"`
}

// ExitStatus is how and when a container's monitor ended.
type ExitStatus struct {
	Pid    int       `json:"pid"`
	Status int       `json:"status"` // exit code, or 128+signal
	At     time.Time `json:"at"`
}

func StatePath(bundle string) string { return filepath.Join(bundle, StateFile) }

// WriteState replaces the state file atomically: a crash leaves either the
// old or the new file, never a torn one.
func WriteState(bundle string, st *PersistedState) error {
	st.Version = stateVersion
	data, err := json.Marshal(st)
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(bundle, StateFile+".tmp-*")
	if err != nil {
		return fmt.Errorf("write state: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("write state: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("sync state: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), StatePath(bundle)); err != nil {
		return fmt.Errorf("write state: %w", err)
	}
	return nil
}

// ReadState returns nil, nil when the bundle holds no state.
func ReadState(bundle string) (*PersistedState, error) {
	data, err := os.ReadFile(StatePath(bundle))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read state: %w", err)
	}
	var st PersistedState
	if err := json.Unmarshal(data, &st); err != nil {
		return nil, fmt.Errorf("parse state %s: %w", StatePath(bundle), err)
	}
	if st.Version != stateVersion {
		return nil, fmt.Errorf("state %s has version %d, this shim reads %d", StatePath(bundle), st.Version, stateVersion)
	}
	return &st, nil
}

// HasState tells whether bundle holds the persisted state of a container of
// this runtime.
func HasState(bundle string) bool {
	_, err := os.Stat(StatePath(bundle))
	return err == nil
}

// Summary is what an operator sees of a container of this runtime, read
// from its bundle's persisted state.
type Summary struct {
	ID, Namespace string
	// Plain is a container run by runc (a pod's pause, a sidecar).
	Plain              bool
	GuestType, Monitor string
	RootfsMode         string
	// Pid is the monitor's (runc's init for a plain container); Alive
	// tells whether that very process still runs (start time checked).
	Pid     int
	Alive   bool
	Started time.Time
	Taps    []Tap
	Exit    *ExitStatus
}

// Describe reads the container of bundle from its persisted state.
func Describe(bundle string) (Summary, error) {
	st, err := ReadState(bundle)
	if err != nil {
		return Summary{}, err
	}
	if st == nil {
		return Summary{}, fmt.Errorf("%s holds no state of this runtime", bundle)
	}
	s := Summary{ID: st.ID, Namespace: st.Namespace, Plain: st.Runc, GuestType: st.GuestType, Monitor: st.Monitor,
		RootfsMode: st.RootfsMode, Pid: st.Pid, Taps: st.Taps, Exit: st.Exit}
	s.Alive = st.Exit == nil && SameProcess(st.Pid, st.PidStartTime)
	if s.Alive {
		s.Started = StartedAt(st.PidStartTime)
	}
	return s, nil
}
