package guestagent

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"syscall"
	"time"

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
// Two observers (lease.Watcher) feed one view (Agent.observe, which applies each revision
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
	w := &lease.Watcher{Conn: a.cfg.Conn, Node: a.leaseNode, TTL: a.leaseTTL, Observe: a.observe,
		Kick: a.fence.kick, Clock: lease.SystemClock{}, Logger: a.log}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		w.Run(wctx)
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

// observe applies o unless a revision as new was applied before: a put is a
// renewal, a delete or purge a lapse. It reports whether o's revision is the
// newest applied (new now, or seen before). A revision of a node the agent
// no longer follows (a read in flight when it switched) changes nothing.
func (a *Agent) observe(o lease.Observation) bool {
	var v lease.Value
	var err error
	if !o.Deleted {
		v, err = lease.Decode(o.Value)
		if err == nil && v.TTLMS <= 0 {
			err = errors.New("ttl_ms: not positive")
		}
	}
	a.mu.Lock()
	if o.Node != a.fence.node {
		a.mu.Unlock()
		return false
	}
	switch lease.Newer(o.Rev, o.Stamp, a.fence.rev, a.fence.stamp) {
	case 0:
		a.mu.Unlock()
		return true
	case -1:
		a.mu.Unlock()
		return false // a replica behind the others, or a late watch delivery
	}
	a.fence.rev, a.fence.stamp = o.Rev, o.Stamp
	if o.Deleted {
		gen := a.fence.gen
		a.mu.Unlock()
		a.lapse(gen, fmt.Sprintf("the lease of node %s was deleted", o.Node))
		return true
	}
	if err != nil {
		a.mu.Unlock()
		a.log.Warn("ignore node lease value", "node", o.Node, "revision", o.Rev, "err", err)
		return true
	}
	a.fence.frozenUntil = v.FrozenUntil
	a.renewedLocked(v.TTL(), o.At) // unlocks
	return true
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
