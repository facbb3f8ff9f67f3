//go:build integration

package integration

import (
	"context"
	"testing"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
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
