package inventory

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fakeProc writes /proc/PID/cmdline (and cwd) entries for the given
// command lines.
func fakeProc(t *testing.T, procs map[string][]string, cwd map[string]string) string {
	t.Helper()
	root := t.TempDir()
	for pid, argv := range procs {
		dir := filepath.Join(root, pid)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "cmdline"), []byte(strings.Join(argv, "\x00")+"\x00"), 0o644); err != nil {
			t.Fatal(err)
		}
		if c, ok := cwd[pid]; ok {
			if err := os.Symlink(c, filepath.Join(dir, "cwd")); err != nil {
				t.Fatal(err)
			}
		}
	}
	// Entries that are not processes are skipped.
	if err := os.MkdirAll(filepath.Join(root, "self"), 0o755); err != nil {
		t.Fatal(err)
	}
	return root
}

func write(t *testing.T, path, data string) string {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func mkdir(t *testing.T, path string) string {
	t.Helper()
	if err := os.MkdirAll(path, 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestFindTaskDirs(t *testing.T) {
	tmp := t.TempDir()
	// A containerd run with --config (a private one, as the tests run).
	privateState := filepath.Join(tmp, "private-state")
	privateCfg := write(t, filepath.Join(tmp, "private.toml"), "version = 3\nroot = \"/x\"\nstate = \""+privateState+"\"\n[grpc]\n  address = \"/x.sock\"\n")
	mkdir(t, TaskDir(privateState))
	// One with --state, one with a config relative to its cwd.
	flagState := filepath.Join(tmp, "flag-state")
	mkdir(t, TaskDir(flagState))
	relState := filepath.Join(tmp, "rel-state")
	write(t, filepath.Join(tmp, "cwd", "rel.toml"), "state = '"+relState+"'\n")
	mkdir(t, TaskDir(relState))
	// The host's default config and state.
	defaultState := filepath.Join(tmp, "run-containerd")
	defaultCfg := filepath.Join(tmp, "etc", "config.toml")
	hostState := filepath.Join(tmp, "host-state")

	proc := fakeProc(t, map[string][]string{
		"100": {"/usr/local/bin/containerd", "--config", privateCfg},
		"200": {"containerd", "--state=" + flagState, "--config", privateCfg},
		"300": {"containerd", "-c", "rel.toml"},
		"400": {"/usr/bin/containerd-shim-runc-v2", "-namespace", "k8s.io", "--config", "/nope"},
		"500": {"containerd"}, // the default config, then the default state
		"600": {"containerd", "--config", filepath.Join(tmp, "missing.toml")},
	}, map[string]string{"300": filepath.Join(tmp, "cwd")})

	names := func(srcs []StateSource) string {
		var out []string
		for _, s := range srcs {
			out = append(out, strings.TrimPrefix(s.Dir, tmp+"/")+" <- "+strings.ReplaceAll(s.From, tmp+"/", ""))
		}
		return strings.Join(out, "\n")
	}

	for _, tc := range []struct {
		name    string
		d       Discovery
		setup   func(t *testing.T)
		want    string
		wantErr []string
	}{
		{
			name: "-state-dir alone, even missing",
			d:    Discovery{StateDir: filepath.Join(tmp, "given"), ProcRoot: proc},
			want: "given <- -state-dir",
		},
		{
			name: "-containerd-config: its state",
			d:    Discovery{ContainerdConfig: privateCfg, ProcRoot: proc},
			want: "private-state/io.containerd.runtime.v2.task <- private.toml",
		},
		{
			name:    "-containerd-config missing",
			d:       Discovery{ContainerdConfig: filepath.Join(tmp, "missing.toml")},
			wantErr: []string{"missing.toml", "no such file"},
		},
		{
			name:    "-containerd-config garbled",
			d:       Discovery{ContainerdConfig: write(t, filepath.Join(tmp, "bad.toml"), "state = \n")},
			wantErr: []string{"bad.toml"},
		},
		{
			name: "running containerds, each state once, those that exist",
			d:    Discovery{ProcRoot: proc, DefaultConfig: defaultCfg, DefaultState: defaultState},
			want: "private-state/io.containerd.runtime.v2.task <- containerd pid 100 --config private.toml\n" +
				"flag-state/io.containerd.runtime.v2.task <- containerd pid 200 --state\n" +
				"rel-state/io.containerd.runtime.v2.task <- containerd pid 300 --config cwd/rel.toml",
		},
		{
			name: "the host's config and default state join them",
			d:    Discovery{ProcRoot: proc, DefaultConfig: defaultCfg, DefaultState: defaultState},
			setup: func(t *testing.T) {
				write(t, defaultCfg, "state = \""+hostState+"\"\n")
				mkdir(t, TaskDir(hostState))
				mkdir(t, TaskDir(defaultState))
				t.Cleanup(func() { os.RemoveAll(filepath.Join(tmp, "etc")); os.RemoveAll(hostState); os.RemoveAll(defaultState) })
			},
			want: "private-state/io.containerd.runtime.v2.task <- containerd pid 100 --config private.toml\n" +
				"flag-state/io.containerd.runtime.v2.task <- containerd pid 200 --state\n" +
				"rel-state/io.containerd.runtime.v2.task <- containerd pid 300 --config cwd/rel.toml\n" +
				"host-state/io.containerd.runtime.v2.task <- containerd pid 500\n" +
				"run-containerd/io.containerd.runtime.v2.task <- containerd's default",
		},
		{
			name: "no containerd running: the default state",
			d:    Discovery{ProcRoot: t.TempDir(), DefaultConfig: defaultCfg, DefaultState: defaultState},
			setup: func(t *testing.T) {
				mkdir(t, TaskDir(defaultState))
				t.Cleanup(func() { os.RemoveAll(defaultState) })
			},
			want: "run-containerd/io.containerd.runtime.v2.task <- containerd's default",
		},
		{
			name:    "nothing anywhere: says where it looked and what to give",
			d:       Discovery{ProcRoot: t.TempDir(), DefaultConfig: defaultCfg, DefaultState: defaultState},
			wantErr: []string{TaskDir(defaultState) + " (containerd's default)", "is containerd running?", "-containerd-config", "-state-dir"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.setup != nil {
				tc.setup(t)
			}
			got, err := FindTaskDirs(tc.d)
			if tc.wantErr != nil {
				if err == nil {
					t.Fatalf("FindTaskDirs = %s, want an error", names(got))
				}
				for _, w := range tc.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q lacks %q", err, w)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if names(got) != tc.want {
				t.Errorf("FindTaskDirs:\n%s\nwant:\n%s", names(got), tc.want)
			}
		})
	}
}

func TestStateOfConfig(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct{ name, data, want string }{
		{"version 3", "version = 3\nstate = \"/s3\"\n[plugins.x]\n  state = \"/not-this\"\n", "/s3"},
		{"version 2", "version = 2\nroot = \"/r\"\nstate = \"/s2\"\n", "/s2"},
		{"no state key", "version = 2\n", "/default"},
		{"empty file", "", "/default"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := stateOfConfig(write(t, filepath.Join(dir, tc.name+".toml"), tc.data), "/default")
			if err != nil || got != tc.want {
				t.Errorf("stateOfConfig = %q, %v, want %q", got, err, tc.want)
			}
		})
	}
}

func TestFlagValue(t *testing.T) {
	for _, tc := range []struct {
		args  []string
		names []string
		want  string
	}{
		{[]string{"--config", "/a"}, []string{"config", "c"}, "/a"},
		{[]string{"-config", "/a"}, []string{"config", "c"}, "/a"},
		{[]string{"-c", "/a"}, []string{"config", "c"}, "/a"},
		{[]string{"--config=/a"}, []string{"config", "c"}, "/a"},
		{[]string{"-c=/a"}, []string{"config", "c"}, "/a"},
		{[]string{"--log-level", "debug", "--state", "/s"}, []string{"state"}, "/s"},
		{[]string{"--config"}, []string{"config"}, ""},
		{[]string{"--configx", "/a"}, []string{"config"}, ""},
		{[]string{"--", "--config", "/a"}, []string{"config"}, ""},
		{nil, []string{"config"}, ""},
	} {
		if got := flagValue(tc.args, tc.names...); got != tc.want {
			t.Errorf("flagValue(%q, %q) = %q, want %q", tc.args, tc.names, got, tc.want)
		}
	}
}
