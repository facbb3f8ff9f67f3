//go:build integration

package integration

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	goruntime "runtime"
	"strings"
	"testing"
	"time"

	"github.com/urunc-dev/containerd-shim-urunc-v2/integration/testimage"
)

// critestBinary is cri-tools' CRI validation suite (cmd/critest, built
// with go test -c by setup.sh).
const critestBinary = "/usr/local/lib/urunc-test/critest"

// Specs chosen from critest, and the ones skipped, each for its reason
// (integration/critest.md lists them): the suite's own images, which these
// stand-ins cannot replace, or a host feature these machines lack.
const (
	critestFocus = `PodSandbox|Container|Streaming|Networking|Runtime info|Multiple Containers|Idempotence|Security Context|SeccompProfilePath`
	critestSkip  = `Image|AppArmor|SELinux|NRI|UserNamespaces|SupplementalGroupsPolicy|NoNewPrivs|HostPID|ContainerPID|HostIpc|MaskedPaths`
)

// The CRI validation suite against containerd with runtime handler urunc:
// under it, critest's busybox containers run through runc in this shim,
// so it exercises the shim's plain path and pod handling. The suite's
// images cannot be pulled here; busybox stand-ins are imported under
// names given to it with --test-images-file. `make critest` runs it
// (URUNC_CRITEST=1) and prints the counts; it fails on any failed spec.
func TestCritest(t *testing.T) {
	if os.Getenv("URUNC_CRITEST") == "" {
		t.Skip("the CRI validation suite runs with make critest")
	}
	if _, err := os.Stat(critestBinary); err != nil {
		t.Fatalf("no critest (integration/setup.sh builds it): %v", err)
	}
	criNetwork(t)
	// Whether the suite passed or not, its pods leave nothing of this
	// runtime: no shim, monitor, runc state, socket or mount.
	t.Cleanup(func() { assertNoLeftovers(t, "critest") })
	dir := t.TempDir()
	// Each stand-in, imported into the CRI's namespace under its own name
	// and the names the suite's specs use outright.
	for _, img := range []struct {
		name    string
		port    int
		aliases []string
	}{
		{testimage.BusyboxImageName, 0, nil},
		{testimage.WebServerImageName, 80, []string{"registry.k8s.io/e2e-test-images/httpd:2.4.39-4", "registry.k8s.io/e2e-test-images/nginx:1.14-2"}},
		{testimage.HostNetWebServerImageName, 12003, []string{"gcr.io/k8s-staging-cri-tools/hostnet-nginx-" + goruntime.GOARCH + ":latest"}},
	} {
		archive := filepath.Join(dir, filepath.Base(strings.Split(img.name, ":")[0])+".tar")
		if err := testimage.WriteBusyboxArchive(archive, "/bin/busybox", img.name, img.port); err != nil {
			t.Fatal(err)
		}
		if out, err := ctrContext(context.Background(), "--namespace", criNamespace, "images", "import", archive); err != nil {
			t.Fatalf("import %s: %v\n%s", archive, err, out)
		}
		for _, alias := range img.aliases {
			if out, err := ctrContext(context.Background(), "--namespace", criNamespace, "images", "tag", "--force", img.name, alias); err != nil {
				t.Fatalf("tag %s as %s: %v\n%s", img.name, alias, err, out)
			}
		}
	}
	images := filepath.Join(dir, "images.yaml")
	if err := os.WriteFile(images, []byte(fmt.Sprintf("defaultTestContainerImage: %s\nwebServerTestImage: %s\n",
		testimage.BusyboxImageName, testimage.WebServerImageName)), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	// URUNC_CRITEST_FOCUS and URUNC_CRITEST_SKIP override the choice,
	// to look at other specs.
	focus, skip := critestFocus, critestSkip
	if f := os.Getenv("URUNC_CRITEST_FOCUS"); f != "" {
		focus = f
	}
	if s := os.Getenv("URUNC_CRITEST_SKIP"); s != "" {
		skip = s
	}
	cmd := exec.CommandContext(ctx, critestBinary,
		"--runtime-endpoint", "unix://"+env.socket(), "--image-endpoint", "unix://"+env.socket(),
		"--runtime-handler", "urunc", "--test-images-file", images,
		"--ginkgo.focus", focus, "--ginkgo.skip", skip, "--ginkgo.no-color", "--ginkgo.v")
	// Kept after the run (the test's own dir is removed).
	logPath := filepath.Join(os.TempDir(), "urunc-critest.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close()
	cmd.Stdout, cmd.Stderr = logFile, logFile
	runErr := cmd.Run()
	summary, failed := critestSummary(t, logPath)
	fmt.Printf("critest (runtime handler urunc): %s\n", summary)
	for _, f := range failed {
		fmt.Printf("critest FAIL: %s\n", f)
	}
	if runErr != nil || len(failed) > 0 {
		t.Fatalf("critest: %v; %d failed specs (full log: %s)", runErr, len(failed), logPath)
	}
	waitFor(t, 30*time.Second, "critest's shims to exit", func() bool { return len(processesOf(env.shimPath)) == 0 })
}

// critestSummary reads ginkgo's counts and the failed specs' names.
func critestSummary(t *testing.T, path string) (string, []string) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	counts := regexp.MustCompile(`^(Ran \d+ of \d+ Specs.*|(FAIL|SUCCESS)! -- \d+ Passed \| \d+ Failed \| \d+ Pending \| \d+ Skipped)`)
	var summary []string
	var failed []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	inFailures := false
	for sc.Scan() {
		l := sc.Text()
		if counts.MatchString(l) {
			summary = append(summary, l)
		}
		if strings.HasPrefix(l, "Summarizing") {
			inFailures = true
		}
		if inFailures && strings.HasPrefix(strings.TrimSpace(l), "[FAIL]") {
			failed = append(failed, strings.TrimSpace(l))
		}
	}
	return strings.Join(summary, "; "), failed
}
