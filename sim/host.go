package sim

import (
	"errors"
	"fmt"
	"time"

	"github.com/vmguard/vmguard/events"
	"github.com/vmguard/vmguard/hostmanager"
	"github.com/vmguard/vmguard/internal/lease"
)

// host is the model of one node's host manager runner (hostmanager.Runner)
// around the real pure cores: hostmanager.State, Decide, Pending and
// Member. What it models, not runs: the loop, the lease keeper, the guest
// monitor and the actions (drivers and agent requests), as tasks on the
// simulated clock.
type host struct {
	w       *world
	node    string
	skew    time.Duration
	whoName string
	names   []string

	up          bool
	gen         int // incarnation: tasks of an earlier one do nothing
	actGen      int // actions in flight: a fence cancels them
	pausedUntil time.Time

	st       *hostmanager.State
	mem      *hostmanager.Member
	cursor   uint64
	replayed bool
	dirty    bool
	lastAll  time.Time
	inflight map[string]bool
	watches  map[string]*watch
	// stopSince holds when each StopService was first sent.
	stopSince map[string]time.Time

	held      bool
	leaseRev  uint64
	lastRenew time.Time // node clock: send time of the last renewal that succeeded
}

type watch struct {
	startedID string
	since     time.Time
	beat      time.Time
	lost      bool
}

func (h *host) who() string {
	if h.whoName == "" {
		h.whoName = "node/" + h.node
	}
	return h.whoName
}

// packages returns the state's package names, sorted; cached while their
// number does not change (they come from the config and events).
func (h *host) packages() []string {
	if len(h.names) != len(h.st.Packages) {
		h.names = h.st.PackageNames()
	}
	return h.names
}
func (h *host) clock() time.Time              { return h.w.now().Add(h.skew) }
func (h *host) simTime(t time.Time) time.Time { return t.Add(-h.skew) }

// start starts a fresh host manager process: empty state, replay, lease.
func (h *host) start() {
	h.up = true
	h.gen++
	h.st = hostmanager.NewState(h.node)
	h.mem = hostmanager.NewMember(h.node)
	h.cursor, h.replayed, h.dirty = 0, false, true
	h.inflight, h.watches, h.stopSince = map[string]bool{}, map[string]*watch{}, map[string]time.Time{}
	h.held, h.leaseRev = false, 0
	gen := h.gen
	h.w.every(hostTick, func() bool { return h.up && h.gen == gen }, h.tick)
}

// isUp reports whether the host manager runs.
func (h *host) isUp() bool { return h.up }

// crash ends the process: its state, timers and actions in flight go.
func (h *host) crash() {
	h.up = false
	h.gen++
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
		h.apply(w.evs[h.cursor:])
		h.replayed = true
		if w.opt.Mutation == MutationResetRestarts {
			for _, p := range h.st.Packages {
				if p.Inst != nil {
					for _, sv := range p.Inst.Services {
						sv.Restarts, sv.RestartTimes = 0, nil
					}
				}
			}
		}
		return
	}
	h.lease(now)
	if h.held && !h.mem.Fenced {
		w.guards[h.node].pet(w.now())
	}
	if !w.reach(h.who()) {
		return
	}
	h.apply(w.read(h.cursor))
	h.membership(now)
	if !h.mem.MayAct(now) {
		return
	}
	h.monitor(now)
	if !h.dirty && now.Sub(h.lastAll) < time.Second {
		return
	}
	h.dirty, h.lastAll = false, now
	for _, pkg := range h.packages() {
		h.process(pkg, now)
	}
}

func (h *host) apply(evs []events.Event) {
	for _, e := range evs {
		h.cursor = e.Seq
		if h.st.Apply(e) {
			h.dirty = true
			if h.w.opt.Mutation == MutationStartVoid {
				h.unvoid(e)
			}
		}
		h.mem.Apply(e)
	}
}

// unvoid is the planted bug MutationStartVoid: a placement the fold found
// void (stored after its node's loss) counts as not released.
func (h *host) unvoid(e events.Event) {
	d, ok := e.Data.(events.PackagePlaced)
	if !ok {
		return
	}
	if p := h.st.Package(e.Subject); p != nil && p.Current.Seq == e.Seq && p.Current.Released && h.st.NodeDown[d.Node] < e.Seq {
		p.Current.Released = false
	}
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
		h.mem.Observe(hostmanager.Observation{Kind: hostmanager.ObserveLeaseTaken, At: now})
		if w.opt.Mutation == MutationSkipLeaseRecord {
			h.mem.Observe(hostmanager.Observation{Kind: hostmanager.ObserveLeaseRecorded, At: now})
		}
		return
	}
	reason := ""
	if now.Sub(h.lastRenew) >= lease.RenewEvery(nodeTimeout) && w.reach(h.who()) {
		rev, err := w.leases.Update(h.node, val, h.leaseRev)
		switch {
		case err == nil:
			h.leaseRev, h.lastRenew = rev, now
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
	h.actGen++
	h.inflight = map[string]bool{}
	if !h.mem.FrozenAt(now) {
		w.stopGuests(h.node)
	}
	h.mem.Observe(hostmanager.Observation{Kind: hostmanager.ObserveLeaseLost, Reason: reason, At: now})
	w.trace("%s fenced itself: %s", h.node, reason)
}

// membership appends what the membership core decides (Runner.nodeWork):
// node.fenced, and the record of a lease take (node.joined, or
// node.lease_taken when the log shows the node joined or held out).
func (h *host) membership(now time.Time) {
	w := h.w
	for range 4 {
		switch h.mem.Decide(now) {
		case hostmanager.MemberAppendFenced:
			e := w.stamp(events.Event{Source: h.st.Source(), Subject: h.node,
				Data: events.NodeFenced{Reason: h.mem.FenceReason, Since: h.mem.FenceTime.UTC()}}, now)
			seq, err := w.appendEvent(h.who(), e, nil)
			if err != nil {
				return
			}
			h.mem.Observe(hostmanager.Observation{Kind: hostmanager.ObserveFenceAppended, Seq: seq})
		case hostmanager.MemberResume:
			h.mem.Observe(hostmanager.Observation{Kind: hostmanager.ObserveResumed})
			h.dirty = true
		case hostmanager.MemberAppendJoined:
			e := w.stamp(events.Event{Source: h.st.Source(), Subject: h.node, Data: events.NodeJoined{}}, now)
			seq, err := w.appendEvent(h.who(), e, &Expect{Filter: events.NodeFilter(h.node), Seq: h.st.NodeSeqs[h.node]})
			if err != nil {
				return
			}
			h.mem.Observe(hostmanager.Observation{Kind: hostmanager.ObserveJoinAppended, Seq: seq})
			h.dirty = true
		case hostmanager.MemberAppendLeaseTaken:
			// The lease take's record (Runner.recordNode): until the log
			// stores it, guarded by the node's last sequence, nothing is
			// acted on; a conflict waits for the node event to be read.
			e := w.stamp(events.Event{Source: h.st.Source(), Subject: h.node,
				Data: events.NodeLeaseTaken{Holder: fmt.Sprintf("%s/%d", h.who(), h.gen)}}, now)
			seq, err := w.appendEvent(h.who(), e, &Expect{Filter: events.NodeFilter(h.node), Seq: h.st.NodeSeqs[h.node]})
			if err != nil {
				return
			}
			h.mem.Observe(hostmanager.Observation{Kind: hostmanager.ObserveLeaseRecorded, Seq: seq})
			h.dirty = true
		default:
			return
		}
	}
}

// decide appends a decision about pkg as the runner does: stamped, with
// the expected sequence of the package's subjects, then applied at once.
func (h *host) decide(pkg string, d events.Event, now time.Time) bool {
	w := h.w
	d = w.stamp(d, now)
	seq, err := w.appendEvent(h.who(), d, &Expect{Filter: events.PackageFilter(pkg), Seq: h.st.PackageSeq(pkg)})
	if err != nil {
		return false
	}
	d.Seq = seq
	h.st.Apply(d)
	return true
}

// process decides about pkg until nothing is due, then starts its pending
// actions.
func (h *host) process(pkg string, now time.Time) {
	for range 64 {
		d, ok := hostmanager.Decide(h.st, pkg)
		if !ok && h.w.opt.Mutation == MutationSkipRelease {
			d, ok = h.startEarly(pkg)
		}
		if !ok || !h.decide(pkg, d, now) {
			break
		}
	}
	for _, a := range hostmanager.Pending(h.st, pkg) {
		if h.inflight[a.Key()] {
			continue
		}
		if (a.Kind == hostmanager.StopService || a.Kind == hostmanager.StopGuest) && a.NotBefore.After(now) {
			// A failing package's stops wait for its dependents to halt
			// (the runner arms a timer; here the next pass, at most a
			// second later, or the dependent's event, looks again).
			continue
		}
		if guestAction(a.Kind) {
			// A package's guest actions run one at a time, in order.
			if h.inflight["guest/"+pkg] {
				continue
			}
			h.inflight["guest/"+pkg] = true
		}
		h.act(a)
	}
}

// startEarly is the planted bug MutationSkipRelease: a package.starting for
// the current placement on this node while an older one is not released.
func (h *host) startEarly(pkg string) (events.Event, bool) {
	p := h.st.Package(pkg)
	c := p.Current
	if p.Inst != nil || c.Epoch == 0 || c.Node != h.node || c.Released || c.Halt != nil || len(p.Prior) == 0 {
		return events.Event{}, false
	}
	return events.Event{Source: h.st.Source(), Subject: pkg, CauseID: p.ReadyID,
		Data: events.PackageStarting{Node: h.node, Epoch: c.Epoch}}, true
}

// monitor appends guest.lost, once per guest start, for a guest of this
// node whose agent sent no heartbeat for guest_timeout.
func (h *host) monitor(now time.Time) {
	w := h.w
	for _, name := range h.packages() {
		in := h.st.Package(name).Inst
		if in == nil || in.Guest.Phase != hostmanager.GuestUp {
			delete(h.watches, name)
			continue
		}
		wt := h.watches[name]
		if wt == nil || wt.startedID != in.Guest.StartedID {
			wt = &watch{startedID: in.Guest.StartedID, since: now}
			h.watches[name] = wt
		}
		if g := w.guests[guestKey(name, h.node)]; g != nil && g.up {
			wt.beat = now
		}
		if wt.lost || now.Sub(later(wt.beat, wt.since)) <= guestTimeout {
			continue
		}
		d := events.Event{Source: h.st.Source(), Subject: name, CauseID: in.Guest.StartedID,
			Data: events.GuestLost{Guest: in.Config.Guest.Name, Node: h.node, Epoch: in.Epoch, LastHeartbeat: wt.beat.UTC()}}
		if h.decide(name, d, now) {
			wt.lost, h.dirty = true, true
		}
	}
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

func guestAction(k hostmanager.ActionKind) bool {
	return k == hostmanager.StartGuest || k == hostmanager.StopGuest || k == hostmanager.MigrateGuest
}

// act performs an action: the driver's or agent's part after a delay, the
// result event after another (a crash in between leaves the effect without
// its event, which the next instance repairs by acting again).
//
// Longer than 80 lines: one case per action kind, as the host manager's
// runner performs them, with the simulated delays and crashes between
// effect and event.
func (h *host) act(a hostmanager.Action) {
	w := h.w
	key, gen, actGen := a.Key(), h.gen, h.actGen
	h.inflight[key] = true
	alive := func() bool { return h.up && h.gen == gen && h.actGen == actGen }
	done := func() {
		if alive() {
			delete(h.inflight, key)
			if guestAction(a.Kind) {
				delete(h.inflight, "guest/"+a.Package)
			}
			h.dirty = true
		}
	}
	switch a.Kind {
	case hostmanager.StartGuest:
		w.after(w.dur(100*time.Millisecond, 3*time.Second), func() {
			if !alive() {
				return
			}
			w.startGuest(a.Package, h.node, a.Epoch)
			w.after(w.dur(time.Millisecond, 50*time.Millisecond), func() {
				if alive() {
					w.appendEvent(h.who(), w.stamp(a.GuestStarted(), h.clock()), nil)
				}
				done()
			})
		})
	case hostmanager.StopGuest:
		w.after(w.dur(50*time.Millisecond, 1500*time.Millisecond), func() {
			if !alive() {
				return
			}
			w.stopGuest(a.Package, h.node)
			w.after(w.dur(time.Millisecond, 50*time.Millisecond), func() {
				if alive() {
					w.appendEvent(h.who(), w.stamp(a.GuestStopped(a.Reason), h.clock()), nil)
				}
				done()
			})
		})
	case hostmanager.RunService:
		at := w.now().Add(w.dur(10*time.Millisecond, 300*time.Millisecond))
		if nb := h.simTime(a.NotBefore); nb.After(at) {
			at = nb
		}
		w.at(at, func() {
			if alive() {
				w.agentRun(h.node, a)
			}
			w.after(time.Second, done) // the agent's reply, or its timeout
		})
	case hostmanager.StopService:
		since, ok := h.stopSince[key]
		if !ok {
			since = h.clock()
			h.stopSince[key] = since
		}
		halt := a.Service.HaltTimeout.D()
		if h.clock().Sub(since) >= halt+hostmanager.StopGrace {
			// The ladder of DESIGN §8: no process.exited in time (a process
			// the agent does not know, a dead agent): the guest is forced off.
			reason := fmt.Sprintf("process %d of service %s (request id %s) did not end within halt_timeout %s + %s; guest forced off",
				a.PID, a.Service.Name, a.RequestID, halt, hostmanager.StopGrace)
			if h.inflight["guest/"+a.Package] {
				delete(h.inflight, key) // a guest action is under way: later
				return
			}
			h.inflight["guest/"+a.Package] = true
			w.after(w.dur(50*time.Millisecond, 500*time.Millisecond), func() {
				if !alive() {
					return
				}
				w.stopGuest(a.Package, h.node)
				w.appendEvent(h.who(), w.stamp(a.GuestStopped(events.Clip(reason, events.MaxReason)), h.clock()), nil)
				delete(h.inflight, "guest/"+a.Package)
				done()
			})
			return
		}
		w.after(w.dur(10*time.Millisecond, 500*time.Millisecond), func() {
			if alive() {
				w.agentStop(h.node, a)
			}
			w.after(time.Second, done)
		})
	case hostmanager.MigrateGuest:
		// The simulated guests cannot migrate (the configuration asks for
		// no migration); the runner would report the failure.
		w.after(100*time.Millisecond, func() {
			if alive() {
				w.appendEvent(h.who(), w.stamp(a.GuestMigrationFailed("cannot migrate"), h.clock()), nil)
			}
			done()
		})
	}
}
