package sim

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/vmguard/vmguard/events"
	"github.com/vmguard/vmguard/failover"
	"github.com/vmguard/vmguard/internal/lease"
)

// controller is one failover controller: the real loop of failover.Runner
// (failover.NewLoop: Decide per event, Reconcile and Expired at their
// ticks, the lease checks with liveness and the lease.Judge, the catch-up
// before deciding, the pending and linked-in-flight guards, the
// node-current check, the markers, atomic batches and their one-by-one
// retry) over the simulated log, lease store and clock. What stays a model
// here: the election (a leader key with TTL, renewed every
// ElectionRenewEvery, whose outcome the loop gets as LeadChanged), the
// follower (events handed to the loop each tick, as the world's read shows
// them) and the prober (a probe key written each ProbeEvery while the
// store answers, fed to a lease.Judge).
type controller struct {
	w       *world
	name    string
	skew    time.Duration
	whoName string

	up          bool
	gen         int
	pausedUntil time.Time
	// pauseNext makes the next append wait out a pause after the loop's
	// checks (a GC pause, a descheduled thread): it and every append of the
	// same step go out when the process runs again, whatever happened
	// meanwhile.
	pauseNext time.Duration

	loop   *failover.Loop
	cursor uint64

	leader     bool
	rev        uint64
	renewed    time.Time
	validUntil time.Time

	judge     lease.Judge
	lastProbe time.Time
	lastCheck time.Time
	lastRecon time.Time
	seen      map[string]seenLease // by node (ctlLeases.Get)
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
	c.cursor = 0
	c.leader = false
	c.judge = lease.Judge{TTL: nodeTimeout}
	c.seen = map[string]seenLease{}
	c.lastProbe, c.lastCheck, c.lastRecon = time.Time{}, time.Time{}, time.Time{}
	loop, err := failover.NewLoop(failover.LoopConfig{
		ID: c.name, Log: ctlLog{c}, Leases: ctlLeases{c}, Prober: ctlProber{c},
		Now: c.clock, Clock: c.w.clock,
	})
	if err != nil {
		panic(fmt.Sprintf("sim: %v", err))
	}
	c.loop = loop
	gen := c.gen
	c.w.every(ctlTick, func() bool { return c.up && c.gen == gen }, c.tick)
}

// isUp reports whether the controller runs.
func (c *controller) isUp() bool { return c.up }

func (c *controller) crash() {
	c.up = false
	c.gen++
}

// stepCtx is the context of the loop's steps: nothing in the simulation
// cancels them.
var stepCtx = context.Background()

func (c *controller) tick() {
	w := c.w
	if w.now().Before(c.pausedUntil) {
		return
	}
	now := c.clock()
	if c.leader && !now.Before(c.validUntil) {
		c.leader = false
		c.loop.LeadChanged(stepCtx, false)
		w.trace("%s lost leadership", c.name)
	}
	if !w.reach(c.who()) {
		return
	}
	c.elect(now)
	if mono := w.now(); mono.Sub(c.lastProbe) >= lease.ProbeEvery(nodeTimeout) {
		c.lastProbe = mono
		w.leases.Put(lease.ProbeKey(c.name), []byte(c.name))
		c.judge.Probed(mono, mono, true)
	}
	for _, e := range w.read(c.cursor) {
		c.cursor = e.Seq
		c.loop.Handle(stepCtx, e)
	}
	c.loop.Drained(stepCtx)
	if now.Sub(c.lastRecon) >= failover.DefaultReconcileInterval {
		c.lastRecon = now
		c.loop.ReconcileTick(stepCtx)
	}
	if now.Sub(c.lastCheck) >= failover.DefaultCheckInterval {
		c.lastCheck = now
		c.loop.CheckTick(stepCtx)
	}
}

// elect takes or renews the leader key, and tells the loop when
// leadership begins or ends.
func (c *controller) elect(now time.Time) {
	w := c.w
	val := []byte(c.name)
	if c.leader {
		if now.Sub(c.renewed) < lease.ElectionRenewEvery(electionTTL) {
			return
		}
		rev, err := w.election.Update("leader", val, c.rev)
		if err != nil {
			c.leader = false
			c.loop.LeadChanged(stepCtx, false)
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
	c.leader = true
	c.rev, c.renewed, c.validUntil = rev, now, now.Add(electionTTL)
	w.trace("%s leads", c.name)
	c.loop.LeadChanged(stepCtx, true)
}

// errPaused answers an append the controller paused before: it goes out
// when the pause ends, and the loop does not learn how it went (an unknown
// outcome, as after a lost reply).
var errPaused = errors.New("controller paused before the append")

// deferred reports whether an append now waits out a pause (starting the
// one pauseNext asks for).
func (c *controller) deferred() bool {
	if p := c.pauseNext; p > 0 {
		c.pauseNext = 0
		c.pausedUntil = c.w.now().Add(p)
	}
	return c.w.now().Before(c.pausedUntil)
}

// later runs append when the controller's pause ends, if it has not
// crashed meanwhile.
func (c *controller) later(append func()) {
	gen := c.gen
	c.w.at(c.pausedUntil, func() {
		if c.up && c.gen == gen {
			append()
		}
	})
}

// own gives a decision of the loop the world's deterministic id (the loop
// draws random ones) and keeps the loop's time.
func (c *controller) own(e events.Event) events.Event {
	e.ID = ""
	return c.w.stamp(e, e.Time)
}

// expectIn returns the expected-sequence check among an append's options
// (nil: none).
func expectIn(opts []events.AppendOption) *Expect {
	for _, o := range opts {
		if x, ok := o.(events.Expect); ok {
			return &Expect{Filter: x.Subject, Seq: x.Seq}
		}
	}
	return nil
}

// ctlLog is the loop's failover.DecisionLog: the world's log, through the
// controller's link to it (partitions, outages, lost requests and replies)
// and its pauses.
type ctlLog struct{ c *controller }

func (l ctlLog) Append(_ context.Context, e events.Event, opts ...events.AppendOption) (uint64, error) {
	c := l.c
	e, exp := c.own(e), expectIn(opts)
	if c.deferred() {
		c.later(func() { _, _ = c.w.appendEvent(c.who(), e, exp) })
		return 0, errPaused
	}
	return c.w.appendEvent(c.who(), e, exp)
}

func (l ctlLog) AppendBatch(_ context.Context, items ...events.BatchItem) ([]uint64, error) {
	c := l.c
	var evs []events.Event
	var exps []*Expect
	var at []int // index in items of each of evs
	for i, it := range items {
		if _, marker := it.Event.Data.(events.PackageChecked); marker && c.w.opt.Mutation == MutationNoMarkers {
			continue
		}
		evs, exps, at = append(evs, c.own(it.Event)), append(exps, expectIn(it.Opts)), append(at, i)
	}
	if c.deferred() {
		c.later(func() { _, _ = c.w.appendBatch(c.who(), evs, exps) })
		return nil, errPaused
	}
	got, err := c.w.appendBatch(c.who(), evs, exps)
	if err != nil {
		return nil, err
	}
	seqs := make([]uint64, len(items)) // 0 for a marker the mutation left out
	for j, i := range at {
		seqs[i] = got[j]
	}
	return seqs, nil
}

func (l ctlLog) Tail(_ context.Context, subject string) (events.SubjectTail, error) {
	if !l.c.w.reach(l.c.who()) {
		return events.SubjectTail{}, ErrUnavailable
	}
	return events.SubjectTail{Seq: l.c.w.log.LastSeqOn(subject)}, nil
}

func (l ctlLog) LastSeq(context.Context) (uint64, error) {
	if !l.c.w.reach(l.c.who()) {
		return 0, ErrUnavailable
	}
	return l.c.w.log.LastSeq(), nil
}

// ctlLeases is the loop's failover.LeaseStore: the world's lease bucket. A
// lease found reads as renewed when the controller first read its revision
// (the simulated hosts write their node's name, not a lease.Value; none is
// ever frozen).
type ctlLeases struct{ c *controller }

func (s ctlLeases) Open(context.Context, time.Duration) (bool, error) {
	if !s.c.w.reach(s.c.who()) {
		return false, ErrUnavailable
	}
	return true, nil
}

func (s ctlLeases) Get(_ context.Context, node string) ([]byte, bool, error) {
	c := s.c
	if c.w.opt.Mutation == MutationUpOnlyLeases && !c.loop.State().Node(node).Up() {
		// The planted bug: a node that is not up is never found lapsed.
		return nil, true, nil
	}
	if !c.w.reach(c.who()) {
		return nil, false, ErrUnavailable
	}
	e, err := c.w.leases.Get(node)
	if err != nil {
		return nil, false, nil
	}
	// A lease reads as renewed when the controller first reads its
	// revision: encoded once per renewal, not per read.
	if l, ok := c.seen[node]; ok && l.rev == e.Revision {
		return l.raw, true, nil
	}
	raw := lease.Value{Node: node, Renewed: c.clock()}.Encode()
	c.seen[node] = seenLease{rev: e.Revision, raw: raw}
	return raw, true, nil
}

// seenLease is a lease revision the controller read, as it encoded it.
type seenLease struct {
	rev uint64
	raw []byte
}

func (s ctlLeases) GetAtLeader(_ context.Context, node string) (lease.Value, bool, error) {
	c := s.c
	if !c.w.reach(c.who()) {
		return lease.Value{}, false, ErrUnavailable
	}
	if _, err := c.w.leases.Get(node); err != nil {
		return lease.Value{}, false, nil
	}
	return lease.Value{Node: node, Renewed: c.clock()}, true, nil
}

// ctlProber is the loop's failover.StoreProber: the controller's
// lease.Judge, fed by the probes of tick.
type ctlProber struct{ c *controller }

func (p ctlProber) Run(context.Context)      {}
func (p ctlProber) SetTTL(ttl time.Duration) { p.c.judge.TTL = ttl }
func (p ctlProber) Decide(now time.Time) (lease.Verdict, time.Time) {
	return p.c.judge.Decide(now), p.c.judge.WritableSince(now)
}

// expectOf is the expected-sequence check of decision e on state st: its
// node's or its package's last sequence (the operator's commands).
func expectOf(st *failover.State, e events.Event) *Expect {
	if sc, err := events.ScopeOf(e.Type()); err == nil && sc == events.ScopeNode {
		return &Expect{Filter: events.NodeFilter(e.Subject), Seq: st.NodeSeq(e.Subject)}
	}
	return &Expect{Filter: events.PackageFilter(e.Subject), Seq: st.PackageSeq(e.Subject)}
}
