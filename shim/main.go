package shim

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"strconv"
	"time"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v2"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/protobuf"
	"github.com/containerd/containerd/v2/pkg/shutdown"
	"github.com/containerd/containerd/v2/pkg/sys/reaper"
	"github.com/containerd/fifo"
	"github.com/containerd/log"
	"github.com/containerd/ttrpc"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/urunc-dev/containerd-shim-urunc-v2/runtime/lifecycle"
)

// This file is the binary's contract with containerd, which runs it four
// ways: `-info` and `-v`; `start`, which starts (or finds) the daemon and
// prints its address; `delete`, after a daemon died; and with no action,
// as the daemon serving the task API over ttrpc on the socket it inherits
// as fd 3. containerd's pkg/shim does the same, but it links the task
// API v3 package, which also holds gRPC's service code: gRPC, net/http,
// TLS and templates then made up most of this binary and of every shim's
// resident memory, paid once per running container. The v2 task API this shim serves, ttrpc,
// the reaper and the fifo are containerd's packages, as in pkg/shim.

// flags are the flags containerd passes; they are pkg/shim's, so that
// every containerd that can run a v2 shim can run this one.
type flags struct {
	namespace, id, address, bundle, socket string
	debug, version, info                   bool
	action                                 string
}

func parseFlags(args []string, stderr io.Writer) (flags, error) {
	var f flags
	fs := flag.NewFlagSet(RuntimeName, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.BoolVar(&f.debug, "debug", false, "enable debug output in logs")
	fs.BoolVar(&f.version, "v", false, "")
	fs.BoolVar(&f.version, "version", false, "show the shim version and exit")
	fs.BoolVar(&f.info, "info", false, "print the runtime info protobuf to stdout and exit")
	fs.StringVar(&f.namespace, "namespace", "", "namespace that owns the shim")
	fs.StringVar(&f.id, "id", "", "id of the task")
	fs.StringVar(&f.socket, "socket", "", "socket path to serve (default: fd 3)")
	fs.String("debug-socket", "", "unused")
	fs.StringVar(&f.bundle, "bundle", "", "path to the bundle if not workdir")
	fs.StringVar(&f.address, "address", "", "grpc address back to main containerd")
	fs.String("publish-binary", "", "unused: events go to $TTRPC_ADDRESS")
	if err := fs.Parse(args); err != nil {
		return f, err
	}
	f.action = fs.Arg(0)
	return f, nil
}

// Main runs the binary as containerd invoked it (args without argv[0])
// and returns its exit status.
func Main(ctx context.Context, args []string) int {
	f, err := parseFlags(args, os.Stderr)
	if err != nil {
		return 2
	}
	if err := run(ctx, f); err != nil {
		fmt.Fprintf(os.Stderr, "%s: %s\n", RuntimeName, err)
		return 1
	}
	return 0
}

func run(ctx context.Context, f flags) error {
	switch {
	case f.version:
		fmt.Printf("%s:\n  Version:  %s\n  Go version: %s\n", RuntimeName, Version, runtime.Version())
		return nil
	case f.info:
		return writeProto(os.Stdout, Manager{}.Info())
	case f.namespace == "":
		return errors.New("shim namespace cannot be empty")
	}
	ctx = namespaces.WithNamespace(ctx, f.namespace)
	switch f.action {
	case "start":
		return start(ctx, f, os.Stdin, os.Stdout)
	case "delete":
		// The cleanup kills and waits for what a dead daemon left.
		lifecycle.ReapChildren()
		st, err := Manager{}.Stop(ctx, f.id)
		if err != nil {
			return err
		}
		return writeProto(os.Stdout, &taskAPI.DeleteResponse{
			Pid:        uint32(st.Pid),
			ExitStatus: uint32(st.ExitStatus),
			ExitedAt:   protobuf.ToTimestamp(st.ExitedAt),
		})
	case "":
		return serve(ctx, f)
	}
	return fmt.Errorf("unknown action %q", f.action)
}

func writeProto(w io.Writer, m proto.Message) error {
	data, err := proto.Marshal(m)
	if err != nil {
		return err
	}
	_, err = w.Write(data)
	return err
}

// serve is the daemon: the task service on the inherited socket, the
// reaper on SIGCHLD, until the service shuts it down or a signal ends it.
func serve(ctx context.Context, f flags) error {
	// A small, long-lived daemon: collect early (the heap is mostly
	// short-lived request data) and give freed pages back. GOGC, when
	// set, wins.
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(gcPercent)
	}
	go func() {
		for range time.Tick(30 * time.Second) {
			debug.FreeOSMemory()
		}
	}()
	if os.Getenv("GOMAXPROCS") == "" {
		runtime.GOMAXPROCS(2)
	}
	// Notify before anything can exit: a SIGCHLD before the loop would
	// leave a zombie and a waiter on the reaper that never returns.
	signals := make(chan os.Signal, 32)
	signal.Notify(signals, unix.SIGCHLD, unix.SIGPIPE, unix.SIGTERM, unix.SIGINT, unix.SIGUSR1)
	lifecycle.UseReaperForCommands()
	// The monitors are this process's children even after a launcher
	// exits, so that their exits are ours to reap and report.
	if err := reaper.SetSubreaper(1); err != nil {
		return fmt.Errorf("become child subreaper: %w", err)
	}
	ctx, err := setLogger(ctx, f)
	if err != nil {
		return err
	}
	ctx, sd := shutdown.WithShutdown(ctx)
	defer sd.Shutdown()

	server, err := ttrpc.NewServer(ttrpc.WithServerHandshaker(ttrpc.UnixSocketRequireSameUser()))
	if err != nil {
		return fmt.Errorf("create ttrpc server: %w", err)
	}
	svc, err := NewTaskService(ctx, sd)
	if err != nil {
		return err
	}
	taskAPI.RegisterTTRPCTaskService(server, svc)
	l, err := listener(f.socket)
	if err != nil {
		return err
	}
	// Once this daemon is gone nothing answers on its socket, and a later
	// start would find it stale: the socket goes on the way out. It is
	// the group's, which the daemon's -id (its first container) does not
	// name.
	socket := l.Addr().String()
	sd.RegisterCallback(func(context.Context) error {
		if err := os.Remove(socket); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		return nil
	})
	go func() {
		defer l.Close()
		if err := server.Serve(ctx, l); err != nil && !errors.Is(err, net.ErrClosed) && !errors.Is(err, ttrpc.ErrServerClosed) {
			log.G(ctx).WithError(err).Fatal("ttrpc server failure")
		}
	}()
	logReady(ctx)
	for running := true; running; {
		select {
		case <-ctx.Done():
			running = false
		case s := <-signals:
			switch s {
			case unix.SIGCHLD:
				if err := reaper.Reap(); err != nil {
					log.G(ctx).WithError(err).Error("reap exit status")
				}
			case unix.SIGTERM, unix.SIGINT:
				sd.Shutdown()
			case unix.SIGUSR1:
				dumpStacks(ctx)
			}
		}
	}
	closeCtx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = server.Shutdown(closeCtx)
	select {
	case <-sd.Done():
		return nil
	case <-time.After(5 * time.Second):
		return errors.New("shim shutdown timeout")
	}
}

// gcPercent is the daemon's GOGC (containerd's pkg/shim sets 40).
const gcPercent = 40

// listener is the socket containerd dials: fd 3, created by start, or a
// path given with -socket.
func listener(path string) (net.Listener, error) {
	if path != "" {
		return net.Listen("unix", path)
	}
	f := os.NewFile(3, "socket")
	defer f.Close()
	l, err := net.FileListener(f)
	if err != nil {
		return nil, fmt.Errorf("socket on fd 3: %w", err)
	}
	return l, nil
}

// setLogger sends the daemon's log to the "log" FIFO containerd reads in
// the bundle, as its stderr, so that a panic's trace reaches it too.
func setLogger(ctx context.Context, f flags) (context.Context, error) {
	_ = log.SetFormat(log.TextFormat)
	if f.debug {
		_ = log.SetLevel("debug")
	}
	w, err := fifo.OpenFifoDup2(ctx, "log", unix.O_WRONLY, 0o700, int(os.Stderr.Fd()))
	if err != nil {
		return ctx, fmt.Errorf("open log fifo: %w", err)
	}
	l := log.G(ctx).WithFields(log.Fields{"runtime": RuntimeName, "namespace": f.namespace})
	l.Logger.SetOutput(w)
	return log.WithLogger(ctx, l), nil
}

// dumpStacks logs every goroutine's stack and where the daemon's memory
// goes (SIGUSR1; make bench reads the memory line).
func dumpStacks(ctx context.Context) {
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	const KiB = 1024
	log.G(ctx).Infof("memstats: goroutines %d heap_inuse_kib %d heap_live_kib %d heap_idle_kib %d heap_released_kib %d stacks_kib %d runtime_meta_kib %d gc_cycles %d",
		runtime.NumGoroutine(), m.HeapInuse/KiB, m.HeapAlloc/KiB, m.HeapIdle/KiB, m.HeapReleased/KiB, m.StackSys/KiB,
		(m.MSpanSys+m.MCacheSys+m.BuckHashSys+m.GCSys+m.OtherSys)/KiB, m.NumGC)
	buf := make([]byte, 1<<16)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			log.G(ctx).Infof("=== goroutine stack dump ===\n%s", buf[:n])
			return
		}
		buf = make([]byte, 2*len(buf))
	}
}

// spawnedAtEnv carries the time the start command spawned the daemon, so
// that the daemon can log how long its boot took (make bench reads it).
const spawnedAtEnv = "URUNC_SHIM_SPAWNED_AT"

func logReady(ctx context.Context) {
	l := log.G(ctx).WithField("pid", os.Getpid())
	if ns, err := strconv.ParseInt(os.Getenv(spawnedAtEnv), 10, 64); err == nil {
		l = l.WithField("boot_ms", fmt.Sprintf("%.2f", float64(time.Since(time.Unix(0, ns)).Microseconds())/1000))
	}
	// Not for the launchers and monitors this process starts.
	_ = os.Unsetenv(spawnedAtEnv)
	l.Debug("daemon ready: serving the task API")
}
