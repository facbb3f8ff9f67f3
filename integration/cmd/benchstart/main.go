// Command benchstart breaks a container's start down, for make bench: it
// runs one container at a time through containerd's Go client, as
// `ctr run --rm` does, times each client call, and reads from
// containerd's debug log what the shim spent inside them (the daemon's
// boot, each step of Create). It prints the median of each part and its
// share of the whole.
//
//	benchstart -address SOCK -log CONTAINERD_LOG -image REF -runtime NAME [-n N] -- ARGS...
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/oci"
)

func main() {
	address := flag.String("address", "", "containerd socket")
	logPath := flag.String("log", "", "containerd's log (debug level), for the shim's own timings")
	image := flag.String("image", "", "image")
	runtime := flag.String("runtime", "io.containerd.urunc.v2", "runtime")
	n := flag.Int("n", 10, "rounds")
	flag.Parse()
	if err := run(*address, *logPath, *image, *runtime, *n, flag.Args()); err != nil {
		fmt.Fprintln(os.Stderr, "benchstart:", err)
		os.Exit(1)
	}
}

// The client's calls, in order; what containerd and the shim do in each.
var calls = []struct{ name, what string }{
	{"container", "NewContainer: snapshot and metadata (containerd only)"},
	{"task", "NewTask: start command, shim daemon boot, Create"},
	{"start", "Start"},
	{"exit", "Wait: until the monitor's exit is reported"},
	{"delete", "Delete task: Delete (unmount, cgroup, state), Shutdown"},
	{"remove", "Delete container and its snapshot (containerd only)"},
}

func run(address, logPath, image, runtime string, n int, args []string) error {
	client, err := containerd.New(address)
	if err != nil {
		return err
	}
	defer client.Close()
	ctx := namespaces.WithNamespace(context.Background(), "default")
	img, err := client.GetImage(ctx, image)
	if err != nil {
		return err
	}
	times := map[string][]time.Duration{}
	var totals []time.Duration
	for i := 0; i < n; i++ {
		id := fmt.Sprintf("benchstart-%d-%d", os.Getpid(), i)
		t := time.Now()
		lap := func(name string) {
			now := time.Now()
			times[name] = append(times[name], now.Sub(t))
			t = now
		}
		begin := t
		c, err := client.NewContainer(ctx, id, containerd.WithNewSnapshot(id, img), containerd.WithRuntime(runtime, nil),
			containerd.WithNewSpec(oci.WithImageConfig(img), oci.WithProcessArgs(args...)))
		if err != nil {
			return err
		}
		lap("container")
		task, err := c.NewTask(ctx, cio.NullIO)
		if err != nil {
			return err
		}
		lap("task")
		exitc, err := task.Wait(ctx)
		if err != nil {
			return err
		}
		if err := task.Start(ctx); err != nil {
			return err
		}
		lap("start")
		<-exitc
		lap("exit")
		if _, err := task.Delete(ctx); err != nil {
			return err
		}
		lap("delete")
		if err := c.Delete(ctx, containerd.WithSnapshotCleanup); err != nil {
			return err
		}
		lap("remove")
		totals = append(totals, time.Since(begin))
	}
	total := median(totals)
	fmt.Printf("where a container's start goes: %s, %d rounds, medians (ms, share of the whole):\n", runtime, n)
	for _, c := range calls {
		m := median(times[c.name])
		fmt.Printf("  %-10s %7.1f  %4.0f%%  %s\n", c.name, ms(m), 100*float64(m)/float64(total), c.what)
	}
	fmt.Printf("  %-10s %7.1f  100%%\n", "whole", ms(total))
	if logPath == "" {
		return nil
	}
	shim, err := shimTimings(logPath)
	if err != nil {
		return err
	}
	if len(shim) > 0 {
		fmt.Println("  inside the shim (from its debug log; medians, ms):")
		for _, k := range shimKeys(shim) {
			m := median(shim[k])
			fmt.Printf("    %-12s %7.2f  %4.0f%%\n", k, ms(m), 100*float64(m)/float64(total))
		}
	}
	return nil
}

var (
	bootRE  = regexp.MustCompile(`boot_ms=([0-9.]+)`)
	stepsRE = regexp.MustCompile(`steps="([^"]*)"`)
	stepRE  = regexp.MustCompile(`(\w+)=([0-9.]+)ms`)
)

// shimTimings reads the shim's "daemon ready", "create timeline" and
// "delete timeline" lines.
func shimTimings(path string) (map[string][]time.Duration, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	out := map[string][]time.Duration{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		// Only this program's containers run while it does.
		var phase string
		switch {
		case strings.Contains(line, "create timeline"):
			phase = "create"
		case strings.Contains(line, "delete timeline"):
			phase = "delete"
		case !strings.Contains(line, "daemon ready"):
			continue
		}
		if m := bootRE.FindStringSubmatch(line); m != nil {
			out["00 daemon boot"] = append(out["00 daemon boot"], parseMs(m[1]))
		}
		if m := stepsRE.FindStringSubmatch(line); m != nil {
			for i, s := range stepRE.FindAllStringSubmatch(m[1], -1) {
				n := i + 1
				if phase == "delete" {
					n += 10
				}
				k := fmt.Sprintf("%02d %s:%s", n, phase, s[1])
				out[k] = append(out[k], parseMs(s[2]))
			}
		}
	}
	return out, sc.Err()
}

func shimKeys(m map[string][]time.Duration) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func parseMs(s string) time.Duration {
	f, _ := strconv.ParseFloat(s, 64)
	return time.Duration(f * float64(time.Millisecond))
}

func median(d []time.Duration) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
