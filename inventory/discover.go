package inventory

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/pelletier/go-toml/v2"
)

// containerd's defaults (containerd's defaults package and its config).
const (
	DefaultContainerdState  = "/run/containerd"
	DefaultContainerdConfig = "/etc/containerd/config.toml"
	// taskSubdir holds the v2 task bundles inside containerd's state dir,
	// as NAMESPACE/ID.
	taskSubdir = "io.containerd.runtime.v2.task"
)

// DefaultTaskStateDir is where a containerd with default settings keeps its
// v2 task bundles, by namespace.
const DefaultTaskStateDir = DefaultContainerdState + "/" + taskSubdir

// TaskDir is the task bundles' parent within containerd's state dir.
func TaskDir(containerdState string) string { return filepath.Join(containerdState, taskSubdir) }

// StateSource is one containerd's task state dir and how it was found.
type StateSource struct {
	Dir  string
	From string
}

// Discovery says where to look for containerd's task state. With neither
// field set, every running containerd is asked (its --state, or the state
// of its --config), then the default config file, then the default state
// dir.
type Discovery struct {
	// StateDir is the task state dir itself (-state-dir); nothing else is
	// looked at.
	StateDir string
	// ContainerdConfig is a containerd config file whose state to use
	// (-containerd-config); nothing else is looked at.
	ContainerdConfig string
	// ProcRoot, DefaultConfig and DefaultState are /proc,
	// DefaultContainerdConfig and DefaultContainerdState; tests point
	// them elsewhere.
	ProcRoot      string
	DefaultConfig string
	DefaultState  string
}

// FindTaskDirs returns the task state dirs to list, each once. An explicit
// StateDir or ContainerdConfig is returned even when its dir does not
// exist (List then says so); found ones only when they exist, and an error
// naming every place looked at when none does.
func FindTaskDirs(d Discovery) ([]StateSource, error) {
	if d.StateDir != "" {
		return []StateSource{{Dir: d.StateDir, From: "-state-dir"}}, nil
	}
	if d.ContainerdConfig != "" {
		state, err := stateOfConfig(d.ContainerdConfig, DefaultContainerdState)
		if err != nil {
			return nil, err
		}
		return []StateSource{{Dir: TaskDir(state), From: d.ContainerdConfig}}, nil
	}
	if d.ProcRoot == "" {
		d.ProcRoot = "/proc"
	}
	if d.DefaultConfig == "" {
		d.DefaultConfig = DefaultContainerdConfig
	}
	if d.DefaultState == "" {
		d.DefaultState = DefaultContainerdState
	}
	candidates := runningContainerds(d.ProcRoot, d.DefaultConfig, d.DefaultState)
	if _, err := os.Stat(d.DefaultConfig); err == nil {
		if state, err := stateOfConfig(d.DefaultConfig, d.DefaultState); err == nil {
			candidates = append(candidates, StateSource{Dir: TaskDir(state), From: d.DefaultConfig})
		}
	}
	candidates = append(candidates, StateSource{Dir: TaskDir(d.DefaultState), From: "containerd's default"})
	var found []StateSource
	seen := map[string]bool{}
	var looked []string
	for _, c := range candidates {
		if seen[c.Dir] {
			continue
		}
		seen[c.Dir] = true
		if st, err := os.Stat(c.Dir); err == nil && st.IsDir() {
			found = append(found, c)
			continue
		}
		looked = append(looked, c.Dir+" ("+c.From+")")
	}
	if len(found) == 0 {
		return nil, fmt.Errorf("no containerd task state found: looked in %s; is containerd running? "+
			"give -containerd-config FILE (its --config) or -state-dir DIR", strings.Join(looked, ", "))
	}
	return found, nil
}

// stateOfConfig reads the state dir a containerd config sets, containerd's
// default when it sets none. The top-level key is the same in config
// versions 1 to 3.
func stateOfConfig(path, defaultState string) (string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("containerd config: %w", err)
	}
	var cfg struct {
		State string `toml:"state"`
	}
	if err := toml.Unmarshal(data, &cfg); err != nil {
		return "", fmt.Errorf("containerd config %s: %w", path, err)
	}
	if cfg.State == "" {
		return defaultState, nil
	}
	return cfg.State, nil
}

// runningContainerds finds containerd daemons in procRoot and the state
// dir each uses: its --state flag, else its config's state (its --config,
// else defaultConfig), else containerd's default.
func runningContainerds(procRoot, defaultConfig, defaultState string) []StateSource {
	dirs, err := os.ReadDir(procRoot)
	if err != nil {
		return nil
	}
	var pids []int
	for _, e := range dirs {
		if pid, err := strconv.Atoi(e.Name()); err == nil {
			pids = append(pids, pid)
		}
	}
	sort.Ints(pids)
	var out []StateSource
	for _, pid := range pids {
		proc := filepath.Join(procRoot, strconv.Itoa(pid))
		data, err := os.ReadFile(filepath.Join(proc, "cmdline"))
		if err != nil {
			continue
		}
		argv := strings.Split(strings.TrimRight(string(data), "\x00"), "\x00")
		if filepath.Base(argv[0]) != "containerd" {
			continue
		}
		state, config := flagValue(argv[1:], "state"), flagValue(argv[1:], "config", "c")
		from := fmt.Sprintf("containerd pid %d", pid)
		switch {
		case state != "":
			from += " --state"
		case config != "":
			if !filepath.IsAbs(config) {
				// Relative to the daemon's working directory.
				if cwd, err := os.Readlink(filepath.Join(proc, "cwd")); err == nil {
					config = filepath.Join(cwd, config)
				}
			}
			from += " --config " + config
			state, err = stateOfConfig(config, defaultState)
		default:
			state, err = stateOfConfig(defaultConfig, defaultState)
			if errors.Is(err, fs.ErrNotExist) {
				state, err = defaultState, nil
			}
		}
		if err != nil {
			continue
		}
		out = append(out, StateSource{Dir: TaskDir(state), From: from})
	}
	return out
}

// flagValue finds a flag's value in a command line as containerd's flag
// parser takes it: -name VALUE, --name VALUE, -name=VALUE, --name=VALUE.
func flagValue(args []string, names ...string) string {
	for i, a := range args {
		if a == "--" {
			break
		}
		for _, n := range names {
			for _, prefix := range []string{"-", "--"} {
				switch {
				case a == prefix+n && i+1 < len(args):
					return args[i+1]
				case strings.HasPrefix(a, prefix+n+"="):
					return strings.TrimPrefix(a, prefix+n+"=")
				}
			}
		}
	}
	return ""
}
