//go:build integration

package integration

import (
	"context"
	"testing"
	"time"

	eventstypes "github.com/containerd/containerd/api/events"
	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/events"
	"github.com/containerd/containerd/v2/pkg/namespaces"
)

// newClient returns containerd's Go client on the private daemon, for what
// ctr cannot observe (exit codes, events, Wait, error codes).
func newClient(t *testing.T) (*containerd.Client, context.Context) {
	t.Helper()
	c, err := containerd.New(env.socket(), containerd.WithTimeout(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, namespaces.WithNamespace(context.Background(), namespace)
}

// loadTask returns the Go client's container and task of id.
func loadTask(t *testing.T, id string) (containerd.Container, containerd.Task, context.Context) {
	t.Helper()
	c, ctx := newClient(t)
	cont, err := c.LoadContainer(ctx, id)
	if err != nil {
		t.Fatalf("load container %s: %v", id, err)
	}
	task, err := cont.Task(ctx, nil)
	if err != nil {
		t.Fatalf("load task %s: %v", id, err)
	}
	return cont, task, ctx
}

// taskState returns the status and exit code containerd reports for id.
func taskState(t *testing.T, id string) (containerd.ProcessStatus, uint32) {
	t.Helper()
	_, task, ctx := loadTask(t, id)
	st, err := task.Status(ctx)
	if err != nil {
		t.Fatalf("task status %s: %v", id, err)
	}
	return st.Status, st.ExitStatus
}

// subscribedTopic carries the events subscribeLive publishes to itself.
const subscribedTopic = "/urunc-test/subscribed"

// subscribeLive subscribes to containerd's events matching filters and
// returns once the subscription is live. Subscribe only starts the stream:
// an event the daemon publishes before it has the subscriber is never
// delivered, and a test's first event (an exec's TaskExecAdded) was lost
// that way in one full run of five. So it publishes a marker event of its
// own until one comes back, and hands on everything else.
func subscribeLive(ctx context.Context, t *testing.T, c *containerd.Client, filters ...string) (<-chan *events.Envelope, <-chan error) {
	t.Helper()
	marker := &eventstypes.TaskExecAdded{ContainerID: "urunc-test-subscription", ExecID: t.Name()}
	in, errc := c.Subscribe(ctx, append(filters, `topic=="`+subscribedTopic+`"`)...)
	deadline := time.After(30 * time.Second)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for live := false; !live; {
		if err := c.EventService().Publish(ctx, subscribedTopic, marker); err != nil {
			t.Fatalf("publish the subscription's marker: %v", err)
		}
		select {
		case env := <-in:
			live = env.Topic == subscribedTopic
		case err := <-errc:
			t.Fatalf("subscribe %v: %v", filters, err)
		case <-deadline:
			t.Fatalf("subscribe %v: the marker event never came back", filters)
		case <-tick.C:
		}
	}
	out := make(chan *events.Envelope)
	go func() {
		defer close(out)
		for {
			select {
			case env := <-in:
				if env.Topic == subscribedTopic {
					continue // a marker published before the first came back
				}
				select {
				case out <- env:
				case <-ctx.Done():
					return
				}
			case <-ctx.Done():
				return
			}
		}
	}()
	return out, errc
}
