package shim

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/cgroups/v3/cgroup1/stats"
	"github.com/containerd/console"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/shutdown"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/urunc-dev/containerd-shim-urunc-v2/runtime/config"
	"github.com/urunc-dev/containerd-shim-urunc-v2/runtime/lifecycle"
	"github.com/urunc-dev/containerd-shim-urunc-v2/shim/eventqueue"
)

// This file holds the task service's test doubles: a runtime library whose
// tasks change state as the real ones do but run nothing, and exit when the
// test says; a publisher that records events; a shutdown that records
// whether the shim was ended.

// fakeRuntime is a runtimeLibrary without monitors or VMs.
type fakeRuntime struct {
	mu sync.Mutex
	// hostErr and createErr, when set, fail LoadHostConfig and Create.
	hostErr   error
	createErr error
	host      config.HostConfig
	// configure, when set, adjusts each task before Create returns it.
	configure func(*fakeTask)
	creates   []lifecycle.CreateOptions
	tasks     map[string]*fakeTask
	nextPid   int
}

func (r *fakeRuntime) LoadHostConfig() (config.HostConfig, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.host, r.hostErr
}

func (r *fakeRuntime) Create(ctx context.Context, opts lifecycle.CreateOptions) (lifecycle.Task, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.creates = append(r.creates, opts)
	if r.createErr != nil {
		return nil, r.createErr
	}
	r.nextPid++
	t := &fakeTask{
		id:             opts.ID,
		bundle:         opts.Bundle,
		pid:            4000 + r.nextPid,
		status:         lifecycle.StatusCreated,
		exited:         make(chan struct{}),
		exitTaken:      make(chan struct{}),
		waitingChanged: make(chan struct{}),
	}
	// A real task keeps its own duplicates of the monitor's stdio: the
	// caller closes its copies once Create returns.
	var err error
	if t.stdio.Stdin, err = dupFile(opts.Stdio.Stdin); err == nil {
		if t.stdio.Stdout, err = dupFile(opts.Stdio.Stdout); err == nil {
			t.stdio.Stderr, err = dupFile(opts.Stdio.Stderr)
		}
	}
	if err != nil {
		t.closeStdio()
		return nil, err
	}
	if r.configure != nil {
		r.configure(t)
	}
	if r.tasks == nil {
		r.tasks = map[string]*fakeTask{}
	}
	r.tasks[opts.ID] = t
	return t, nil
}

func (r *fakeRuntime) task(id string) *fakeTask {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.tasks[id]
}

func (r *fakeRuntime) createCount() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.creates)
}

// dupFile duplicates f without touching its blocking mode; nil stays nil.
func dupFile(f *os.File) (*os.File, error) {
	if f == nil {
		return nil, nil
	}
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, err
	}
	var nfd int
	var dupErr error
	if err := rc.Control(func(fd uintptr) { nfd, dupErr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		return nil, err
	}
	if dupErr != nil {
		return nil, dupErr
	}
	return os.NewFile(uintptr(nfd), f.Name()), nil
}

// fakeTask is a lifecycle.Task whose monitor is imaginary: it starts,
// pauses and stops on request, and exits when the test calls exitWith or
// kills it.
type fakeTask struct {
	id, bundle string
	pid        int

	mu      sync.Mutex
	status  lifecycle.Status
	exit    lifecycle.ExitStatus
	deleted bool
	calls   []string
	stdio   lifecycle.Stdio
	res     *specs.LinuxResources
	execs   map[string]*fakeProcess
	// exited closes at the exit; exitTaken the first time Wait returns it.
	exited    chan struct{}
	exitTaken chan struct{}
	takenOnce sync.Once
	// waiting counts callers blocked in Wait; waitingChanged is closed
	// and replaced whenever it changes.
	waiting        int
	waitingChanged chan struct{}

	// What the test sets up before it drives the task.
	onStart   func(*fakeTask) // runs inside Start, once the monitor runs
	startErr  error
	noExec    bool // like a unikernel: exec is not implemented
	noCgroup  bool // Pause, Resume, Metrics and Update fail for want of a cgroup
	oom       chan struct{}
	oomKilled bool
	pids      []int
}

var _ lifecycle.Task = (*fakeTask)(nil)

func (t *fakeTask) record(call string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.calls = append(t.calls, call)
}

// callLog is the calls the service made, in order.
func (t *fakeTask) callLog() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]string(nil), t.calls...)
}

func (t *fakeTask) ID() string     { return t.id }
func (t *fakeTask) Pid() int       { return t.pid }
func (t *fakeTask) Bundle() string { return t.bundle }

func (t *fakeTask) Start(ctx context.Context) error {
	t.record("start")
	t.mu.Lock()
	if t.status != lifecycle.StatusCreated {
		defer t.mu.Unlock()
		return fmt.Errorf("container %s is %s, not created: %w", t.id, t.status, errdefs.ErrFailedPrecondition)
	}
	if t.startErr != nil {
		t.mu.Unlock()
		return t.startErr
	}
	t.status = lifecycle.StatusRunning
	hook := t.onStart
	t.mu.Unlock()
	if hook != nil {
		hook(t)
	}
	return nil
}

// exitWith ends the monitor with status, as its death would.
func (t *fakeTask) exitWith(status int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.exitLocked(status)
}

func (t *fakeTask) exitLocked(status int) {
	if t.status == lifecycle.StatusStopped {
		return
	}
	t.status = lifecycle.StatusStopped
	t.exit = lifecycle.ExitStatus{Pid: t.pid, Status: status, At: time.Now()}
	t.closeStdio()
	close(t.exited)
}

// closeStdio drops the monitor's ends of its stdio, as its exit does.
func (t *fakeTask) closeStdio() {
	for _, f := range []*os.File{t.stdio.Stdin, t.stdio.Stdout, t.stdio.Stderr} {
		if f != nil {
			f.Close()
		}
	}
}

func (t *fakeTask) Kill(ctx context.Context, sig syscall.Signal, all bool) error {
	t.record(fmt.Sprintf("kill %d all=%v", sig, all))
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.status == lifecycle.StatusStopped {
		return fmt.Errorf("container %s: process already finished: %w", t.id, errdefs.ErrNotFound)
	}
	t.exitLocked(128 + int(sig))
	return nil
}

func (t *fakeTask) Delete(ctx context.Context) (lifecycle.ExitStatus, error) {
	t.record("delete")
	t.mu.Lock()
	defer t.mu.Unlock()
	switch {
	case t.deleted:
		return lifecycle.ExitStatus{}, fmt.Errorf("container %s: %w", t.id, errdefs.ErrNotFound)
	case t.status == lifecycle.StatusRunning || t.status == lifecycle.StatusPaused:
		return lifecycle.ExitStatus{}, fmt.Errorf("container %s is %s: kill it before delete: %w", t.id, t.status, errdefs.ErrFailedPrecondition)
	case t.status == lifecycle.StatusCreated:
		// The launcher never released is killed.
		t.exitLocked(128 + int(syscall.SIGKILL))
	}
	t.deleted = true
	return t.exit, nil
}

func (t *fakeTask) State() lifecycle.State {
	t.mu.Lock()
	defer t.mu.Unlock()
	return lifecycle.State{ID: t.id, Bundle: t.bundle, Pid: t.pid, Status: t.status, Exit: t.exit}
}

func (t *fakeTask) Pids(ctx context.Context) ([]int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.status == lifecycle.StatusStopped {
		return nil, nil
	}
	return append([]int{t.pid}, t.pids...), nil
}

func (t *fakeTask) Wait(ctx context.Context) (lifecycle.ExitStatus, error) {
	t.countWaiter(+1)
	defer t.countWaiter(-1)
	select {
	case <-t.exited:
	case <-ctx.Done():
		return lifecycle.ExitStatus{}, ctx.Err()
	}
	t.takenOnce.Do(func() { close(t.exitTaken) })
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.exit, nil
}

func (t *fakeTask) countWaiter(d int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.waiting += d
	close(t.waitingChanged)
	t.waitingChanged = make(chan struct{})
}

// awaitWaiters waits until n callers are blocked in Wait.
func (t *fakeTask) awaitWaiters(tb testing.TB, n int) {
	tb.Helper()
	deadline := time.After(eventually)
	for {
		t.mu.Lock()
		waiting, changed := t.waiting, t.waitingChanged
		t.mu.Unlock()
		if waiting >= n {
			return
		}
		select {
		case <-changed:
		case <-deadline:
			tb.Fatalf("%d callers in Wait, want %d", waiting, n)
		}
	}
}

func (t *fakeTask) Exited() <-chan struct{} { return t.exited }
func (t *fakeTask) OOM() <-chan struct{}    { return t.oom }

func (t *fakeTask) OOMKilled() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.oomKilled
}

func (t *fakeTask) errNoCgroup() error {
	return fmt.Errorf("container %s has no cgroup: %w", t.id, errdefs.ErrFailedPrecondition)
}

func (t *fakeTask) Pause(ctx context.Context) error {
	t.record("pause")
	return t.transition(lifecycle.StatusRunning, lifecycle.StatusPaused)
}

func (t *fakeTask) Resume(ctx context.Context) error {
	t.record("resume")
	return t.transition(lifecycle.StatusPaused, lifecycle.StatusRunning)
}

func (t *fakeTask) transition(from, to lifecycle.Status) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.noCgroup {
		return t.errNoCgroup()
	}
	if t.status != from {
		return fmt.Errorf("container %s is %s, not %s: %w", t.id, t.status, from, errdefs.ErrFailedPrecondition)
	}
	t.status = to
	return nil
}

func (t *fakeTask) Metrics(ctx context.Context) (any, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.noCgroup {
		return nil, fmt.Errorf("container %s has no cgroup: %w", t.id, errdefs.ErrNotFound)
	}
	return &stats.Metrics{Pids: &stats.PidsStat{Current: uint64(1 + len(t.pids))}}, nil
}

func (t *fakeTask) Update(ctx context.Context, res *specs.LinuxResources) error {
	t.record("update")
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.noCgroup {
		return t.errNoCgroup()
	}
	t.res = res
	return nil
}

func (t *fakeTask) NewExec(id string, spec *specs.Process) (lifecycle.Process, error) {
	t.record("exec " + id)
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.noExec {
		return nil, fmt.Errorf("exec into a unikernel is not supported: %w", errdefs.ErrNotImplemented)
	}
	if t.status != lifecycle.StatusRunning {
		return nil, fmt.Errorf("container %s is %s, not running: %w", t.id, t.status, errdefs.ErrFailedPrecondition)
	}
	p := &fakeProcess{id: id, spec: spec, pidOnStart: t.pid + 100 + len(t.execs), status: lifecycle.StatusCreated, exited: make(chan struct{})}
	if t.execs == nil {
		t.execs = map[string]*fakeProcess{}
	}
	t.execs[id] = p
	return p, nil
}

func (t *fakeTask) exec(id string) *fakeProcess {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.execs[id]
}

// fakeProcess is a lifecycle.Process (an exec) that runs nothing.
type fakeProcess struct {
	id         string
	spec       *specs.Process
	pidOnStart int

	mu       sync.Mutex
	pid      int
	status   lifecycle.Status
	exit     lifecycle.ExitStatus
	deleted  bool
	exited   chan struct{}
	stdio    lifecycle.Stdio
	console  console.Console
	startErr error
}

var _ lifecycle.Process = (*fakeProcess)(nil)

func (p *fakeProcess) ID() string { return p.id }

func (p *fakeProcess) Pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.pid
}

func (p *fakeProcess) Start(ctx context.Context, stdio lifecycle.Stdio) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.status != lifecycle.StatusCreated {
		return fmt.Errorf("exec %s is %s, not created: %w", p.id, p.status, errdefs.ErrFailedPrecondition)
	}
	if p.startErr != nil {
		return p.startErr
	}
	var err error
	if p.stdio.Stdout, err = dupFile(stdio.Stdout); err != nil {
		return err
	}
	if p.spec.Terminal {
		master, slavePath, err := console.NewPty()
		if err != nil {
			return err
		}
		slave, err := os.OpenFile(slavePath, os.O_RDWR|syscall.O_NOCTTY, 0)
		if err != nil {
			master.Close()
			return err
		}
		p.console, p.stdio.Stdin = master, slave
	}
	p.pid, p.status = p.pidOnStart, lifecycle.StatusRunning
	return nil
}

func (p *fakeProcess) Console() console.Console {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.console
}

func (p *fakeProcess) Exited() <-chan struct{} { return p.exited }

func (p *fakeProcess) State() lifecycle.State {
	p.mu.Lock()
	defer p.mu.Unlock()
	return lifecycle.State{ID: p.id, Pid: p.pid, Status: p.status, Exit: p.exit}
}

func (p *fakeProcess) Wait(ctx context.Context) (lifecycle.ExitStatus, error) {
	select {
	case <-p.exited:
	case <-ctx.Done():
		return lifecycle.ExitStatus{}, ctx.Err()
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.exit, nil
}

func (p *fakeProcess) exitWith(status int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.exitLocked(status)
}

func (p *fakeProcess) exitLocked(status int) {
	if p.status == lifecycle.StatusStopped {
		return
	}
	p.status = lifecycle.StatusStopped
	p.exit = lifecycle.ExitStatus{Pid: p.pid, Status: status, At: time.Now()}
	for _, f := range []*os.File{p.stdio.Stdin, p.stdio.Stdout} {
		if f != nil {
			f.Close()
		}
	}
	close(p.exited)
}

func (p *fakeProcess) Kill(ctx context.Context, sig syscall.Signal) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch p.status {
	case lifecycle.StatusStopped:
		return fmt.Errorf("exec %s: process already finished: %w", p.id, errdefs.ErrNotFound)
	case lifecycle.StatusCreated:
		return fmt.Errorf("exec %s is not started: %w", p.id, errdefs.ErrFailedPrecondition)
	}
	p.exitLocked(128 + int(sig))
	return nil
}

func (p *fakeProcess) Delete(ctx context.Context) (lifecycle.ExitStatus, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case p.deleted:
		return lifecycle.ExitStatus{}, fmt.Errorf("exec %s: %w", p.id, errdefs.ErrNotFound)
	case p.status == lifecycle.StatusRunning:
		return lifecycle.ExitStatus{}, fmt.Errorf("exec %s is running: kill it before delete: %w", p.id, errdefs.ErrFailedPrecondition)
	}
	p.deleted = true
	return p.exit, nil
}

// recordedEvents is an eventPublisher that keeps what it is sent.
type recordedEvents struct {
	mu      sync.Mutex
	events  []any
	changed chan struct{} // closed and replaced at every event
}

func newRecordedEvents() *recordedEvents { return &recordedEvents{changed: make(chan struct{})} }

func (r *recordedEvents) Send(event any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, event)
	close(r.changed)
	r.changed = make(chan struct{})
}

func (r *recordedEvents) all() []any {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]any(nil), r.events...)
}

// topics are the containerd topics of the events sent so far.
func (r *recordedEvents) topics() []string {
	var out []string
	for _, e := range r.all() {
		out = append(out, eventqueue.Topic(e))
	}
	return out
}

// waitUntil waits for the events to satisfy cond, at most within; it
// reports whether they did.
func (r *recordedEvents) waitUntil(within time.Duration, cond func([]any) bool) bool {
	deadline := time.After(within)
	for {
		r.mu.Lock()
		ok := cond(r.events)
		changed := r.changed
		r.mu.Unlock()
		if ok {
			return true
		}
		select {
		case <-changed:
		case <-deadline:
			return false
		}
	}
}

// eventually bounds every wait for something that must happen: long
// enough never to fail a slow machine, short enough to fail a hung test
// with a message rather than go test's panic.
const eventually = 20 * time.Second

// waitForTopic waits for an event of topic to be sent and returns it.
func (r *recordedEvents) waitForTopic(t *testing.T, want string) any {
	t.Helper()
	var found any
	if !r.waitUntil(eventually, func(es []any) bool {
		for _, e := range es {
			if eventqueue.Topic(e) == want {
				found = e
				return true
			}
		}
		return false
	}) {
		t.Fatalf("no %s event; events so far: %v", want, r.topics())
	}
	return found
}

// fakeShutdown is a shutdown.Service that only records that the shim was
// ended.
type fakeShutdown struct {
	once sync.Once
	done chan struct{}
}

var _ shutdown.Service = (*fakeShutdown)(nil)

func newFakeShutdown() *fakeShutdown { return &fakeShutdown{done: make(chan struct{})} }

func (f *fakeShutdown) Shutdown()                                    { f.once.Do(func() { close(f.done) }) }
func (f *fakeShutdown) RegisterCallback(func(context.Context) error) {}
func (f *fakeShutdown) Done() <-chan struct{}                        { return f.done }

func (f *fakeShutdown) Err() error {
	select {
	case <-f.done:
		return shutdown.ErrShutdown
	default:
		return nil
	}
}

func (f *fakeShutdown) ended() bool { return f.Err() != nil }

// harness is a task service wired to fakes.
type harness struct {
	ctx    context.Context
	svc    *taskService
	rt     *fakeRuntime
	events *recordedEvents
	sd     *fakeShutdown
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	ctx := namespaces.WithNamespace(context.Background(), "testns")
	h := &harness{ctx: ctx, rt: &fakeRuntime{}, events: newRecordedEvents(), sd: newFakeShutdown()}
	h.svc = newTaskService(ctx, h.sd, h.rt, h.events)
	t.Cleanup(func() {
		h.svc.mu.Lock()
		defer h.svc.mu.Unlock()
		if h.svc.idle != nil {
			h.svc.idle.Stop()
		}
	})
	return h
}

// errKind names the errdefs kind a gRPC error maps back to.
func errKind(err error) string {
	if err == nil {
		return "nil"
	}
	// The service's errors travel as gRPC statuses; containerd turns them
	// back into errdefs kinds the same way.
	native := errgrpc.ToNative(err)
	for _, k := range []struct {
		name string
		is   func(error) bool
	}{
		{"NotFound", errdefs.IsNotFound},
		{"AlreadyExists", errdefs.IsAlreadyExists},
		{"FailedPrecondition", errdefs.IsFailedPrecondition},
		{"NotImplemented", errdefs.IsNotImplemented},
		{"InvalidArgument", errdefs.IsInvalidArgument},
		{"Canceled", errdefs.IsCanceled},
		{"DeadlineExceeded", errdefs.IsDeadlineExceeded},
	} {
		if k.is(native) {
			return k.name
		}
	}
	return "other: " + native.Error()
}

var errTest = errors.New("test failure")
