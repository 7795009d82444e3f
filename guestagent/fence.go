package guestagent

import (
	"context"
	"errors"
	"fmt"
	"sync"
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

// Lease poll bounds. The poll reads the key's last value by direct get,
// which any current replica of the bucket answers: it goes on while the
// server that holds the watch's consumer, or the bucket's leader, is gone.
const (
	pollWaiting    = 250 * time.Millisecond // poll interval before a ttl is known
	pollMinTimeout = 250 * time.Millisecond
	pollMaxTimeout = 2 * time.Second
)

// pollEvery is how often the agent reads its node's lease key: four times
// per renewal interval (ttl/16), so that with the watch gone a renewal is
// still seen within ttl/16 of being written, well inside the 0.35 ttl
// between FenceAfter(ttl) and the next renewal but one.
func pollEvery(ttl time.Duration) time.Duration {
	if ttl <= 0 {
		return pollWaiting
	}
	return lease.PollEvery(ttl)
}

// pollTimeout bounds one read of the lease key: half a renewal interval,
// clamped to [pollMinTimeout, pollMaxTimeout]. A read the cluster drops
// (a server stopping) costs that much, and the next one is sent at once.
func pollTimeout(ttl time.Duration) time.Duration {
	return lease.PollTimeout(ttl)
}

// fenceHalt bounds the halt timeout of a fenced process: SIGKILL comes at
// most ttl/5 after SIGTERM, so that a process is dead by 0.8 ttl after the
// last renewal the agent saw, before anyone can declare the node lost.
func fenceHalt(ttl time.Duration) time.Duration { return lease.FenceHalt(ttl) }

// fence is the agent's view of its node's lease. Guarded by Agent.mu.
type fence struct {
	// node is the node whose lease the agent follows: Config.Node at
	// start, then the node a confirmed placement names (place.go); "" until
	// one is named.
	node  string
	state string // "" when not fencing, else LeaseWaiting, LeaseHeld or LeaseFenced
	why   string // why it fenced
	ttl   time.Duration
	rev   uint64    // revision of the key last applied, by watch or poll
	stamp time.Time // the server's stamp of that revision
	gen   uint64    // bumped by each renewal and lapse; an older timer does nothing
	// frozenUntil is the end of the node's freeze the last renewal
	// carried (lease.Value.FrozenUntil): a lapse before then, plus
	// FenceAfter(ttl), waits for it.
	frozenUntil time.Time
	timer       *time.Timer // fires FenceAfter(ttl) after the last renewal seen
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
		if a.fence.node == "" {
			return &RemoteError{CodeUnavailable, "no node named yet; runs are accepted once a host manager names the node the guest runs on and its lease is seen"}
		}
		return &RemoteError{CodeUnavailable, fmt.Sprintf("node lease of %s not seen yet; runs are accepted once the host manager holds it", a.fence.node)}
	case LeaseFenced:
		return &RemoteError{CodeUnavailable, fmt.Sprintf("node lease lapsed; fenced (%s); runs are refused until the host manager renews the lease of %s", a.fence.why, a.fence.node)}
	}
	return nil
}

// startFencing observes the node's lease until the returned function is
// called; that function waits for the observers to end and disarms the
// fence timer. An agent that does not fence (Config.Node and Config.Fence
// unset) does nothing. The node followed may change while they run
// (follow): each read names the node it is for, and observe drops a read
// of a node no longer followed.
//
// Two observers feed one view (Agent.observe, which applies each revision
// once): a poll of the key by direct get, the one that must work, since any
// replica of the bucket answers it; and a watch, the fast path, which sees a
// renewal or a delete the moment it is written but whose consumer lives on
// one server: if that server goes away, nats.go notices only after missed
// heartbeats (~10 s), and the poll carries on meanwhile.
func (a *Agent) startFencing(ctx context.Context) (stop func()) {
	if !a.fencing() {
		return func() {}
	}
	wctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		a.watchLease(wctx)
	}()
	go func() {
		defer wg.Done()
		a.pollLease(wctx)
	}()
	return func() {
		cancel()
		wg.Wait()
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
		backoff = leaseMinRetry
		failing bool
	)
	for ctx.Err() == nil {
		node := a.leaseNode()
		if node == "" {
			// No node named yet: wait for one (follow kicks).
			select {
			case <-ctx.Done():
			case <-a.fence.kick:
			}
			continue
		}
		w, stop, err := a.openLeaseWatch(ctx, js, node)
		if err != nil {
			if !failing {
				a.log.Warn("watch node lease; retrying", "node", node, "err", err)
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
			a.log.Info("watching node lease", "node", node)
			failing = false
		}
		backoff = leaseMinRetry
		a.followLease(ctx, w, reconnected, node)
		stop()
	}
}

// openLeaseWatch binds to the lease bucket and watches node's key. The
// watch lives until stop is called or ctx ends.
func (a *Agent) openLeaseWatch(ctx context.Context, js jetstream.JetStream, node string) (jetstream.KeyWatcher, func(), error) {
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
	w, err := kv.Watch(wctx, node)
	if !t.Stop() {
		if err == nil {
			_ = w.Stop()
		}
		cancelWatch()
		return nil, nil, fmt.Errorf("watch lease %s: no answer in %s", node, leaseOpenTimeout)
	}
	if err != nil {
		cancelWatch()
		return nil, nil, fmt.Errorf("watch lease %s: %w", node, err)
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

// followLease applies the watch's entries (of node's key) until ctx ends,
// the watch ends, the connection comes back after a loss or the fence kicks
// it (a lapse, or another node to follow).
func (a *Agent) followLease(ctx context.Context, w jetstream.KeyWatcher, reconnected <-chan nats.Status, node string) {
	initial := true // entries before the watch's nil marker are the key's current value
	for {
		select {
		case <-ctx.Done():
			return
		case <-reconnected:
			return
		case <-a.fence.kick:
			return
		case e, ok := <-w.Updates():
			if !ok {
				return
			}
			if e == nil {
				initial = false
				continue
			}
			// A live update is timed from now. The value a new watch starts
			// with may be older: it is timed by the server's stamp, so that a
			// lease a dead holder wrote long ago does not pass for a fresh one.
			now := time.Now()
			at := now
			if initial {
				at = written(e.Created(), now, time.Time{})
			}
			op := e.Operation()
			a.observe(leaseObs{node: node, rev: e.Revision(), stamp: e.Created(), deleted: op == jetstream.KeyValueDelete || op == jetstream.KeyValuePurge,
				value: e.Value(), at: at})
		}
	}
}

// written is when a value the server stamped stamp and the agent received at
// seen was written, as far as the agent can tell: the server's stamp, but
// never later than seen (a guest clock behind the server's would make the
// value look fresher than a live one) nor earlier than floor, a moment by
// the agent's clock that the write is known to have followed (a guest clock
// ahead of the server's would make it look older than it can be; zero: no
// such moment).
func written(stamp, seen, floor time.Time) time.Time {
	at := stamp
	if at.After(seen) {
		at = seen
	}
	if at.Before(floor) {
		at = floor
	}
	return at
}

// pollLease reads the node's key every pollEvery(ttl) until ctx ends, each
// read bounded by pollTimeout(ttl), and applies what it finds. It opens the
// bucket's stream again until it exists.
func (a *Agent) pollLease(ctx context.Context) {
	js, err := jetstream.New(a.cfg.Conn)
	if err != nil {
		a.log.Error("open jetstream; the node lease is not polled", "err", err)
		return
	}
	var (
		stream  jetstream.Stream
		floor   time.Time // the next new revision was written after this
		failing bool
		polled  string // the node floor is for
	)
	for {
		ttl := a.leaseTTL()
		node := a.leaseNode()
		if node != polled {
			floor, polled = time.Time{}, node
		}
		subject := lease.KeySubject(node)
		sent := time.Now()
		rctx, cancel := context.WithTimeout(ctx, pollTimeout(ttl))
		err := func() error {
			if node == "" {
				return nil // no node named yet
			}
			if stream == nil {
				s, err := js.Stream(rctx, lease.StreamName)
				if err != nil {
					return fmt.Errorf("open lease bucket: %w", err)
				}
				if !s.CachedInfo().Config.AllowDirect {
					a.log.Warn("lease bucket without direct get: the lease is read from its leader only", "bucket", lease.Bucket)
				}
				stream = s
			}
			m, err := stream.GetLastMsgForSubject(rctx, subject)
			if errors.Is(err, jetstream.ErrMsgNotFound) {
				// Never written, or expired (MaxAge leaves no marker): nothing
				// to renew with; the fence timer decides.
				floor = sent
				return nil
			}
			if err != nil {
				return fmt.Errorf("read lease %s: %w", node, err)
			}
			seen := time.Now()
			if a.observe(leaseObs{node: node, rev: m.Sequence, stamp: m.Time, deleted: isDeleteMarker(m.Header), value: m.Data, at: written(m.Time, seen, floor)}) {
				// The newest the agent knows of: the next revision comes later.
				floor = sent
			}
			return nil
		}()
		cancel()
		switch {
		case ctx.Err() != nil:
			return
		case err != nil && !failing:
			a.log.Warn("poll node lease; retrying", "node", node, "err", err)
			failing = true
		case err == nil && failing:
			a.log.Info("polling node lease", "node", node)
			failing = false
		}
		t := time.NewTimer(time.Until(sent.Add(pollEvery(ttl))))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// isDeleteMarker reports whether a raw message of a KV bucket marks its key
// deleted or purged (ADR-8's KV-Operation header, or a server marker).
func isDeleteMarker(h nats.Header) bool {
	switch h.Get(kvOperation) {
	case "DEL", "PURGE":
		return true
	}
	return h.Get(jetstream.MarkerReasonHeader) != ""
}

// kvOperation is the header in which a KV bucket marks deletes and purges.
const kvOperation = "KV-Operation"

// leaseObs is one revision of the node's key, as the watch or a poll saw it.
type leaseObs struct {
	node    string // whose key it is
	rev     uint64
	stamp   time.Time // the server's stamp of it
	deleted bool      // a delete or purge marker
	value   []byte    // a lease.Value
	at      time.Time // when it was written, as well as the agent can tell (see written)
}

// observe applies o unless a revision as new was applied before: a put is a
// renewal, a delete or purge a lapse. It reports whether o's revision is the
// newest applied (new now, or seen before). A revision of a node the agent
// no longer follows (a read in flight when it switched) changes nothing.
func (a *Agent) observe(o leaseObs) bool {
	var v lease.Value
	var err error
	if !o.deleted {
		v, err = lease.Decode(o.value)
		if err == nil && v.TTLMS <= 0 {
			err = errors.New("ttl_ms: not positive")
		}
	}
	a.mu.Lock()
	if o.node != a.fence.node {
		a.mu.Unlock()
		return false
	}
	switch newer(o.rev, o.stamp, a.fence.rev, a.fence.stamp) {
	case 0:
		a.mu.Unlock()
		return true
	case -1:
		a.mu.Unlock()
		return false // a replica behind the others, or a late watch delivery
	}
	a.fence.rev, a.fence.stamp = o.rev, o.stamp
	if o.deleted {
		gen := a.fence.gen
		a.mu.Unlock()
		a.lapse(gen, fmt.Sprintf("the lease of node %s was deleted", o.node))
		return true
	}
	if err != nil {
		a.mu.Unlock()
		a.log.Warn("ignore node lease value", "node", o.node, "revision", o.rev, "err", err)
		return true
	}
	a.fence.frozenUntil = v.FrozenUntil
	a.renewedLocked(v.TTL(), o.at) // unlocks
	return true
}

// newer compares a revision of the key and its server stamp with the last
// one applied: 1 if it is newer, 0 if it is the same, -1 if older. A higher
// revision is newer; a lower one is older, unless it was stamped later: the
// bucket was deleted and made again (its revisions start over), and the
// agent must not ignore its new lease for good.
func newer(rev uint64, stamp time.Time, lastRev uint64, lastStamp time.Time) int {
	switch {
	case rev == lastRev && stamp.Equal(lastStamp):
		return 0
	case rev > lastRev, stamp.After(lastStamp):
		return 1
	}
	return -1
}

// renewedLocked records a renewal written at at with the given ttl: runs
// are accepted, and the fence fires FenceAfter(ttl) after at unless another
// renewal comes first. The caller holds mu; renewedLocked releases it.
func (a *Agent) renewedLocked(ttl time.Duration, at time.Time) {
	wait := lease.FenceAfter(ttl) - time.Since(at)
	if wait <= 0 {
		a.mu.Unlock()
		return // too old to count
	}
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
	node := a.fence.node
	a.fence.timer = time.AfterFunc(wait, func() {
		a.lapse(gen, fmt.Sprintf("no renewal of the lease of node %s seen for %s (0.6 of its ttl %s)", node, lease.FenceAfter(ttl), ttl))
	})
	if a.fence.state != LeaseHeld {
		a.log.Info("node lease held; accepting runs", "node", node, "ttl", ttl, "was", a.fence.state)
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
	if end := a.fence.frozenUntil.Add(lease.FenceAfter(a.fence.ttl)); !a.fence.frozenUntil.IsZero() && time.Now().Before(end) {
		// The node is frozen (`vmguard node freeze`, its host manager
		// stopped for an upgrade, say): the controller records no loss
		// before the freeze's end, so the processes keep running until
		// then, as if the lease was last renewed at that end.
		a.fence.gen++
		gen := a.fence.gen
		if a.fence.timer != nil {
			a.fence.timer.Stop()
		}
		a.fence.timer = time.AfterFunc(time.Until(end), func() {
			a.lapse(gen, why+"; the node's freeze ended")
		})
		a.mu.Unlock()
		a.log.Warn("node lease lapsed while the node is frozen; processes keep running until the freeze ends", "node", a.cfg.Node, "reason", why, "fence_at", end)
		return
	}
	a.fence.gen++
	if a.fence.timer != nil {
		a.fence.timer.Stop()
	}
	a.fence.state, a.fence.why = LeaseFenced, why
	node := a.fence.node
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
		"node", node, "reason", why, "processes", len(live), "halt", halt)
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

// leaseNode is the node whose lease the agent follows ("": none named yet).
func (a *Agent) leaseNode() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.fence.node
}

// fencing reports whether the agent fences: started with a node, or told
// to wait for one (Config.Fence).
func (a *Agent) fencing() bool { return a.cfg.Node != "" || a.cfg.Fence }

// leaseTTL is the ttl of the last renewal seen (0: none yet).
func (a *Agent) leaseTTL() time.Duration {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.fence.ttl
}
