package sim

import (
	"errors"
	"time"

	"github.com/vmguard/vmguard/events"
	"github.com/vmguard/vmguard/failover"
	"github.com/vmguard/vmguard/internal/lease"
)

// controller is the model of one failover controller runner
// (failover.Runner) around the real pure core: failover.State, Decide,
// Reconcile, Expired and NodeState.MayDeclareLost, and the real lease.Judge.
// What it models: the election (a leader key with TTL, renewed every
// ElectionRenewEvery), the catch-up before deciding, the pending guard per
// package, the node-current check before a placement, the lease checks and
// the prober.
type controller struct {
	w       *world
	name    string
	skew    time.Duration
	whoName string

	up          bool
	gen         int
	pausedUntil time.Time
	// pauseNext makes the next decision wait out a pause between the
	// leadership check and its append (a GC pause, a descheduled thread).
	pauseNext time.Duration

	st      *failover.State
	cursor  uint64
	pending map[string]uint64
	// unsure: the runner's packages whose last append had an unknown
	// outcome (Runner.unsure).
	unsure map[string]unsure

	leader     bool
	ready      bool
	catchUpTo  uint64
	rev        uint64
	renewed    time.Time
	validUntil time.Time

	judge     lease.Judge
	lastProbe time.Time
	lastCheck time.Time
	lastRecon time.Time
	armed     map[string]time.Time
}

func (c *controller) who() string {
	if c.whoName == "" {
		c.whoName = "ctl/" + c.name
	}
	return c.whoName
}
func (c *controller) clock() time.Time { return c.w.now().Add(c.skew) }

func (c *controller) start() {
	c.up = true
	c.gen++
	c.st = &failover.State{}
	c.cursor = 0
	c.pending = map[string]uint64{}
	c.unsure = map[string]unsure{}
	c.leader, c.ready = false, false
	c.judge = lease.Judge{TTL: nodeTimeout}
	c.armed = map[string]time.Time{}
	gen := c.gen
	c.w.every(ctlTick, func() bool { return c.up && c.gen == gen }, c.tick)
}

// isUp reports whether the controller runs.
func (c *controller) isUp() bool { return c.up }

func (c *controller) crash() {
	c.up = false
	c.gen++
}

func (c *controller) deciding() bool {
	return c.leader && c.ready && c.clock().Before(c.validUntil)
}

func (c *controller) tick() {
	w := c.w
	if w.now().Before(c.pausedUntil) {
		return
	}
	now := c.clock()
	if c.leader && !now.Before(c.validUntil) {
		c.leader, c.ready = false, false
		w.trace("%s lost leadership", c.name)
	}
	if !w.reach(c.who()) {
		return
	}
	c.elect(now)
	if now.Sub(c.lastProbe) >= lease.ProbeEvery(nodeTimeout) {
		c.lastProbe = now
		w.leases.Put(lease.ProbeKey(c.name), []byte(c.name))
		c.judge.Probed(now, now, true)
	}
	for _, e := range w.read(c.cursor) {
		c.cursor = e.Seq
		if !c.st.Apply(e) {
			continue
		}
		for k, seq := range c.pending {
			if seq <= c.st.Seq {
				delete(c.pending, k)
			}
		}
		if _, marker := e.Data.(events.PackageChecked); !marker && c.ready && c.deciding() {
			c.emit(failover.Decide(c.st, e))
		}
	}
	if c.leader && !c.ready && c.st.Seq >= c.catchUpTo {
		c.ready = true
		c.emit(failover.Reconcile(c.st))
	}
	if !c.deciding() {
		return
	}
	if now.Sub(c.lastRecon) >= time.Second {
		c.lastRecon = now
		c.emit(failover.Reconcile(c.st))
		c.emit(failover.Expired(c.st, now))
	}
	if now.Sub(c.lastCheck) >= 250*time.Millisecond {
		c.lastCheck = now
		c.checkLeases(now)
	}
}

// elect takes or renews the leader key.
func (c *controller) elect(now time.Time) {
	w := c.w
	val := []byte(c.name)
	if c.leader {
		if now.Sub(c.renewed) < lease.ElectionRenewEvery(electionTTL) {
			return
		}
		rev, err := w.election.Update("leader", val, c.rev)
		if err != nil {
			c.leader, c.ready = false, false
			return
		}
		c.rev, c.renewed, c.validUntil = rev, now, now.Add(electionTTL)
		return
	}
	if _, err := w.election.Get("leader"); !errors.Is(err, ErrNotFound) {
		return
	}
	rev, err := w.election.Create("leader", val)
	if err != nil {
		return
	}
	c.leader, c.ready, c.catchUpTo = true, false, w.log.LastSeq()
	c.rev, c.renewed, c.validUntil = rev, now, now.Add(electionTTL)
	w.trace("%s leads", c.name)
}

// checkLeases records node.lost for an up node (or one an operator
// halted: NodeState.LeaseWatched) whose lease is gone, when the Judge says
// the store has been writable for a TTL.
func (c *controller) checkLeases(now time.Time) {
	w := c.w
	var lost []events.Event
	for _, name := range w.cfg.Nodes {
		n := c.st.Node(name)
		if !n.LeaseWatched() || c.w.opt.Mutation == MutationUpOnlyLeases && !n.Up() {
			continue
		}
		if _, err := w.leases.Get(name); err == nil {
			c.armed[name] = now
			continue
		}
		if c.judge.Decide(now) != lease.Lost || !n.MayDeclareLost(now, nodeTimeout, c.armed[name]) {
			continue
		}
		lost = append(lost, events.Event{Source: failover.Source, Subject: name, Data: events.NodeLost{Reason: "lease_expired"}})
	}
	c.emit(lost)
}

func expectOf(st *failover.State, e events.Event) *Expect {
	if sc, err := events.ScopeOf(e.Type()); err == nil && sc == events.ScopeNode {
		return &Expect{Filter: events.NodeFilter(e.Subject), Seq: st.NodeSeq(e.Subject)}
	}
	return &Expect{Filter: events.PackageFilter(e.Subject), Seq: st.PackageSeq(e.Subject)}
}

func pendingKey(e events.Event) string {
	if sc, err := events.ScopeOf(e.Type()); err == nil && sc == events.ScopeNode {
		return "node." + e.Subject
	}
	return "pkg." + e.Subject
}

// emit appends decisions as failover.Runner.emit does, one at a time.
func (c *controller) emit(evs []events.Event) {
	w := c.w
	for _, e := range evs {
		if !c.deciding() {
			return
		}
		key := pendingKey(e)
		if c.pending[key] > c.st.Seq || c.linkedInFlight(e) {
			continue
		}
		if d, ok := e.Data.(events.PackagePlaced); ok && w.log.LastSeqOn(events.NodeFilter(d.Node)) != c.st.NodeSeq(d.Node) {
			continue // its node moved on: decide again once that is read
		}
		e = w.stamp(e, c.clock())
		evs, exps := c.guarded(e)
		if p := c.pauseNext; p > 0 {
			// Paused after the checks, before the append: the decision goes
			// out when the process runs again, whatever happened meanwhile.
			c.pauseNext = 0
			c.pausedUntil = w.now().Add(p)
			gen := c.gen
			w.after(p, func() {
				if c.up && c.gen == gen {
					c.appended(evs, exps, key)
				}
			})
			return
		}
		c.appended(evs, exps, key)
	}
}

// unsure is a decision whose append's outcome is unknown.
type unsure struct {
	seq   uint64
	until time.Time
}

// guarded returns the events that append decision e, each with its guard,
// as failover.Runner.guarded does for a decision alone: for a placement, a
// package.checked marker on each package linked to it, guarded by that
// package's sequence as the state saw it, then e.
func (c *controller) guarded(e events.Event) ([]events.Event, []*Expect) {
	var evs []events.Event
	var exps []*Expect
	if _, ok := e.Data.(events.PackagePlaced); ok && c.st.Config != nil && c.w.opt.Mutation != MutationNoMarkers {
		for _, q := range failover.Linked(c.st.Config, e.Subject) {
			m := c.w.stamp(events.Event{Source: failover.Source, Subject: q, CauseID: e.CauseID,
				Data: events.PackageChecked{For: e.Subject, Seq: c.st.PackageSeq(q)}}, e.Time)
			evs, exps = append(evs, m), append(exps, expectOf(c.st, m))
		}
	}
	return append(evs, e), append(exps, expectOf(c.st, e))
}

// appended appends decision e (the last of evs, after its markers: one
// atomic batch) and records it as in flight, its markers as in flight on
// their packages, or, when the outcome is unknown (an error, not a
// conflict), the decision as unsure, as the runner does.
func (c *controller) appended(evs []events.Event, exps []*Expect, key string) {
	e := evs[len(evs)-1]
	var seq uint64
	var err error
	if len(evs) == 1 {
		seq, err = c.w.appendEvent(c.who(), e, exps[0])
	} else {
		var seqs []uint64
		if seqs, err = c.w.appendBatch(c.who(), evs, exps); err == nil {
			seq = seqs[len(seqs)-1]
			for i, m := range evs[:len(evs)-1] {
				c.pending["pkg."+m.Subject] = seqs[i]
			}
		}
	}
	switch {
	case err == nil:
		c.pending[key] = seq
	case !errors.Is(err, events.ErrConflict) && key == "pkg."+e.Subject:
		c.unsure[e.Subject] = unsure{seq: c.st.PackageSeq(e.Subject), until: c.w.now().Add(unsureFor)}
	}
}

// unsureFor is the runner's bound on an unsure append (2 x its append
// timeout).
const unsureFor = 10 * time.Second

// linkedInFlight is the runner's rule: a decision about a package waits
// while one about a package linked to it by a dependency is on its way
// back.
func (c *controller) linkedInFlight(e events.Event) bool {
	if c.st.Config == nil {
		return false
	}
	for _, q := range failover.Linked(c.st.Config, e.Subject) {
		if c.pending["pkg."+q] > c.st.Seq {
			return true
		}
		if u, ok := c.unsure[q]; ok {
			if c.st.PackageSeq(q) <= u.seq && c.w.now().Before(u.until) {
				return true
			}
			delete(c.unsure, q)
		}
	}
	return false
}
