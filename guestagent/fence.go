package guestagent

import (
	"context"
	"errors"
	"fmt"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/vmguard/vmguard/internal/lease"
)

// Lease states of an agent started with a node (PingReply.Lease).
const (
	// LeaseWaiting: no renewal of the node's lease seen yet; runs are refused.
	LeaseWaiting = "waiting"
	// LeaseHeld: renewals arrive; runs are accepted.
	LeaseHeld = "held"
	// LeaseFenced: the lease lapsed, every process was stopped (reason
	// fenced); runs are refused until a renewal is seen.
	LeaseFenced = "fenced"
)

// Lease watch bounds.
const (
	leaseOpenTimeout = 2 * time.Second
	leaseMinRetry    = 50 * time.Millisecond
	leaseMaxRetry    = 500 * time.Millisecond
)

// fenceHalt bounds the halt timeout of a fenced process: SIGKILL comes at
// most ttl/5 after SIGTERM, so that a process is dead by 0.8 ttl after the
// last renewal the agent saw, before anyone can declare the node lost.
func fenceHalt(ttl time.Duration) time.Duration { return ttl / 5 }

// fence is the agent's view of its node's lease. Guarded by Agent.mu.
type fence struct {
	state string // "" without a node, else LeaseWaiting, LeaseHeld or LeaseFenced
	why   string // why it fenced
	ttl   time.Duration
	gen   uint64      // bumped by each renewal and lapse; an older timer does nothing
	timer *time.Timer // fires FenceAfter(ttl) after the last renewal seen
	// kick asks the watcher to watch afresh (after a lapse: the watch
	// itself may be what went stale).
	kick chan struct{}
	// held wakes the heartbeat loop when the lease is first seen: heartbeats
	// wait for it, so that a host manager, which counts a guest as started
	// at its first heartbeat, does not send runs the agent would refuse.
	held chan struct{}
}

// refusalLocked is the error a run gets while the lease is not held, or
// nil. The caller holds mu.
func (a *Agent) refusalLocked() error {
	switch a.fence.state {
	case LeaseWaiting:
		return &RemoteError{CodeUnavailable, fmt.Sprintf("node lease of %s not seen yet; runs are accepted once the host manager holds it", a.cfg.Node)}
	case LeaseFenced:
		return &RemoteError{CodeUnavailable, fmt.Sprintf("node lease lapsed; fenced (%s); runs are refused until the host manager renews the lease of %s", a.fence.why, a.cfg.Node)}
	}
	return nil
}

// startFencing watches the node's lease until the returned function is
// called; that function waits for the watch to end and disarms the fence
// timer. Without a node it does nothing.
func (a *Agent) startFencing(ctx context.Context) (stop func()) {
	if a.cfg.Node == "" {
		return func() {}
	}
	wctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		a.watchLease(wctx)
	}()
	return func() {
		cancel()
		<-done
		a.mu.Lock()
		a.fence.gen++
		if a.fence.timer != nil {
			a.fence.timer.Stop()
		}
		a.mu.Unlock()
	}
}

// watchLease follows the node's key in the lease bucket until ctx ends,
// opening the bucket again (it may not exist yet) and watching afresh after
// every reconnect, lapse or end of the watch. The fence timer runs on its
// own, so neither an unreachable server nor a blocked open delays a fence.
func (a *Agent) watchLease(ctx context.Context) {
	js, err := jetstream.New(a.cfg.Conn)
	if err != nil {
		a.log.Error("open jetstream; the node lease is not watched and runs stay refused", "err", err)
		return
	}
	reconnected := a.cfg.Conn.StatusChanged(nats.CONNECTED)
	defer a.cfg.Conn.RemoveStatusListener(reconnected)
	var (
		lastRev uint64 // revision of the last entry seen, so a re-watch does not count it again
		backoff = leaseMinRetry
		failing bool
	)
	for ctx.Err() == nil {
		w, stop, err := a.openLeaseWatch(ctx, js)
		if err != nil {
			if !failing {
				a.log.Warn("watch node lease; retrying", "node", a.cfg.Node, "err", err)
				failing = true
			}
			t := time.NewTimer(backoff)
			backoff = min(2*backoff, leaseMaxRetry)
			select {
			case <-ctx.Done():
			case <-t.C:
			case <-reconnected:
				backoff = leaseMinRetry
			}
			t.Stop()
			continue
		}
		if failing {
			a.log.Info("watching node lease", "node", a.cfg.Node)
			failing = false
		}
		backoff = leaseMinRetry
		a.followLease(ctx, w, &lastRev, reconnected)
		stop()
	}
}

// openLeaseWatch binds to the lease bucket and watches the node's key. The
// watch lives until stop is called or ctx ends.
func (a *Agent) openLeaseWatch(ctx context.Context, js jetstream.JetStream) (jetstream.KeyWatcher, func(), error) {
	octx, cancel := context.WithTimeout(ctx, leaseOpenTimeout)
	kv, err := lease.Open(octx, js)
	cancel()
	if err != nil {
		return nil, nil, err
	}
	// The watch's context bounds both its creation and its life, so the
	// creation is bounded by a timer that cancels it.
	wctx, cancelWatch := context.WithCancel(ctx)
	t := time.AfterFunc(leaseOpenTimeout, cancelWatch)
	w, err := kv.Watch(wctx, a.cfg.Node)
	if !t.Stop() {
		if err == nil {
			_ = w.Stop()
		}
		cancelWatch()
		return nil, nil, fmt.Errorf("watch lease %s: no answer in %s", a.cfg.Node, leaseOpenTimeout)
	}
	if err != nil {
		cancelWatch()
		return nil, nil, fmt.Errorf("watch lease %s: %w", a.cfg.Node, err)
	}
	// Stopping deletes the watch's consumer, a request that waits out
	// nats.go's 5 s JetStream timeout when refused, as it is for a guest's
	// least-privilege user (internal/guestauth; the server removes the
	// consumer itself once nobody listens). Waiting for it would leave the
	// lease unwatched that long after every reconnect and fence the guest, so
	// the watch is stopped by cancelling its context: nats.go then
	// unsubscribes and deletes in the background.
	return w, cancelWatch, nil
}

// followLease applies the watch's entries until ctx ends, the watch ends,
// the connection comes back after a loss or the fence kicks it.
func (a *Agent) followLease(ctx context.Context, w jetstream.KeyWatcher, lastRev *uint64, reconnected <-chan nats.Status) {
	initial := true // entries before the watch's nil marker are the key's current value
	quiet := time.NewTimer(a.watchQuiet())
	defer quiet.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-reconnected:
			return
		case <-a.fence.kick:
			return
		case <-quiet.C:
			// No renewal for 1.5 renewal intervals: the watch's consumer may
			// sit on a cluster server that went away (nothing tells a push
			// consumer's client so for ~10 s); watch afresh before the fence.
			if a.leaseHeld() {
				return
			}
			quiet.Reset(a.watchQuiet())
		case e, ok := <-w.Updates():
			if !ok {
				return
			}
			if e == nil {
				initial = false
				continue
			}
			if e.Revision() == *lastRev {
				continue // seen before this watch began
			}
			*lastRev = e.Revision()
			a.leaseEntry(e, initial)
			quiet.Reset(a.watchQuiet())
		}
	}
}

// leaseEntry applies one new entry of the node's key: a put is a renewal, a
// delete or purge a lapse.
func (a *Agent) leaseEntry(e jetstream.KeyValueEntry, initial bool) {
	if op := e.Operation(); op == jetstream.KeyValueDelete || op == jetstream.KeyValuePurge {
		a.lapse(0, fmt.Sprintf("the lease of node %s was deleted", a.cfg.Node))
		return
	}
	v, err := lease.Decode(e.Value())
	if err == nil && v.TTLMS <= 0 {
		err = errors.New("ttl_ms: not positive")
	}
	if err != nil {
		a.log.Warn("ignore node lease value", "node", a.cfg.Node, "revision", e.Revision(), "err", err)
		return
	}
	// A live update is timed from now. The value a new watch starts with
	// may be older: count its age by the server's stamp, so a lease that a
	// dead holder wrote long ago does not pass for a fresh one. (A guest
	// clock behind the server's makes it look fresher, at most as fresh as
	// a live update.)
	var age time.Duration
	if initial {
		age = max(time.Since(e.Created()), 0)
	}
	a.renewed(v.TTL(), age)
}

// renewed records a renewal seen age ago with the given ttl: runs are
// accepted, and the fence fires FenceAfter(ttl) after it unless another
// renewal comes first.
func (a *Agent) renewed(ttl, age time.Duration) {
	wait := lease.FenceAfter(ttl) - age
	if wait <= 0 {
		return // too old to count
	}
	a.mu.Lock()
	becameHeld := false
	defer func() {
		a.mu.Unlock()
		if becameHeld {
			a.syncServing()
			// Heartbeats wait for this, so that a host manager, which counts a
			// guest as started at its first heartbeat, finds it serving.
			select {
			case a.fence.held <- struct{}{}:
			default:
			}
		}
	}()
	a.fence.gen++
	gen := a.fence.gen
	if a.fence.timer != nil {
		a.fence.timer.Stop()
	}
	a.fence.ttl = ttl
	a.fence.timer = time.AfterFunc(wait, func() {
		a.lapse(gen, fmt.Sprintf("no renewal of the lease of node %s seen for %s (0.6 of its ttl %s)", a.cfg.Node, lease.FenceAfter(ttl), ttl))
	})
	if a.fence.state != LeaseHeld {
		a.log.Info("node lease held; accepting runs", "node", a.cfg.Node, "ttl", ttl, "was", a.fence.state)
		a.fence.state, a.fence.why = LeaseHeld, ""
		becameHeld = true
	}
}

// syncServing serves requests unless the agent is fenced. svcMu is held
// while the state is read, so that of a lapse and a renewal racing, the one
// that acts last acts on the final state.
func (a *Agent) syncServing() {
	a.svcMu.Lock()
	defer a.svcMu.Unlock()
	a.mu.Lock()
	want := a.fence.state != LeaseFenced
	a.mu.Unlock()
	if err := a.setServingLocked(want); err != nil {
		a.log.Warn("serve requests", "err", err)
	}
}

// lapse fences the agent if it holds the lease and gen is still current (0:
// any): it refuses runs and stops every process, reason fenced, SIGKILL at
// most fenceHalt(ttl) after SIGTERM. Their exits go through the spool like
// any other, so they reach the log once it is reachable.
func (a *Agent) lapse(gen uint64, why string) {
	a.mu.Lock()
	if (gen != 0 && gen != a.fence.gen) || a.fence.state != LeaseHeld {
		a.mu.Unlock()
		return
	}
	a.fence.gen++
	if a.fence.timer != nil {
		a.fence.timer.Stop()
	}
	a.fence.state, a.fence.why = LeaseFenced, why
	halt := fenceHalt(a.fence.ttl)
	live := make([]*proc, 0, len(a.services))
	for _, p := range a.services {
		live = append(live, p)
	}
	a.mu.Unlock()
	select {
	case a.fence.kick <- struct{}{}:
	default:
	}
	a.log.Warn("node lease lapsed; fencing: stopping every process and serving no requests",
		"node", a.cfg.Node, "reason", why, "processes", len(live), "halt", halt)
	a.syncServing()
	for _, p := range live {
		a.stopProc(p, ReasonFenced, min(p.haltTimeout, halt))
	}
	// A process already stopping (under a stop request's longer halt
	// timeout) must be gone in time too.
	time.AfterFunc(halt, func() {
		a.mu.Lock()
		defer a.mu.Unlock()
		for _, p := range live {
			if p.startErr == nil && !p.reaped {
				p.signal(syscall.SIGKILL)
			}
		}
	})
}

// watchQuiet is how long a lease watch may stay silent before it is
// renewed: 1.5 renewal intervals of the lease's ttl.
func (a *Agent) watchQuiet() time.Duration {
	a.mu.Lock()
	ttl := a.fence.ttl
	a.mu.Unlock()
	if ttl <= 0 {
		return time.Second
	}
	return lease.RenewEvery(ttl) * 3 / 2
}

// leaseHeld reports whether the agent holds its node's lease.
func (a *Agent) leaseHeld() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.fence.state == LeaseHeld
}
