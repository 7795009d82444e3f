package hostmanager

import (
	"context"
	"errors"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/vmguard/vmguard/events"
	"github.com/vmguard/vmguard/internal/lease"
)

// atomicDuration is a time.Duration shared between goroutines.
type atomicDuration struct{ v atomic.Int64 }

func (a *atomicDuration) Load() time.Duration   { return time.Duration(a.v.Load()) }
func (a *atomicDuration) Store(d time.Duration) { a.v.Store(int64(d)) }

// leaseEvent is what the lease keeper tells the loop.
type leaseEvent struct {
	// held: the lease was taken (at start, or again after a fence).
	held bool
	// reason says why the lease was lost (held false); the keeper has
	// already stopped this node's guests.
	reason string
	at     time.Time
	// superseded names the holder of another host manager instance of
	// this node that took the lease: this one steps down.
	superseded string
}

// startLease starts the lease keeper once the config (node_timeout) is
// known, and passes it the node_timeout in force.
func (r *Runner) startLease(ctx context.Context) {
	c := r.st.Config
	if c == nil {
		return
	}
	ttl := c.NodeTimeout.D()
	if ttl <= 0 {
		return
	}
	r.ttl.Store(ttl)
	tl := c.Timeline()
	r.guardBound.Store(tl.GuardBound)
	r.guardStop.Store(tl.GuestStop)
	if r.leaseOnce {
		return
	}
	r.leaseOnce = true
	kctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	r.leaseStop = func() {
		cancel()
		<-done
	}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		defer close(done)
		r.keepLease(kctx)
	}()
}

// keepLease takes the node's lease and renews it every ttl/4 (lease.RenewEvery).
// If it cannot renew it within lease.FenceAfter(ttl) of sending the last
// renewal that succeeded, or finds the lease gone or taken, it stops this
// node's guests at once (self-fencing) and tells the loop; then it takes the
// lease again as soon as it can write. The fence is timed from the send,
// which comes before the server stored the renewal (when its key's TTL
// starts), and ends early enough that the guests are stopped before the key
// expires and the controller may place their packages elsewhere.
//
// Longer than 80 lines: the lease keeper's loop, whose take/renew/fence
// states share the timers; it becomes its own type in the host manager
// runner's split (docs/design-notes.md §3).
func (r *Runner) keepLease(ctx context.Context) {
	var (
		kv     jetstream.KeyValue
		kvTTL  time.Duration
		rev    uint64
		held   bool
		lastOK time.Time     // when the last renewal that succeeded was sent
		rtt    time.Duration // how long the last write that succeeded took
	)
	host, _ := os.Hostname()
	since := r.now().UTC()
	value := func(ttl time.Duration) []byte {
		return lease.Value{Node: r.node, Holder: r.holder, Renewed: r.now().UTC(), TTLMS: ttl.Milliseconds(),
			Host: host, PID: os.Getpid(), Since: since, FrozenUntil: r.frozenEnd()}.Encode()
	}
	send := func(le leaseEvent) {
		select {
		case r.leaseEvent <- le:
		case <-ctx.Done():
		}
	}
	sleep := func(d time.Duration) bool {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
			return true
		case <-ctx.Done():
			return false
		}
	}
	for ctx.Err() == nil {
		ttl := r.ttl.Load()
		if kv == nil || kvTTL != ttl {
			ectx, cancel := context.WithTimeout(ctx, lease.TakeTimeout(ttl))
			b, err := lease.Ensure(ectx, r.leaseJS, ttl)
			cancel()
			if err != nil {
				r.logger.Warn("lease bucket", "err", err)
				if held && r.now().Sub(lastOK) >= lease.FenceAfter(ttl) {
					held = false
					r.lost("lease not renewed for " + lease.FenceAfter(ttl).String())
					r.fence(ctx, "could not renew the node lease for "+lease.FenceAfter(ttl).String()+" (0.6 of node_timeout "+ttl.String()+"): "+err.Error())
					send(leaseEvent{reason: "lease not renewed for " + lease.FenceAfter(ttl).String(), at: r.now()})
				}
				if !sleep(lease.TakeRetry(ttl)) {
					return
				}
				continue
			}
			kv, kvTTL = b, ttl
		}
		if !held {
			pctx, cancel := context.WithTimeout(ctx, lease.TakeTimeout(ttl))
			sent := r.now()
			v, err := kv.Put(pctx, r.node, value(ttl))
			cancel()
			if err != nil {
				r.logger.Warn("take node lease; retrying", "err", err)
				if !sleep(lease.TakeRetry(ttl)) {
					return
				}
				continue
			}
			rev, held, lastOK, since, rtt = v, true, sent, r.now().UTC(), r.now().Sub(sent)
			r.renewed(sent)
			r.logger.Info("node lease taken", "ttl", ttl)
			send(leaseEvent{held: true, at: r.now()})
			continue
		}
		if !sleep(lastOK.Add(lease.RenewEvery(ttl)).Sub(r.now())) {
			return
		}
		first := lease.FirstAttempt(ttl, rtt)
		for held && ctx.Err() == nil {
			deadline := lastOK.Add(lease.FenceAfter(ttl))
			// Overlapping attempts until the fence's deadline (lease.Renew):
			// while the cluster elects the bucket's leader every update is
			// dropped unanswered, and the renewal must be through within
			// RenewResend of the new leader taking writes, not an attempt
			// timeout and a pause later (a 4.8 s election left renewal gaps
			// of 11-12 s and fenced a healthy node). The first attempt waits
			// twice the last round trip before another is sent (a slow link:
			// docs/bench/partitions.md, finding 4).
			rn, err := lease.Renew(ctx, kv, r.node, rev, func() []byte { return value(ttl) }, first, lease.RenewResend(ttl), deadline)
			if err == nil {
				rev, lastOK, rtt = rn.Rev, rn.Sent, rn.RTT
				r.renewed(rn.Sent)
				if rn.Attempts > 1 {
					r.logger.Info("node lease renewed", "attempts", rn.Attempts, "rtt", rn.RTT)
				}
				break
			}
			if ctx.Err() != nil {
				return
			}
			lost := ""
			if errors.Is(err, jetstream.ErrKeyRevisionMismatch) || errors.Is(err, jetstream.ErrKeyNotFound) {
				v, holder, gerr := r.leaseHolder(ctx, kv, min(max(first, time.Second), deadline.Sub(r.now())))
				switch {
				case gerr == nil && holder == r.holder:
					if v > rev {
						rev = v // our own renewal whose reply was lost
						continue
					}
					// A replica behind the leader answered the read: ask again.
				case gerr == nil && holder != "":
					// A newer host manager of this node took over (it
					// adopts the guests): step down without touching them.
					r.logger.Error("node lease taken by another host manager instance; stopping", "holder", holder)
					send(leaseEvent{superseded: holder})
					return
				case gerr == nil, errors.Is(gerr, jetstream.ErrKeyNotFound):
					lost = "the node lease was deleted or expired"
				}
				// A read that failed says nothing about the key (it timed
				// out on a slow link, say): retry until the deadline.
			}
			if lost == "" && !r.now().Before(deadline) {
				lost = "could not renew the node lease for " + lease.FenceAfter(ttl).String() + " (0.6 of node_timeout " + ttl.String() + "): " + err.Error()
			}
			if lost != "" {
				held = false
				r.lost(lost)
				r.logger.Error("self-fencing: stopping this node's guests", "reason", lost)
				r.fence(ctx, lost)
				send(leaseEvent{reason: lost, at: r.now()})
				break
			}
			r.logger.Warn("renew node lease; retrying", "err", err)
			if !sleep(min(lease.RenewRetry(ttl), max(deadline.Sub(r.now()), 0))) {
				return
			}
		}
	}
}

// renewed notes a lease renewal that succeeded, sent at sent, and pets the
// guard: it stops the guests unless petted again by sent + the renew
// interval + guard_bound (internal/timeline).
func (r *Runner) renewed(sent time.Time) {
	r.cfg.Metrics.LeaseRenewed(r.now().Sub(sent))
	r.lastOK.Store(sent.UnixNano())
	if r.petter == nil {
		return
	}
	ttl := r.ttl.Load()
	deadline := sent.Add(lease.RenewEvery(ttl) + r.guardBound.Load())
	if end := r.frozenEnd(); !end.IsZero() && end.Add(lease.RenewEvery(ttl)+r.guardBound.Load()).After(deadline) {
		// Frozen: the guard is disarmed until the freeze's end, as if the
		// last renewal was sent then.
		deadline = end.Add(lease.RenewEvery(ttl) + r.guardBound.Load())
	}
	r.petter.send(pet{Holder: r.holder, Deadline: deadline.Round(0), StopWithin: r.guardStop.Load(), Guests: r.localGuests()})
}

// frozenEnd returns the end of the node's freeze while the log shows it
// frozen and the end has not passed, else zero.
func (r *Runner) frozenEnd() time.Time {
	u := r.frozenUntil.Load()
	if u == 0 {
		return time.Time{}
	}
	end := time.Unix(0, u).UTC()
	if !r.now().Before(end) {
		return time.Time{}
	}
	return end
}

// petNow pets the guard at once with the deadline of the last renewal:
// past the freeze's end once node.frozen is read (a host manager stopped
// right after leaves the guests to the freeze), the usual one once
// node.thawed is.
func (r *Runner) petNow() {
	if ok := r.lastOK.Load(); ok != 0 && r.petter != nil {
		r.renewed(time.Unix(0, ok))
	}
}

// lost notes that the lease is lost and tells the guard to stop the guests
// now (the keeper stops them too), unless the node is frozen: then the
// guests keep running until the freeze's end (the controller records no
// node.lost before it).
func (r *Runner) lost(why string) {
	r.lastOK.Store(0)
	if r.petter != nil && r.frozenEnd().IsZero() {
		r.petter.send(pet{Holder: r.holder, Fence: why, StopWithin: r.guardStop.Load(), Guests: r.localGuests()})
	}
}

// petGuests tells the guard the guests of this node changed.
func (r *Runner) petGuests() {
	r.petter.send(pet{Holder: r.holder, Guests: r.localGuests()})
}

// localGuests returns the guests this node runs.
func (r *Runner) localGuests() []GuestRef {
	r.localMu.Lock()
	defer r.localMu.Unlock()
	out := make([]GuestRef, 0, len(r.local))
	for _, g := range r.local {
		out = append(out, g)
	}
	return out
}

// leaseHolder returns the revision and holder of the node's lease key.
func (r *Runner) leaseHolder(ctx context.Context, kv jetstream.KeyValue, d time.Duration) (uint64, string, error) {
	gctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	e, err := kv.Get(gctx, r.node)
	if err != nil {
		return 0, "", err
	}
	v, err := lease.Decode(e.Value())
	if err != nil {
		return e.Revision(), "", nil
	}
	return e.Revision(), v.Holder, nil
}

// fence stops every guest of this node at once, through its driver, in
// parallel; it does not need the log.
func (r *Runner) fence(ctx context.Context, why string) {
	if end := r.frozenEnd(); !end.IsZero() {
		r.logger.Warn("node frozen: guests keep running despite the lease", "reason", why, "until", end)
		return
	}
	r.localMu.Lock()
	refs := make([]GuestRef, 0, len(r.local))
	for _, g := range r.local {
		refs = append(refs, g)
	}
	r.localMu.Unlock()
	var wg sync.WaitGroup
	for _, g := range refs {
		drv, err := r.driver(g.Guest.Driver)
		if err != nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
			defer cancel()
			if err := drv.Stop(sctx, g, true); err != nil {
				r.logger.Error("fence guest", "package", g.Package, "guest", g.Name(), "err", err)
			} else {
				r.logger.Warn("guest fenced", "package", g.Package, "guest", g.Name(), "reason", why)
			}
		}()
	}
	wg.Wait()
}

// onLease reacts to the lease keeper.
func (r *Runner) onLease(ctx context.Context, le leaseEvent) {
	switch {
	case le.superseded != "":
		r.member.Observe(Observation{Kind: ObserveSuperseded, At: le.at})
	case !le.held:
		r.member.Observe(Observation{Kind: ObserveLeaseLost, Reason: le.reason, At: le.at})
	default:
		r.member.Observe(Observation{Kind: ObserveLeaseTaken, At: le.at})
		r.nodeWork(ctx)
		if r.active() {
			r.processAll(ctx)
		}
		return
	}
	for _, f := range r.flights {
		f.cancel()
	}
}

// nodeWork appends what the membership core decides (Member.Decide):
// node.fenced once the lease is back after a self-fence, node.joined when
// the log does not show the node joined (at start, after lost or fenced),
// and processes every package once a fence is recorded or a freeze ended.
func (r *Runner) nodeWork(ctx context.Context) {
	if !r.member.Held {
		return
	}
	if r.stale() {
		// Whatever the log says about this node may be news to a lease
		// keeper that is about to fence it: look again in a second.
		r.retryPackage(ctx, "")
		return
	}
	if !r.nc.IsConnected() {
		r.retryPackage(ctx, "")
		return
	}
	for range 4 {
		switch r.member.Decide(r.now()) {
		case MemberAppendFenced:
			e := events.Stamp(events.Event{Source: r.st.Source(), Subject: r.node,
				Data: events.NodeFenced{Reason: clipReason(r.member.FenceReason), Since: r.member.FenceTime.UTC(), Hold: r.member.FenceHold}}, r.now())
			actx, cancel := context.WithTimeout(ctx, appendTimeout)
			seq, err := r.log.Append(actx, e)
			cancel()
			if err != nil {
				r.logger.Warn("append node.fenced; retrying", "err", err)
				r.retryPackage(ctx, "")
				return
			}
			r.member.Observe(Observation{Kind: ObserveFenceAppended, Seq: seq})
			r.logger.Info("node.fenced appended", "seq", seq)
			return // the rest once it is read back
		case MemberResume:
			r.member.Observe(Observation{Kind: ObserveResumed})
			r.processAll(ctx)
		case MemberAppendJoined, MemberAppendLeaseTaken:
			if !r.recordNode(ctx) {
				return
			}
			// The lease take is on record: act on what the log asks for
			// (the runner acted on nothing since it took the lease).
			if r.active() {
				r.processAll(ctx)
			}
		default:
			return
		}
	}
}

// recordNode appends the node.joined or node.lease_taken the membership
// core decides, guarded by the node's last sequence as the state read it,
// and reports whether it was stored. A conflict means a node event this
// runner has not read is on its way (a node.lost, say): it is read, and
// the core decides again then.
func (r *Runner) recordNode(ctx context.Context) bool {
	join := r.member.Decide(r.now()) == MemberAppendJoined
	var d events.Payload = events.NodeLeaseTaken{Holder: r.holder, Version: r.cfg.Version}
	if join {
		d = events.NodeJoined{Version: r.cfg.Version}
	}
	e := events.Stamp(events.Event{Source: r.st.Source(), Subject: r.node, Data: d}, r.now())
	if r.test.beforeRecord != nil {
		r.test.beforeRecord(e)
	}
	actx, cancel := context.WithTimeout(ctx, appendTimeout)
	seq, err := r.log.Append(actx, e, events.ExpectLastSeq(events.NodeFilter(r.node), r.st.NodeSeqs[r.node]))
	cancel()
	switch {
	case errors.Is(err, events.ErrConflict):
		// Something about the node is on its way; look again then.
		r.logger.Info("node record conflicts with a newer node event; reading it first", "type", e.Type())
		return false
	case err != nil:
		r.logger.Warn("append node record; retrying", "type", e.Type(), "err", err)
		r.retryPackage(ctx, "")
		return false
	case join:
		r.member.Observe(Observation{Kind: ObserveJoinAppended, Seq: seq})
		r.logger.Info("node joined", "seq", seq)
	default:
		r.member.Observe(Observation{Kind: ObserveLeaseRecorded, Seq: seq})
		r.logger.Info("node lease take recorded", "seq", seq)
	}
	return true
}

// releaseLease stops renewing the node's lease and deletes it if this
// runner holds it (clean shutdown).
func (r *Runner) releaseLease(ctx context.Context) {
	if r.leaseStop == nil {
		return
	}
	r.leaseStop()
	dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	kv, err := lease.Open(dctx, r.leaseJS)
	if err == nil {
		err = lease.Release(dctx, kv, r.node, func(b []byte) bool {
			v, err := lease.Decode(b)
			return err == nil && v.Holder == r.holder
		})
	}
	if err != nil && !errors.Is(err, lease.ErrNotHeld) {
		r.logger.Warn("release node lease", "err", err)
	}
}
