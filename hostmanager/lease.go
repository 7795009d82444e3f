package hostmanager

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/vmguard/vmguard/internal/lease"
	"github.com/vmguard/vmguard/internal/timeline"
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

// leaseStore is where the node's lease lives: the lease bucket
// (natsLeases), or a simulated one. A revision that is no longer the key's
// and a missing key are jetstream.ErrKeyRevisionMismatch and
// jetstream.ErrKeyNotFound, as lease.Renew reads them.
type leaseStore interface {
	// open opens the store, creating it with key TTL ttl if it does not
	// exist, or setting its TTL to ttl.
	open(ctx context.Context, ttl time.Duration) (leaseBucket, error)
	// release deletes key if its current value is the caller's (ours),
	// else lease.ErrNotHeld (lease.Release).
	release(ctx context.Context, key string, ours func([]byte) bool) error
}

// leaseBucket is an opened leaseStore.
type leaseBucket interface {
	// put writes key whatever its revision, and returns the new one.
	put(ctx context.Context, key string, value []byte) (uint64, error)
	// Update writes key if its revision is still rev (lease.Updater).
	lease.Updater
	// get reads key's revision and value.
	get(ctx context.Context, key string) (rev uint64, value []byte, err error)
}

// leaseKeeper holds the node's lease: it takes it, renews it every ttl/4,
// fences the node's guests when renewals fail, and pets the node guard
// after each renewal. Its goroutine is Run; the loop feeds it the
// node_timeout and guard bounds in force (configure), the node's freeze
// (freeze) and its guests (setLocal), and reads whether the last renewal
// is recent enough to act on (stale). It tells the loop what happened to
// the lease on events.
type leaseKeeper struct {
	node    string
	holder  string
	store   leaseStore // the node lease's (natsLeases on Config.LeaseConn)
	now     func() time.Time
	logger  *slog.Logger
	metrics Metrics
	driver  func(name string) (Driver, error)
	petter  *petter // nil without Config.Guard
	events  chan leaseEvent

	ttl atomicDuration // node_timeout in force
	// guardBound and guardStop are guard_bound and guard_stop_time in force.
	guardBound, guardStop atomicDuration
	// lastOK is when (unix ns, Config.Now) the last lease renewal that
	// succeeded was sent; 0 while the lease is not held.
	lastOK atomic.Int64
	// frozenUntil is the end (unix ns) of the node's freeze while the log
	// shows it frozen, 0 otherwise: the keeper does not fence a frozen
	// node, writes the end into the lease for the agents, and pets the
	// guard past it.
	frozenUntil atomic.Int64

	localMu sync.Mutex
	local   map[string]GuestRef // pkg -> its guest on this node, for fencing

	// Owned by the loop goroutine.
	started bool   // Run was started
	stop    func() // stops Run and waits for it
}

func newLeaseKeeper(node, holder string, store leaseStore, now func() time.Time, logger *slog.Logger, m Metrics,
	driver func(string) (Driver, error), p *petter) *leaseKeeper {
	return &leaseKeeper{node: node, holder: holder, store: store, now: now, logger: logger, metrics: m, driver: driver, petter: p,
		events: make(chan leaseEvent, 8), local: map[string]GuestRef{}}
}

// configure sets the node_timeout and the guard's bounds in force.
func (k *leaseKeeper) configure(ttl time.Duration, tl timeline.Timeline) {
	k.ttl.Store(ttl)
	k.guardBound.Store(tl.GuardBound)
	k.guardStop.Store(tl.GuestStop)
}

// start runs Run in its own goroutine, once, counted in wg.
func (k *leaseKeeper) start(ctx context.Context, wg *sync.WaitGroup) {
	if k.started {
		return
	}
	k.started = true
	kctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	k.stop = func() {
		cancel()
		<-done
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(done)
		k.Run(kctx)
	}()
}

// freeze records the end of the node's freeze: until (math.MaxInt64
// without an end), or 0 when the node is not frozen.
func (k *leaseKeeper) freeze(until int64) { k.frozenUntil.Store(until) }

// stale reports whether the last lease renewal that succeeded was sent
// lease.FenceAfter(ttl) ago or longer: the keeper is about to fence the
// node (or this process was stopped, and whatever it knew may have been
// decided elsewhere since), so nothing is decided or done on old knowledge.
func (k *leaseKeeper) stale() bool {
	ok := k.lastOK.Load()
	ttl := k.ttl.Load()
	return ok == 0 || ttl <= 0 || k.now().Sub(time.Unix(0, ok)) >= lease.FenceAfter(ttl)
}

// setLocal records pkg's guest on this node (has false: none) and reports
// the one recorded before, if any.
func (k *leaseKeeper) setLocal(pkg string, ref GuestRef, has bool) (GuestRef, bool) {
	k.localMu.Lock()
	defer k.localMu.Unlock()
	old, had := k.local[pkg]
	if has {
		k.local[pkg] = ref
	} else {
		delete(k.local, pkg)
	}
	return old, had
}

// hold is the keeper's view of the lease while it runs.
type hold struct {
	kv     leaseBucket
	kvTTL  time.Duration
	rev    uint64
	held   bool
	lastOK time.Time     // when the last renewal that succeeded was sent
	rtt    time.Duration // how long the last write that succeeded took
	since  time.Time     // when the lease was taken, written into it
	host   string
}

// Run takes the node's lease and renews it every ttl/4 (lease.RenewEvery)
// until ctx ends or another instance of this node's host manager takes it.
// If it cannot renew it within lease.FenceAfter(ttl) of sending the last
// renewal that succeeded, or finds the lease gone or taken, it stops this
// node's guests at once (self-fencing) and tells the loop; then it takes the
// lease again as soon as it can write. The fence is timed from the send,
// which comes before the server stored the renewal (when its key's TTL
// starts), and ends early enough that the guests are stopped before the key
// expires and the controller may place their packages elsewhere.
func (k *leaseKeeper) Run(ctx context.Context) {
	h := &hold{since: k.now().UTC()}
	h.host, _ = os.Hostname()
	for ctx.Err() == nil {
		ttl := k.ttl.Load()
		if h.kv == nil || h.kvTTL != ttl {
			if !k.open(ctx, h, ttl) {
				if !k.sleep(ctx, lease.TakeRetry(ttl)) {
					return
				}
				continue
			}
		}
		if !h.held {
			if !k.take(ctx, h, ttl) {
				return
			}
			continue
		}
		if !k.sleep(ctx, h.lastOK.Add(lease.RenewEvery(ttl)).Sub(k.now())) {
			return
		}
		if !k.renew(ctx, h, ttl) {
			return
		}
	}
}

// open opens (or creates) the lease bucket for ttl; false if it could not,
// and the lease, if held, is lost once its fence's deadline passed.
func (k *leaseKeeper) open(ctx context.Context, h *hold, ttl time.Duration) bool {
	ectx, cancel := context.WithTimeout(ctx, lease.TakeTimeout(ttl))
	b, err := k.store.open(ectx, ttl)
	cancel()
	if err != nil {
		k.logger.Warn("lease bucket", "err", err)
		if h.held && k.now().Sub(h.lastOK) >= lease.FenceAfter(ttl) {
			k.fenceLost(ctx, h, "lease not renewed for "+lease.FenceAfter(ttl).String(),
				"could not renew the node lease for "+lease.FenceAfter(ttl).String()+" (0.6 of node_timeout "+ttl.String()+"): "+err.Error())
		}
		return false
	}
	h.kv, h.kvTTL = b, ttl
	return true
}

// take writes the lease; false if ctx ended.
func (k *leaseKeeper) take(ctx context.Context, h *hold, ttl time.Duration) bool {
	pctx, cancel := context.WithTimeout(ctx, lease.TakeTimeout(ttl))
	sent := k.now()
	v, err := h.kv.put(pctx, k.node, k.value(h, ttl))
	cancel()
	if err != nil {
		k.logger.Warn("take node lease; retrying", "err", err)
		return k.sleep(ctx, lease.TakeRetry(ttl))
	}
	h.rev, h.held, h.lastOK, h.since, h.rtt = v, true, sent, k.now().UTC(), k.now().Sub(sent)
	k.renewed(sent)
	k.logger.Info("node lease taken", "ttl", ttl)
	k.send(ctx, leaseEvent{held: true, at: k.now()})
	return true
}

// renew renews the lease until a renewal succeeds or the lease is lost
// (its guests fenced, the loop told); false if the keeper must stop: ctx
// ended, or another instance of this node's host manager took the lease.
func (k *leaseKeeper) renew(ctx context.Context, h *hold, ttl time.Duration) bool {
	first := lease.FirstAttempt(ttl, h.rtt)
	for h.held && ctx.Err() == nil {
		deadline := h.lastOK.Add(lease.FenceAfter(ttl))
		// Overlapping attempts until the fence's deadline (lease.Renew):
		// while the cluster elects the bucket's leader every update is
		// dropped unanswered, and the renewal must be through within
		// RenewResend of the new leader taking writes, not an attempt
		// timeout and a pause later (a 4.8 s election left renewal gaps
		// of 11-12 s and fenced a healthy node). The first attempt waits
		// twice the last round trip before another is sent (a slow link:
		// docs/bench/partitions.md, finding 4).
		rn, err := lease.Renew(ctx, h.kv, k.node, h.rev, func() []byte { return k.value(h, ttl) }, first, lease.RenewResend(ttl), deadline)
		if err == nil {
			h.rev, h.lastOK, h.rtt = rn.Rev, rn.Sent, rn.RTT
			k.renewed(rn.Sent)
			if rn.Attempts > 1 {
				k.logger.Info("node lease renewed", "attempts", rn.Attempts, "rtt", rn.RTT)
			}
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		lost := ""
		if errors.Is(err, jetstream.ErrKeyRevisionMismatch) || errors.Is(err, jetstream.ErrKeyNotFound) {
			var again, superseded bool
			lost, again, superseded = k.readHolder(ctx, h, min(max(first, time.Second), deadline.Sub(k.now())))
			if superseded {
				return false
			}
			if again {
				continue
			}
		}
		if lost == "" && !k.now().Before(deadline) {
			lost = "could not renew the node lease for " + lease.FenceAfter(ttl).String() + " (0.6 of node_timeout " + ttl.String() + "): " + err.Error()
		}
		if lost != "" {
			k.logger.Error("self-fencing: stopping this node's guests", "reason", lost)
			k.fenceLost(ctx, h, lost, lost)
			return true
		}
		k.logger.Warn("renew node lease; retrying", "err", err)
		if !k.sleep(ctx, min(lease.RenewRetry(ttl), max(deadline.Sub(k.now()), 0))) {
			return false
		}
	}
	return true
}

// readHolder reads the lease key after a renewal found another revision or
// none, within d: again if the revision is this keeper's own renewal whose
// answer was lost (h.rev follows it), superseded if another instance of
// this node's host manager holds it (the loop is told; it adopts the
// guests, which are left alone), lost's reason if the key is gone. A read
// that failed, or a replica behind the leader, says nothing: all zero.
func (k *leaseKeeper) readHolder(ctx context.Context, h *hold, d time.Duration) (lost string, again, superseded bool) {
	v, holder, err := k.leaseHolder(ctx, h.kv, d)
	switch {
	case err == nil && holder == k.holder:
		if v > h.rev {
			h.rev = v // our own renewal whose reply was lost
			return "", true, false
		}
		// A replica behind the leader answered the read: ask again.
	case err == nil && holder != "":
		k.logger.Error("node lease taken by another host manager instance; stopping", "holder", holder)
		k.send(ctx, leaseEvent{superseded: holder})
		return "", false, true
	case err == nil, errors.Is(err, jetstream.ErrKeyNotFound):
		return "the node lease was deleted or expired", false, false
	}
	// A read that failed says nothing about the key (it timed out on a
	// slow link, say): retry until the deadline.
	return "", false, false
}

// fenceLost notes the lease lost for reason, stops this node's guests
// (fence, with why) and tells the loop.
func (k *leaseKeeper) fenceLost(ctx context.Context, h *hold, reason, why string) {
	h.held = false
	k.lost(reason)
	k.fence(ctx, why)
	k.send(ctx, leaseEvent{reason: reason, at: k.now()})
}

// value is the lease's value as written now.
func (k *leaseKeeper) value(h *hold, ttl time.Duration) []byte {
	return lease.Value{Node: k.node, Holder: k.holder, Renewed: k.now().UTC(), TTLMS: ttl.Milliseconds(),
		Host: h.host, PID: os.Getpid(), Since: h.since, FrozenUntil: k.frozenEnd()}.Encode()
}

// send tells the loop le, unless ctx ends first.
func (k *leaseKeeper) send(ctx context.Context, le leaseEvent) {
	select {
	case k.events <- le:
	case <-ctx.Done():
	}
}

// sleep waits d; false if ctx ended first.
func (k *leaseKeeper) sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// renewed notes a lease renewal that succeeded, sent at sent, and pets the
// guard: it stops the guests unless petted again by sent + the renew
// interval + guard_bound (internal/timeline).
func (k *leaseKeeper) renewed(sent time.Time) {
	k.metrics.LeaseRenewed(k.now().Sub(sent))
	k.lastOK.Store(sent.UnixNano())
	if k.petter == nil {
		return
	}
	ttl := k.ttl.Load()
	deadline := sent.Add(lease.RenewEvery(ttl) + k.guardBound.Load())
	if end := k.frozenEnd(); !end.IsZero() && end.Add(lease.RenewEvery(ttl)+k.guardBound.Load()).After(deadline) {
		// Frozen: the guard is disarmed until the freeze's end, as if the
		// last renewal was sent then.
		deadline = end.Add(lease.RenewEvery(ttl) + k.guardBound.Load())
	}
	k.petter.send(pet{Holder: k.holder, Deadline: deadline.Round(0), StopWithin: k.guardStop.Load(), Guests: k.localGuests()})
}

// frozenEnd returns the end of the node's freeze while the log shows it
// frozen and the end has not passed, else zero.
func (k *leaseKeeper) frozenEnd() time.Time {
	u := k.frozenUntil.Load()
	if u == 0 {
		return time.Time{}
	}
	end := time.Unix(0, u).UTC()
	if !k.now().Before(end) {
		return time.Time{}
	}
	return end
}

// petNow pets the guard at once with the deadline of the last renewal:
// past the freeze's end once node.frozen is read (a host manager stopped
// right after leaves the guests to the freeze), the usual one once
// node.thawed is.
func (k *leaseKeeper) petNow() {
	if ok := k.lastOK.Load(); ok != 0 && k.petter != nil {
		k.renewed(time.Unix(0, ok))
	}
}

// lost notes that the lease is lost and tells the guard to stop the guests
// now (the keeper stops them too), unless the node is frozen: then the
// guests keep running until the freeze's end (the controller records no
// node.lost before it).
func (k *leaseKeeper) lost(why string) {
	k.lastOK.Store(0)
	if k.petter != nil && k.frozenEnd().IsZero() {
		k.petter.send(pet{Holder: k.holder, Fence: why, StopWithin: k.guardStop.Load(), Guests: k.localGuests()})
	}
}

// petGuests tells the guard, if any, the guests of this node changed.
func (k *leaseKeeper) petGuests() {
	if k.petter != nil {
		k.petter.send(pet{Holder: k.holder, Guests: k.localGuests()})
	}
}

// localGuests returns the guests this node runs.
func (k *leaseKeeper) localGuests() []GuestRef {
	k.localMu.Lock()
	defer k.localMu.Unlock()
	out := make([]GuestRef, 0, len(k.local))
	for _, g := range k.local {
		out = append(out, g)
	}
	return out
}

// leaseHolder returns the revision and holder of the node's lease key.
func (k *leaseKeeper) leaseHolder(ctx context.Context, kv leaseBucket, d time.Duration) (uint64, string, error) {
	gctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	rev, b, err := kv.get(gctx, k.node)
	if err != nil {
		return 0, "", err
	}
	v, err := lease.Decode(b)
	if err != nil {
		return rev, "", nil
	}
	return rev, v.Holder, nil
}

// fence stops every guest of this node at once, through its driver, in
// parallel; it does not need the log.
func (k *leaseKeeper) fence(ctx context.Context, why string) {
	if end := k.frozenEnd(); !end.IsZero() {
		k.logger.Warn("node frozen: guests keep running despite the lease", "reason", why, "until", end)
		return
	}
	var wg sync.WaitGroup
	for _, g := range k.localGuests() {
		drv, err := k.driver(g.Guest.Driver)
		if err != nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
			defer cancel()
			if err := drv.Stop(sctx, g, true); err != nil {
				k.logger.Error("fence guest", "package", g.Package, "guest", g.Name(), "err", err)
			} else {
				k.logger.Warn("guest fenced", "package", g.Package, "guest", g.Name(), "reason", why)
			}
		}()
	}
	wg.Wait()
}

// release stops Run and deletes the node's lease if this keeper holds it
// (clean shutdown).
func (k *leaseKeeper) release(ctx context.Context) {
	if k.stop == nil {
		return
	}
	k.stop()
	dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	err := k.store.release(dctx, k.node, func(b []byte) bool {
		v, err := lease.Decode(b)
		return err == nil && v.Holder == k.holder
	})
	if err != nil && !errors.Is(err, lease.ErrNotHeld) {
		k.logger.Warn("release node lease", "err", err)
	}
}
