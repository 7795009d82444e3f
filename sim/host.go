package sim

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/vmguard/vmguard/events"
	"github.com/vmguard/vmguard/hostmanager"
	"github.com/vmguard/vmguard/internal/lease"
)

// host is one node's host manager: the real loop of hostmanager.Runner
// (hostmanager.NewLoop: the fold, Decide and Pending, the membership core,
// the executor with its ordering, delays, report timeouts and stop ladder,
// the guest monitor, the append retries) over the simulated log and clock.
// What stays a model here: the lease keeper (a key in the lease bucket,
// renewed every RenewEvery, lost after FenceAfter without a renewal, whose
// outcome the loop gets as Renewed, LeaseTaken and LeaseLost), the
// follower (events handed to the loop each tick, as the world's read shows
// them), the guests' heartbeats (each guest up on the node beats each tick
// the node reaches the log) and the actions (hostPerformer: the drivers
// and the agents, at simulated delays).
type host struct {
	w       *world
	node    string
	skew    time.Duration
	whoName string

	up          bool
	gen         int // incarnation: tasks of an earlier one do nothing
	pausedUntil time.Time

	loop     *hostmanager.Loop
	cursor   uint64
	replayed bool
	lastTick time.Time

	held      bool
	leaseRev  uint64
	lastRenew time.Time // node clock: send time of the last renewal that succeeded
}

func (h *host) who() string {
	if h.whoName == "" {
		h.whoName = "node/" + h.node
	}
	return h.whoName
}

func (h *host) clock() time.Time { return h.w.now().Add(h.skew) }

// start starts a fresh host manager process: empty state, replay, lease.
func (h *host) start() {
	w := h.w
	h.up = true
	h.gen++
	h.cursor, h.replayed, h.lastTick = 0, false, time.Time{}
	h.held, h.leaseRev = false, 0
	loop, err := hostmanager.NewLoop(hostmanager.LoopConfig{
		Node: h.node, Log: hostLog{h}, Performer: hostPerformer{h}, Now: h.clock,
		AfterFunc: h.afterFunc,
		Connected: func() bool { return w.reach(h.who()) },
		Fence: func(string) {
			if !h.loop.Member().FrozenAt(h.clock()) {
				w.stopGuests(h.node)
			}
		},
		NewID: func() string {
			w.ids++
			return fmt.Sprintf("ev%06d", w.ids)
		},
	})
	if err != nil {
		panic(fmt.Sprintf("sim: %v", err))
	}
	h.loop = loop
	gen := h.gen
	w.every(hostTick, func() bool { return h.up && h.gen == gen }, h.tick)
}

// isUp reports whether the host manager runs.
func (h *host) isUp() bool { return h.up }

// crash ends the process: its state, timers and actions in flight go.
func (h *host) crash() {
	h.up = false
	h.gen++
}

// run runs fn after d in this incarnation of the host manager, waiting out
// a pause: the loop's steps happen only while the process runs.
func (h *host) run(d time.Duration, fn func()) {
	w, gen := h.w, h.gen
	var task func()
	task = func() {
		if !h.up || h.gen != gen {
			return
		}
		if w.now().Before(h.pausedUntil) {
			w.at(h.pausedUntil, task)
			return
		}
		fn()
	}
	w.after(d, task)
}

// simTimer is a timer of the loop on the simulated clock.
type simTimer struct{ fired, stopped bool }

func (t *simTimer) Stop() bool {
	was := !t.fired && !t.stopped
	t.stopped = true
	return was
}

// afterFunc is the loop's AfterFunc: f queues the loop's work, which the
// Woken step then does.
func (h *host) afterFunc(d time.Duration, f func()) hostmanager.Timer {
	t := &simTimer{}
	h.run(d, func() {
		if t.stopped {
			return
		}
		t.fired = true
		f()
		h.loop.Woken(stepCtx)
	})
	return t
}

func (h *host) tick() {
	w := h.w
	if w.now().Before(h.pausedUntil) {
		return
	}
	now := h.clock()
	if !h.replayed {
		// Start: replay the log to its end as it is now (Runner.Run), and
		// only then, from the next tick on, take the lease and follow.
		if !w.reach(h.who()) {
			return
		}
		for _, e := range w.evs[h.cursor:] {
			h.cursor = e.Seq
			h.loop.Replay(e)
			if w.opt.Mutation == MutationStartVoid {
				h.unvoid(e)
			}
		}
		if w.opt.Mutation == MutationResetRestarts {
			h.resetRestarts()
		}
		h.loop.Begin(stepCtx)
		h.replayed = true
		return
	}
	h.lease(now)
	if h.held && !h.loop.Member().Fenced {
		w.guards[h.node].pet(w.now())
	}
	if !w.reach(h.who()) {
		return
	}
	h.heartbeats()
	for _, e := range w.read(h.cursor) {
		h.cursor = e.Seq
		h.loop.Handle(stepCtx, e)
		if w.opt.Mutation == MutationStartVoid {
			h.unvoid(e)
		}
	}
	if now.Sub(h.lastTick) >= h.loop.MonitorEvery() {
		h.lastTick = now
		h.loop.Tick(stepCtx)
	}
	if w.opt.Mutation == MutationSkipRelease && h.loop.Member().MayAct(now) {
		for _, pkg := range h.loop.State().PackageNames() {
			h.startEarly(pkg)
		}
	}
}

// heartbeats reports a heartbeat of each guest up on the node.
func (h *host) heartbeats() {
	for _, g := range h.w.guests {
		if g.node == h.node && g.up {
			h.loop.Heartbeat(g.name)
		}
	}
}

// resetRestarts is the planted bug MutationResetRestarts: the replayed
// restart counters are zeroed.
func (h *host) resetRestarts() {
	for _, p := range h.loop.State().Packages {
		if p.Inst != nil {
			for _, sv := range p.Inst.Services {
				sv.Restarts, sv.RestartTimes = 0, nil
			}
		}
	}
}

// unvoid is the planted bug MutationStartVoid: a placement the fold found
// void (stored after its node's loss) counts as not released.
func (h *host) unvoid(e events.Event) {
	d, ok := e.Data.(events.PackagePlaced)
	if !ok {
		return
	}
	st := h.loop.State()
	if p := st.Package(e.Subject); p != nil && p.Current.Seq == e.Seq && p.Current.Released && st.NodeDown[d.Node] < e.Seq {
		p.Current.Released = false
	}
}

// startEarly is the planted bug MutationSkipRelease: a package.starting for
// the current placement on this node while an older one is not released,
// appended beside the loop, which then reads it and starts the guest.
func (h *host) startEarly(pkg string) {
	st := h.loop.State()
	p := st.Package(pkg)
	c := p.Current
	if p.Inst != nil || c.Epoch == 0 || c.Node != h.node || c.Released || c.Halt != nil || len(p.Prior) == 0 {
		return
	}
	e := h.w.stamp(events.Event{Source: st.Source(), Subject: pkg, CauseID: p.ReadyID,
		Data: events.PackageStarting{Node: h.node, Epoch: c.Epoch}}, h.clock())
	_, _ = h.w.appendEvent(h.who(), e, &Expect{Filter: events.PackageFilter(pkg), Seq: st.PackageSeq(pkg)})
}

// lease keeps the node's lease: renew every RenewEvery; fence (stop the
// guests at once) when no renewal succeeded for FenceAfter; take it again
// when the store answers.
func (h *host) lease(now time.Time) {
	w := h.w
	val := []byte(h.node)
	if !h.held {
		if !w.reach(h.who()) {
			return
		}
		h.leaseRev = w.leases.Put(h.node, val)
		h.held, h.lastRenew = true, now
		h.loop.Renewed(now)
		h.loop.LeaseTaken(stepCtx, now)
		if w.opt.Mutation == MutationSkipLeaseRecord {
			h.loop.Member().Observe(hostmanager.Observation{Kind: hostmanager.ObserveLeaseRecorded, At: now})
		}
		return
	}
	reason := ""
	if now.Sub(h.lastRenew) >= lease.RenewEvery(nodeTimeout) && w.reach(h.who()) {
		rev, err := w.leases.Update(h.node, val, h.leaseRev)
		switch {
		case err == nil:
			h.leaseRev, h.lastRenew = rev, now
			h.loop.Renewed(now)
		case errors.Is(err, ErrWrongLastSeq):
			reason = "lease expired or taken"
		}
	}
	if reason == "" && now.Sub(h.lastRenew) >= lease.FenceAfter(nodeTimeout) {
		reason = "lease not renewed in time"
	}
	if reason == "" {
		return
	}
	h.held = false
	if !h.loop.Member().FrozenAt(now) {
		w.stopGuests(h.node)
	}
	h.loop.LeaseLost(stepCtx, reason, now)
	w.trace("%s fenced itself: %s", h.node, reason)
}

// hostLog is the loop's Appender: the world's log, through the node's link
// to it (partitions, outages, lost requests and replies).
type hostLog struct{ h *host }

func (l hostLog) Append(_ context.Context, e events.Event, opts ...events.AppendOption) (uint64, error) {
	h := l.h
	return h.w.appendEvent(h.who(), h.w.stamp(e, h.clock()), expectIn(opts))
}

// hostPerformer is the loop's Performer: the guest drivers and agents of
// the node, at simulated delays. A crash or pause between the effect and
// its event leaves the effect without its event, which the next instance
// repairs by acting again.
type hostPerformer struct{ h *host }

func (p hostPerformer) Start(ctx context.Context, key string, a hostmanager.Action) {
	h := p.h
	w := h.w
	finish := func(pid int, err error) {
		if ctx.Err() != nil {
			pid, err = 0, context.Canceled
		}
		h.loop.Finished(stepCtx, key, a, pid, err)
	}
	// fact appends the action's result as the actuator does, retrying
	// every second while the action lives, then reports its end.
	fact := func(e events.Event) {
		e = w.stamp(e, h.clock())
		var try func()
		try = func() {
			if ctx.Err() != nil {
				finish(0, context.Canceled)
				return
			}
			if _, err := w.appendEvent(h.who(), e, nil); err != nil {
				h.run(time.Second, try)
				return
			}
			finish(0, nil)
		}
		h.run(w.dur(time.Millisecond, 50*time.Millisecond), try)
	}
	// live runs fn after d unless the loop ended the action by then.
	live := func(d time.Duration, fn func()) {
		h.run(d, func() {
			if ctx.Err() != nil {
				finish(0, context.Canceled)
				return
			}
			fn()
		})
	}
	// agent sends a request to the guest's agent after d, over the
	// node's link, and reports its answer.
	agent := func(d time.Duration, req func() (int, error)) {
		live(d, func() {
			if !w.reach(h.who()) {
				finish(0, ErrUnavailable)
				return
			}
			finish(req())
		})
	}
	switch a.Kind {
	case hostmanager.StartGuest:
		live(w.dur(100*time.Millisecond, 3*time.Second), func() {
			w.startGuest(a.Package, h.node, a.Epoch)
			fact(a.GuestStarted())
		})
	case hostmanager.StopGuest:
		live(w.dur(50*time.Millisecond, 1500*time.Millisecond), func() {
			w.stopGuest(a.Package, h.node)
			fact(a.GuestStopped(a.Reason))
		})
	case hostmanager.RunService:
		agent(w.dur(10*time.Millisecond, 300*time.Millisecond), func() (int, error) { return w.agentRun(h.node, a) })
	case hostmanager.StopService:
		agent(w.dur(10*time.Millisecond, 500*time.Millisecond), func() (int, error) { return 0, w.agentStop(h.node, a) })
	case hostmanager.MigrateGuest:
		// The simulated guests cannot migrate (the configuration asks for
		// no migration); the actuator reports the failure.
		fact(a.GuestMigrationFailed("cannot migrate"))
	}
}
