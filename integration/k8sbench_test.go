//go:build integration

package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestKubernetesBench is the Kubernetes part of make bench: on the test
// node, each unikernel figure beside the same pod on runc, in one run, with
// the ratio. It prints figures and asserts none of them; it fails only
// when a pod does not come up or the node is left unclean.
//
//   - pod created to Ready through the kubelet: the web pod (a web server
//     beside a busybox sidecar, Ready by an HTTP probe), ROUNDS rounds
//     (default 5), the peers alternating and their order swapped each
//     round, so that the machine's noise hits both alike;
//   - the node's memory with DENSITY (default 20) idle pods of one kind,
//     then as many of the other: the node's used memory before and with
//     them, their pod cgroups' usage, the kubelet's stats summary, and the
//     shims beside them.
//
// Only make bench runs it (URUNC_BENCH_K8S=1).
func TestKubernetesBench(t *testing.T) {
	if os.Getenv("URUNC_BENCH_K8S") == "" {
		t.Skip("make bench runs this (URUNC_BENCH_K8S=1)")
	}
	rounds := envInt(t, "ROUNDS", 5)
	density := envInt(t, "DENSITY", 20)
	netnsBefore, _ := filepath.Glob("/var/run/netns/cni-*")
	withK8sHostConfig(t)
	n := startK8sNode(t)
	began := time.Now()

	fmt.Printf("\nKubernetes node (kubelet v1.37.2, containerd's CRI; unikernel pods: RuntimeClass urunc, qemu TCG, Debian's kernel)\n")
	n.benchStartLatency(t, rounds)
	n.benchMemory(t, density)
	n.drainLeavesNothing(t, netnsBefore)
	fmt.Printf("  (the Kubernetes bench took %s after the node was up; nothing left on the host)\n",
		time.Since(began).Round(time.Second))
}

func envInt(t *testing.T, name string, def int) int {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	i, err := strconv.Atoi(v)
	if err != nil || i < 1 {
		t.Fatalf("%s=%q: want a positive number", name, v)
	}
	return i
}

func kindName(onRunc bool) string {
	if onRunc {
		return "runc"
	}
	return "urunc"
}

// benchStartLatency prints the web pod's time from created to Ready, for
// the unikernel and for the same pod shape on runc.
func (n *k8sNode) benchStartLatency(t *testing.T, rounds int) {
	times := map[bool][]time.Duration{}
	for i := 1; i <= rounds; i++ {
		order := []bool{false, true}
		if i%2 == 0 {
			order = []bool{true, false}
		}
		for _, onRunc := range order {
			name := fmt.Sprintf("web-%s-%d", kindName(onRunc), i)
			took := n.createdToReady(t, name, webPodManifest(t, name, onRunc), 5*time.Minute)
			times[onRunc] = append(times[onRunc], took)
			n.kubectl(t, "delete", "pod", name, "--wait", "--timeout", "120s")
			n.waitNodeEmpty(t, 3*time.Minute)
		}
	}
	fmt.Printf("pod created -> Ready through the kubelet, a web server beside a busybox sidecar (HTTP readiness probe every 2 s), %d rounds alternating:\n", rounds)
	for _, onRunc := range []bool{false, true} {
		what := "unikernel (urunc, qemu TCG)"
		if onRunc {
			what = "runc (busybox httpd)"
		}
		d := times[onRunc]
		fmt.Printf("  %-28s median %6.2f s  min %6.2f  max %6.2f  (%s)\n", what,
			median(d).Seconds(), minDuration(d).Seconds(), maxDuration(d).Seconds(), secondsList(d))
	}
	fmt.Printf("  ratio unikernel/runc (medians) %.2f\n", median(times[false]).Seconds()/median(times[true]).Seconds())
}

// createdToReady applies the manifest of one pod and returns the time from
// the API server's first report of the pod (its ADDED event on a watch set
// up before) to the event that has its Ready condition True.
func (n *k8sNode) createdToReady(t *testing.T, name, manifest string, timeout time.Duration) time.Duration {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, n.apiURL+"/api/v1/namespaces/default/pods?watch=true&fieldSelector="+
		url.QueryEscape("metadata.name="+name), nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+k8sToken)
	// A watch lives as long as its context: the API client's own timeout
	// would cut it.
	resp, err := (&http.Client{Transport: n.api.Transport}).Do(req)
	if err != nil {
		t.Fatalf("watch pod %s: %v", name, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("watch pod %s: %s", name, resp.Status)
	}
	type event struct {
		at     time.Time
		Type   string
		Object k8sPod
	}
	// Events are timed as they arrive, while kubectl apply still runs.
	events := make(chan event)
	go func() {
		defer close(events)
		dec := json.NewDecoder(resp.Body)
		for {
			var ev event
			if dec.Decode(&ev) != nil {
				return
			}
			ev.at = time.Now()
			select {
			case events <- ev:
			case <-ctx.Done():
				return
			}
		}
	}()
	n.apply(t, manifest)
	var created time.Time
	var last k8sPod
	for ev := range events {
		if ev.Type != "ADDED" && ev.Type != "MODIFIED" {
			continue
		}
		if created.IsZero() {
			created = ev.at
		}
		last = ev.Object
		if conditionTrue(ev.Object.Status.Conditions, "Ready") {
			return ev.at.Sub(created)
		}
		if p := ev.Object.Status.Phase; p == "Failed" || p == "Succeeded" {
			break
		}
	}
	status, _ := json.MarshalIndent(last.Status, "", " ")
	t.Fatalf("pod %s did not become Ready within %s; last status:\n%s", name, timeout, status)
	return 0
}

// waitNodeEmpty waits until no pod is left on the node, in the API server
// or on the host: no pod cgroup, monitor, shim of either kind or ready
// sandbox.
func (n *k8sNode) waitNodeEmpty(t *testing.T, timeout time.Duration) {
	t.Helper()
	waitFor(t, timeout, "the node to hold no pod", func() bool {
		var pods struct{ Items []k8sPod }
		if n.getJSON("/api/v1/namespaces/default/pods", &pods) != nil || len(pods.Items) > 0 {
			return false
		}
		if len(podCgroups()) > 0 || len(monitorProcesses()) > 0 || len(shimDaemons()) > 0 || len(runcShims()) > 0 {
			return false
		}
		ready, _, err := crictlRaw("pods", "--state", "ready", "-q")
		return err == nil && ready == ""
	})
}

// runcShims lists containerd's runc shims serving the test daemon.
func runcShims() []int {
	return processesWhere(func(pid int) bool {
		exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
		if err != nil || filepath.Base(strings.TrimSuffix(exe, " (deleted)")) != "containerd-shim-runc-v2" {
			return false
		}
		cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		return strings.Contains(string(cmdline), "\x00"+env.socket())
	})
}

// benchRuntimeClass is urunc's RuntimeClass less its CPU overhead: the
// kubelet counts each pod's 100m of overhead against the node's 2 CPUs
// when it admits pods, and turned away the twelfth of 20 idle pods of
// class urunc (OutOfcpu) after the web pods' rounds. The handler, and so
// the pods' VMs, are the same.
const benchRuntimeClass = `apiVersion: node.k8s.io/v1
kind: RuntimeClass
metadata:
  name: urunc-bench
handler: urunc
overhead:
  podFixed:
    memory: 72Mi
`

// idlePods is the manifest of count idle pods of one kind, labelled
// urunc-bench=memory: a guest that prints its ready line and idles, of
// RuntimeClass urunc-bench, or a busybox shell that sleeps, on runc. No
// memory limit: the guest gets the host config's default RAM.
func idlePods(onRunc bool, count int) string {
	var docs []string
	for i := 1; i <= count; i++ {
		spec := `  runtimeClassName: urunc-bench
  containers:
  - name: guest
    image: docker.io/urunc/test-guest:latest
    imagePullPolicy: Never
    args: ["sleep"]`
		if onRunc {
			spec = `  containers:
  - name: idle
    image: docker.io/urunc/test-plain:latest
    imagePullPolicy: Never
    command: ["/bin/busybox", "sh", "-c", "trap 'exit 0' TERM; while :; do /bin/busybox sleep 1000 & wait; done"]`
		}
		docs = append(docs, fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata:
  name: idle-%s-%d
  labels: {urunc-bench: memory}
spec:
  nodeName: %s
  # A guest that stops is a failed bench, not one to restart.
  restartPolicy: Never
  terminationGracePeriodSeconds: 30
%s
`, kindName(onRunc), i, k8sNodeName, spec))
	}
	return strings.Join(docs, "---\n")
}

// memoryFigures is what the node holds for a set of pods, in bytes.
type memoryFigures struct {
	nodeUsedDelta     int64 // MemTotal-MemAvailable with the pods, less before them
	cgroupUsage       int64 // the pods' cgroups' usage, summed
	cgroupWorkingSet  int64 // that less inactive file pages, as the kubelet counts it
	summaryWorkingSet int64 // the kubelet's stats summary, the pods' working set summed
	summaryRSS        int64
	shims             int
	shimsPSS          int64 // the shims serving them (outside the pod cgroups)
	upIn              time.Duration
	goneIn            time.Duration
	guestRAM          []string // qemu's -m of each guest
	// The monitors' resident memory, and of it the pages of the mapping
	// that is the guest's RAM (the rest is qemu's own: its code,
	// libraries, TCG's translation cache, device state).
	monitorsRSS, guestRAMResident int64
}

// benchMemory brings up density idle pods of each kind in turn (all of one
// kind up, measured, deleted, the node empty again, then the other) and
// prints what the node holds for them.
func (n *k8sNode) benchMemory(t *testing.T, density int) {
	n.apply(t, benchRuntimeClass)
	figures := map[bool]memoryFigures{}
	for _, onRunc := range []bool{false, true} {
		figures[onRunc] = n.memoryWith(t, onRunc, density)
	}
	u, r := figures[false], figures[true]
	fmt.Printf("node memory with %d idle pods of each kind, one kind at a time (unikernel: the test guest's sleep, RuntimeClass urunc less its CPU overhead, no memory limit, so the host default of %d MB RAM (qemu -m %s); runc: busybox sh sleeping):\n",
		density, k8sGuestMemoryMB, strings.Join(uniq(u.guestRAM), ","))
	fmt.Printf("  %-52s %14s %14s %7s\n", "", "unikernel", "runc", "ratio")
	row := func(what string, a, b int64) {
		fmt.Printf("  %-52s %10.1f MiB %10.1f MiB %7s\n", what, mibf(a), mibf(b), ratioOf(a, b))
		fmt.Printf("  %-52s %10.1f MiB %10.1f MiB\n", "  per pod", mibf(a)/float64(density), mibf(b)/float64(density))
	}
	row("node used (MemTotal-MemAvailable), with pods - before", u.nodeUsedDelta, r.nodeUsedDelta)
	row("pod cgroups' memory usage, summed", u.cgroupUsage, r.cgroupUsage)
	row("pod cgroups' working set (usage - inactive file)", u.cgroupWorkingSet, r.cgroupWorkingSet)
	row("kubelet /stats/summary pods' working set, summed", u.summaryWorkingSet, r.summaryWorkingSet)
	row("kubelet /stats/summary pods' RSS, summed", u.summaryRSS, r.summaryRSS)
	fmt.Printf("  %-52s %10.1f MiB %10.1f MiB %7s  (%d urunc shims, %d runc shims)\n", "shims' PSS, summed (outside the pod cgroups)",
		mibf(u.shimsPSS), mibf(r.shimsPSS), ratioOf(u.shimsPSS, r.shimsPSS), u.shims, r.shims)
	if u.monitorsRSS > 0 {
		fmt.Printf("  %-52s %10.1f MiB, of it the guest's RAM %.1f MiB, qemu's own %.1f MiB\n", "  per unikernel pod: qemu's RSS",
			mibf(u.monitorsRSS)/float64(density), mibf(u.guestRAMResident)/float64(density), mibf(u.monitorsRSS-u.guestRAMResident)/float64(density))
	}
	fmt.Printf("  %-52s %12.1f s %12.1f s %7.2f\n", "applied -> all up (guests: their ready line)", u.upIn.Seconds(), r.upIn.Seconds(), u.upIn.Seconds()/r.upIn.Seconds())
	fmt.Printf("  %-52s %12.1f s %12.1f s\n", "deleted -> node empty", u.goneIn.Seconds(), r.goneIn.Seconds())
}

// memoryWith runs density idle pods of one kind on the empty node and
// measures the node with them.
func (n *k8sNode) memoryWith(t *testing.T, onRunc bool, density int) memoryFigures {
	t.Helper()
	var f memoryFigures
	n.waitNodeEmpty(t, 5*time.Minute)
	before := nodeUsedMemory(t)
	start := time.Now()
	n.apply(t, idlePods(onRunc, density))
	var pods []k8sPod
	waitFor(t, 20*time.Minute, fmt.Sprintf("%d %s pods up", density, kindName(onRunc)), func() bool {
		pods = n.benchPods(t)
		up := 0
		for i := range pods {
			p := &pods[i]
			if p.Status.Phase == "Failed" || p.Status.Phase == "Succeeded" {
				status, _ := json.MarshalIndent(p.Status, "", " ")
				t.Fatalf("pod %s ended:\n%s", p.Metadata.Name, status)
			}
			if conditionTrue(p.Status.Conditions, "Ready") && (onRunc || n.guestPrinted(p.Metadata.Name, "URUNC_GUEST_READY")) {
				up++
			}
		}
		return up == density
	})
	f.upIn = time.Since(start)
	t.Logf("%d %s pods up in %s", density, kindName(onRunc), f.upIn.Round(time.Millisecond))
	// The kubelet's summary comes from its periodic housekeeping: wait
	// until it has every pod, then read the host at the same moment.
	uids := map[string]string{}
	for _, p := range pods {
		uids[p.Metadata.Name] = p.Metadata.UID
	}
	waitFor(t, 5*time.Minute, "every bench pod's memory in the kubelet's stats summary", func() bool {
		ws, rss, seen := n.summaryMemory(uids)
		f.summaryWorkingSet, f.summaryRSS = ws, rss
		return seen == len(uids)
	})
	f.nodeUsedDelta = nodeUsedMemory(t) - before
	for name, uid := range uids {
		usage, ws, err := podCgroupMemory(uid)
		if err != nil {
			t.Fatalf("pod %s: %v", name, err)
		}
		f.cgroupUsage += usage
		f.cgroupWorkingSet += ws
	}
	shims := runcShims()
	if !onRunc {
		shims = shimDaemons()
		for _, pid := range monitorProcesses() {
			f.guestRAM = append(f.guestRAM, qemuMemoryArg(pid))
			f.monitorsRSS += smapsRollup(pid, "Rss")
			f.guestRAMResident += guestRAMRss(pid, k8sGuestMemoryMB<<20)
		}
		if len(f.guestRAM) != density {
			t.Fatalf("%d monitors for %d unikernel pods", len(f.guestRAM), density)
		}
	}
	f.shims = len(shims)
	for _, pid := range shims {
		f.shimsPSS += smapsRollup(pid, "Pss")
	}
	start = time.Now()
	n.kubectl(t, "delete", "pod", "-l", "urunc-bench=memory", "--wait", "--timeout", "600s")
	n.waitNodeEmpty(t, 5*time.Minute)
	f.goneIn = time.Since(start)
	return f
}

// benchPods lists the memory bench's pods.
func (n *k8sNode) benchPods(t *testing.T) []k8sPod {
	t.Helper()
	var pods struct{ Items []k8sPod }
	if err := n.getJSON("/api/v1/namespaces/default/pods?labelSelector="+url.QueryEscape("urunc-bench=memory"), &pods); err != nil {
		t.Logf("list pods: %v", err)
	}
	return pods.Items
}

// guestPrinted reports whether the guest container of the pod has printed
// line in its log, read where the kubelet writes it.
func (n *k8sNode) guestPrinted(pod, line string) bool {
	logs, _ := filepath.Glob(filepath.Join(n.podLogsDir, "default_"+pod+"_*", "guest", "*.log"))
	for _, l := range logs {
		if data, err := os.ReadFile(l); err == nil && strings.Contains(string(data), line) {
			return true
		}
	}
	return false
}

// summaryMemory sums the pod-level working set and RSS that the kubelet's
// stats summary gives for the pods named in uids, and says how many of
// them it has figures for.
func (n *k8sNode) summaryMemory(uids map[string]string) (ws, rss int64, seen int) {
	type memory struct{ WorkingSetBytes, RSSBytes *int64 }
	var summary struct {
		Pods []struct {
			PodRef     struct{ Name, UID string }
			Memory     *memory
			Containers []struct{ Memory *memory }
		}
	}
	if n.getJSON("/api/v1/nodes/"+k8sNodeName+"/proxy/stats/summary", &summary) != nil {
		return 0, 0, 0
	}
	for _, p := range summary.Pods {
		if uids[p.PodRef.Name] != p.PodRef.UID {
			continue
		}
		m := p.Memory
		if m == nil || m.WorkingSetBytes == nil || *m.WorkingSetBytes == 0 {
			continue
		}
		ws += *m.WorkingSetBytes
		if m.RSSBytes != nil {
			rss += *m.RSSBytes
		}
		seen++
	}
	return ws, rss, seen
}

// nodeUsedMemory is MemTotal - MemAvailable, in bytes.
func nodeUsedMemory(t *testing.T) int64 {
	t.Helper()
	data, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		t.Fatal(err)
	}
	kb := map[string]int64{}
	for _, l := range strings.Split(string(data), "\n") {
		if f := strings.Fields(l); len(f) >= 2 {
			kb[strings.TrimSuffix(f[0], ":")], _ = strconv.ParseInt(f[1], 10, 64)
		}
	}
	return (kb["MemTotal"] - kb["MemAvailable"]) << 10
}

// podCgroupMemory reads the memory usage of the pod's cgroup (cgroup v1's
// memory controller, or v2) and its working set, as the kubelet counts it:
// usage less inactive file pages.
func podCgroupMemory(uid string) (usage, workingSet int64, err error) {
	var dirs []string
	for _, pattern := range []string{"/sys/fs/cgroup/memory/kubepods/pod", "/sys/fs/cgroup/memory/kubepods/*/pod",
		"/sys/fs/cgroup/kubepods/pod", "/sys/fs/cgroup/kubepods/*/pod"} {
		m, _ := filepath.Glob(pattern + uid)
		dirs = append(dirs, m...)
	}
	if len(dirs) != 1 {
		return 0, 0, fmt.Errorf("cgroup of pod %s: %v", uid, dirs)
	}
	usageFile, inactiveKey := "memory.usage_in_bytes", "total_inactive_file"
	if strings.HasPrefix(dirs[0], "/sys/fs/cgroup/kubepods") {
		usageFile, inactiveKey = "memory.current", "inactive_file"
	}
	data, err := os.ReadFile(filepath.Join(dirs[0], usageFile))
	if err != nil {
		return 0, 0, fmt.Errorf("pod cgroup memory usage: %w", err)
	}
	usage, err = strconv.ParseInt(strings.TrimSpace(string(data)), 10, 64)
	if err != nil {
		return 0, 0, fmt.Errorf("pod cgroup memory usage %q: %w", data, err)
	}
	stat, err := os.ReadFile(filepath.Join(dirs[0], "memory.stat"))
	if err != nil {
		return 0, 0, fmt.Errorf("pod cgroup memory.stat: %w", err)
	}
	var inactive int64
	for _, l := range strings.Split(string(stat), "\n") {
		if f := strings.Fields(l); len(f) == 2 && f[0] == inactiveKey {
			inactive, _ = strconv.ParseInt(f[1], 10, 64)
		}
	}
	return usage, max(usage-inactive, 0), nil
}

// smapsRollup reads a figure of /proc/PID/smaps_rollup, in bytes.
func smapsRollup(pid int, key string) int64 {
	data, _ := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	for _, l := range strings.Split(string(data), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == key+":" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	return 0
}

// guestRAMRss is the resident size of the qemu's mapping that holds its
// guest's RAM: the largest one of at least ramBytes and at most 8 MiB
// more (qemu aligns it); 0 if there is none.
func guestRAMRss(pid int, ramBytes int64) int64 {
	data, _ := os.ReadFile(fmt.Sprintf("/proc/%d/smaps", pid))
	var size, best, bestRss int64
	for _, l := range strings.Split(string(data), "\n") {
		f := strings.Fields(l)
		if len(f) < 2 {
			continue
		}
		kb, _ := strconv.ParseInt(f[1], 10, 64)
		switch f[0] {
		case "Size:":
			size = kb << 10
		case "Rss:":
			if size >= ramBytes && size <= ramBytes+8<<20 && size > best {
				best, bestRss = size, kb<<10
			}
		}
	}
	return bestRss
}

// qemuMemoryArg is the value of a qemu's -m argument, the guest's RAM.
func qemuMemoryArg(pid int) string {
	cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	args := strings.Split(string(cmdline), "\x00")
	for i := 0; i+1 < len(args); i++ {
		if args[i] == "-m" {
			return args[i+1]
		}
	}
	return "?"
}

func median(d []time.Duration) time.Duration {
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func minDuration(d []time.Duration) time.Duration {
	m := d[0]
	for _, v := range d[1:] {
		m = min(m, v)
	}
	return m
}

func maxDuration(d []time.Duration) time.Duration {
	m := d[0]
	for _, v := range d[1:] {
		m = max(m, v)
	}
	return m
}

func secondsList(d []time.Duration) string {
	var s []string
	for _, v := range d {
		s = append(s, fmt.Sprintf("%.2f", v.Seconds()))
	}
	return strings.Join(s, " ")
}

func mibf(b int64) float64 { return float64(b) / (1 << 20) }

func ratioOf(a, b int64) string {
	if b <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.2f", float64(a)/float64(b))
}

func uniq(l []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, s := range l {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}
