// Package eventqueue delivers the shim's task events to containerd, in
// order and without loss across a containerd restart.
package eventqueue

import (
	"context"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/containerd/containerd/api/services/ttrpc/events/v1"
	"github.com/containerd/containerd/api/types"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/protobuf"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/containerd/log"
	"github.com/containerd/ttrpc"
	"github.com/containerd/typeurl/v2"
)

// Queue forwards events to containerd one at a time, in the order
// they were sent. An event that cannot be delivered (containerd is down or
// restarting) is retried until it is, never dropped and never overtaken
// by a later one: a TaskExit lost during a containerd restart would leave
// the task running forever in containerd's eyes. containerd's own
// publisher gives up after five tries, so this queue dials containerd
// itself.
type Queue struct {
	ctx     context.Context
	address string

	mu      sync.Mutex
	pending []*types.Envelope
	wake    chan struct{}
	closed  chan struct{}
	done    chan struct{}
	client  *ttrpc.Client
}

// New starts a queue to containerd's events service at address
// ($TTRPC_ADDRESS, unix://PATH or PATH).
func New(ctx context.Context, address string) *Queue {
	q := &Queue{
		ctx:     ctx,
		address: address,
		wake:    make(chan struct{}, 1),
		closed:  make(chan struct{}),
		done:    make(chan struct{}),
	}
	go q.run()
	return q
}

// Send queues evt for delivery.
func (q *Queue) Send(evt any) {
	any, err := typeurl.MarshalAnyToProto(evt)
	if err != nil {
		log.G(q.ctx).WithError(err).Error("marshal event")
		return
	}
	ns, _ := namespaces.Namespace(q.ctx)
	env := &types.Envelope{Timestamp: protobuf.ToTimestamp(time.Now()), Namespace: ns, Topic: Topic(evt), Event: any}
	q.mu.Lock()
	q.pending = append(q.pending, env)
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// Close delivers what is pending, waiting a bounded time, and stops.
func (q *Queue) Close() {
	close(q.closed)
	select {
	case <-q.done:
	case <-time.After(5 * time.Second):
	}
}

func (q *Queue) run() {
	defer close(q.done)
	backoff := 100 * time.Millisecond
	for {
		q.mu.Lock()
		var next *types.Envelope
		if len(q.pending) > 0 {
			next = q.pending[0]
		}
		q.mu.Unlock()
		if next == nil {
			select {
			case <-q.wake:
				continue
			case <-q.closed:
				return
			}
		}
		err := q.forward(next)
		if err != nil && errdefs.IsInvalidArgument(errgrpc.ToNative(err)) {
			// containerd will never take it: retrying would hold back
			// every later event (a TaskExit among them) for good.
			log.G(q.ctx).WithError(err).WithField("topic", next.Topic).Error("event refused by containerd; dropped")
			err = nil
		}
		if err != nil {
			log.G(q.ctx).WithError(err).WithField("topic", next.Topic).Warn("event not delivered yet; retrying")
			select {
			case <-time.After(backoff):
			case <-q.closed:
				return
			}
			if backoff < 2*time.Second {
				backoff *= 2
			}
			continue
		}
		backoff = 100 * time.Millisecond
		q.mu.Lock()
		q.pending = q.pending[1:]
		q.mu.Unlock()
	}
}

func (q *Queue) forward(env *types.Envelope) error {
	if q.client == nil {
		conn, err := net.DialTimeout("unix", strings.TrimPrefix(q.address, "unix://"), 5*time.Second)
		if err != nil {
			return err
		}
		q.client = ttrpc.NewClient(conn)
	}
	ctx, cancel := context.WithTimeout(q.ctx, 5*time.Second)
	defer cancel()
	_, err := events.NewTTRPCEventsClient(q.client).Forward(ctx, &events.ForwardRequest{Envelope: env})
	if err != nil {
		// A broken connection is not repaired by ttrpc; redial next time.
		q.client.Close()
		q.client = nil
	}
	return err
}
