package sim

import (
	"container/heap"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"math/rand/v2"
	"slices"
	"strings"
	"time"

	"github.com/vmguard/vmguard/config"
	"github.com/vmguard/vmguard/events"
	"github.com/vmguard/vmguard/failover"
	"github.com/vmguard/vmguard/internal/invariant"
)

// Mutation is a bug planted in the simulator's models around the real
// runner loops (sim/host.go, sim/controller.go), or in what those loops
// expose to them (Loop.State, Loop.Member), to prove
// that the simulator finds such bugs (the mutation tests). Production code
// has no switch for any of them.
type Mutation string

// The planted bugs.
const (
	// MutationNone: no planted bug.
	MutationNone Mutation = ""
	// MutationSkipExpect: decisions (host managers' and controllers') are
	// appended without the expected-last-subject-sequence check.
	MutationSkipExpect Mutation = "skip_expect"
	// MutationSkipRelease: a host manager starts a placement on its node
	// without waiting until every older placement is released.
	MutationSkipRelease Mutation = "skip_release"
	// MutationResetRestarts: a host manager that starts again resets the
	// restart counters it folded from the log once its replay is done.
	MutationResetRestarts Mutation = "reset_restarts"
	// MutationSkipLeaseRecord undoes the fix of act_before_loss and
	// stale_loss: a host manager acts as soon as it holds its lease, without
	// recording the take first.
	MutationSkipLeaseRecord Mutation = "skip_lease_record"
	// MutationStartVoid undoes the fix of place_on_lost_node: a host
	// manager counts a placement stored after its node's loss as any other.
	MutationStartVoid Mutation = "start_void"
	// MutationUpOnlyLeases undoes the fix of halt_on_halted_node: the
	// controller watches the leases of up nodes only.
	MutationUpOnlyLeases Mutation = "up_only_leases"
	// MutationNoMarkers undoes the fix of deposed_placement: the controller
	// appends a placement without the guarded package.checked markers on
	// the packages linked to it.
	MutationNoMarkers Mutation = "no_markers"
)

// Mutations lists the planted bugs the simulator finds within a bounded
// number of seeds (TestMutations).
var Mutations = []Mutation{MutationSkipExpect, MutationSkipRelease, MutationResetRestarts}

// FixMutations lists the planted bugs that undo a fix of a finding; each
// makes a seed that showed the finding break a promise again
// (TestFixMutations).
var FixMutations = []Mutation{MutationSkipLeaseRecord, MutationStartVoid, MutationUpOnlyLeases, MutationNoMarkers}

// Options describe one simulated run.
type Options struct {
	// Seed draws everything: the configuration's details, the faults and
	// every delay.
	Seed uint64
	// Nodes, Packages and Controllers size the cluster (defaults 3, 4, 2).
	Nodes, Packages, Controllers int
	// Steps is how many scheduler steps run with faults (default 5000);
	// then the faults stop, everything heals and Quiet of simulated time
	// follows, after which liveness is checked.
	Steps int
	// Quiet is the fault-free time at the end (default 2 minutes).
	Quiet time.Duration
	// FaultEvery is the mean simulated time between two faults (default
	// 2 s).
	FaultEvery time.Duration
	// Dependencies links the first packages by dependencies (pkg2 needs
	// pkg1 up on any node; pkg3, priority 10, and pkg4, priority 20,
	// exclude each other on a node), so that the exclusion promise is
	// checked under faults. Off, the configuration (and every seed's hash)
	// is as before.
	Dependencies bool
	// Mutation plants a bug (see Mutation).
	Mutation Mutation
	// Grace is the slack the invariant check adds to each bound (0:
	// Grace).
	Grace time.Duration
	// KeepGoing runs to the end after a violation (default: stop at the
	// first step that breaks a promise).
	KeepGoing bool
	// Trace, if set, receives one line per fault and per appended event.
	Trace func(string)
	// Skip leaves out these faults of the seed's schedule (by index, as
	// Result.Faults numbers them); the others stay as they were. The
	// shrinker uses it.
	Skip map[int]bool
}

func (o Options) withDefaults() Options {
	if o.Nodes <= 0 {
		o.Nodes = 3
	}
	if o.Packages <= 0 {
		o.Packages = 4
	}
	if o.Controllers <= 0 {
		o.Controllers = 2
	}
	if o.Steps <= 0 {
		o.Steps = 5000
	}
	if o.Quiet <= 0 {
		o.Quiet = 2 * time.Minute
	}
	if o.FaultEvery <= 0 {
		o.FaultEvery = 2 * time.Second
	}
	if o.Grace <= 0 {
		o.Grace = Grace
	}
	return o
}

// Result is what a run found.
type Result struct {
	Seed     uint64
	Mutation Mutation
	// Steps counts the scheduler steps run (faults and quiet).
	Steps int
	// Events counts the events appended; Hash is the SHA-256 of the event
	// sequence (ids, sources, subjects, causes, times and data, in stream
	// order): the same seed gives the same hash.
	Events int
	Hash   string
	// SimTime is the simulated time the run covered.
	SimTime time.Duration
	// Faults lists the faults injected, in order, each with its index in
	// the schedule; Scheduled counts the faults the schedule drew (those
	// skipped and those that found nothing to do included).
	Faults    []string
	Scheduled int
	// Violations are the broken safety promises (internal/invariant) of no
	// known class; Known those of a known one (Finding); Liveness the
	// packages not settled once the faults stopped.
	Violations []invariant.Violation
	Known      []Known
	Liveness   []string
}

// OK reports whether the run kept every promise, but for known findings.
func (r Result) OK() bool { return len(r.Violations) == 0 && len(r.Liveness) == 0 }

// Summary is one line: seed, steps, events, simulated time, hash, outcome.
func (r Result) Summary() string {
	out := "ok"
	if !r.OK() {
		out = fmt.Sprintf("FAIL: %d violations, %d liveness", len(r.Violations), len(r.Liveness))
	}
	if len(r.Known) > 0 {
		out += fmt.Sprintf(" (%d of known findings)", len(r.Known))
	}
	m := ""
	if r.Mutation != MutationNone {
		m = " mutation=" + string(r.Mutation)
	}
	return fmt.Sprintf("seed=%d%s steps=%d events=%d faults=%d sim=%v hash=%s %s",
		r.Seed, m, r.Steps, r.Events, len(r.Faults), r.SimTime.Round(time.Millisecond), r.Hash[:16], out)
}

// Grace is the slack the simulator's invariant check adds to each
// configured bound (invariant.Options.Grace; `vmguard verify` uses 10 s).
// The bounds assume a working control plane: a loss is recorded only by a
// leader that has judged the store writable for a node_timeout, and the
// simulator's faults take the controllers and the store away for up to
// ~10 s each, one after another.
const Grace = 30 * time.Second

// Timings of the simulated cluster.
const (
	nodeTimeout  = 5 * time.Second
	guestTimeout = 5 * time.Second
	electionTTL  = 3 * time.Second
	hostTick     = 100 * time.Millisecond
	ctlTick      = 100 * time.Millisecond
	guardTick    = 100 * time.Millisecond
	agentTick    = 200 * time.Millisecond
)

var epoch0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

type task struct {
	at time.Time
	n  uint64
	fn func()
}

type queue []*task

func (q queue) Len() int { return len(q) }
func (q queue) Less(i, j int) bool {
	if !q[i].at.Equal(q[j].at) {
		return q[i].at.Before(q[j].at)
	}
	return q[i].n < q[j].n
}
func (q queue) Swap(i, j int) { q[i], q[j] = q[j], q[i] }
func (q *queue) Push(x any)   { *q = append(*q, x.(*task)) }
func (q *queue) Pop() any {
	old := *q
	t := old[len(old)-1]
	*q = old[:len(old)-1]
	return t
}

// world is one simulated cluster.
type world struct {
	opt Options
	rng *rand.Rand
	// frng draws the fault schedule alone (see draw).
	frng   *rand.Rand
	nfault int
	clock  *Clock
	q      queue
	qn     uint64

	log      *Log
	evs      []events.Event
	leases   *KV
	election *KV
	cfg      *config.Cluster

	hosts  []*host
	ctls   []*controller
	guests map[string]*guest // by package + "@" + node
	guards map[string]*guard
	spool  map[string][]events.Event // agents' events waiting for the log, by node

	cut         map[string]time.Time // component -> partitioned until
	outageUntil time.Time
	lagUntil    time.Time
	faulting    bool

	check      *invariant.Checker
	violations []invariant.Violation
	known      []Known
	sum        hash.Hash
	ids, pids  int
	steps      int
	faults     []string
	operator   *failover.State
}

func (w *world) now() time.Time { return w.clock.Now() }

// at schedules fn at t (not before now).
func (w *world) at(t time.Time, fn func()) {
	if t.Before(w.now()) {
		t = w.now()
	}
	w.qn++
	heap.Push(&w.q, &task{at: t, n: w.qn, fn: fn})
}

func (w *world) after(d time.Duration, fn func()) { w.at(w.now().Add(d), fn) }

// every runs fn every d from now while alive says so. It reuses one task
// (the simulation's most frequent allocation otherwise).
func (w *world) every(d time.Duration, alive func() bool, fn func()) {
	t := &task{}
	t.fn = func() {
		if !alive() {
			return
		}
		fn()
		w.qn++
		t.at, t.n = w.now().Add(d), w.qn
		heap.Push(&w.q, t)
	}
	w.qn++
	t.at, t.n = w.now().Add(time.Duration(w.rng.Int64N(int64(d)))+1), w.qn
	heap.Push(&w.q, t)
}

func (w *world) dur(lo, hi time.Duration) time.Duration {
	if hi <= lo {
		return lo
	}
	return lo + time.Duration(w.rng.Int64N(int64(hi-lo)))
}

func (w *world) chance(p float64) bool { return w.rng.Float64() < p }

func (w *world) trace(format string, args ...any) {
	if w.opt.Trace != nil {
		w.opt.Trace(fmt.Sprintf("%12v ", w.now().Sub(epoch0).Round(time.Millisecond)) + fmt.Sprintf(format, args...))
	}
}

// reach reports whether component who can reach the log and KV store.
func (w *world) reach(who string) bool {
	now := w.now()
	if now.Before(w.outageUntil) {
		return false
	}
	return !now.Before(w.cut[who])
}

// stamp gives e a deterministic id and the writer's time.
func (w *world) stamp(e events.Event, now time.Time) events.Event {
	if e.ID == "" {
		w.ids++
		e.ID = fmt.Sprintf("ev%06d", w.ids)
	}
	if e.Time.IsZero() {
		e.Time = now.UTC()
	}
	return e
}

var errLost = errors.New("request or ack lost")

// appendBatch appends evs for component who as one atomic batch, each with
// its expected-sequence check (exps[i], nil: none), with the faults of the
// network around the log (a request or an ack lost; a batch sent twice is
// refused as a whole for its repeated ids, so it is not modelled).
func (w *world) appendBatch(who string, evs []events.Event, exps []*Expect) ([]uint64, error) {
	if !w.reach(who) {
		return nil, ErrUnavailable
	}
	lossy := w.faulting && w.now().Before(w.lagUntil)
	if lossy && w.chance(0.1) {
		return nil, errLost
	}
	msgs := make([]Msg, len(evs))
	for i, e := range evs {
		subj, err := events.SubjectOf(e)
		if err != nil {
			return nil, fmt.Errorf("append %s: %w", e.Type(), err)
		}
		msgs[i] = Msg{Subject: subj, ID: e.ID}
	}
	if w.opt.Mutation == MutationSkipExpect {
		exps = make([]*Expect, len(evs))
	}
	seqs, err := w.log.PublishBatch(msgs, exps)
	if errors.Is(err, ErrWrongLastSeq) {
		return nil, fmt.Errorf("append batch of %d: %w", len(evs), events.ErrConflict)
	}
	if err != nil {
		return nil, err
	}
	for i, e := range evs {
		e.Seq = seqs[i]
		w.evs = append(w.evs, e)
		w.stored(e)
	}
	if lossy && w.chance(0.1) {
		return nil, errLost // stored, but the ack never came back
	}
	return seqs, nil
}

// appendEvent appends e for component who with the expected-sequence check
// exp (nil: none), with the faults of the network around the log.
func (w *world) appendEvent(who string, e events.Event, exp *Expect) (uint64, error) {
	if !w.reach(who) {
		return 0, ErrUnavailable
	}
	lossy := w.faulting && w.now().Before(w.lagUntil)
	if lossy && w.chance(0.1) {
		return 0, errLost // the request never arrived
	}
	subj, err := events.SubjectOf(e)
	if err != nil {
		return 0, fmt.Errorf("append %s: %w", e.Type(), err)
	}
	if w.opt.Mutation == MutationSkipExpect {
		exp = nil
	}
	a, err := w.log.Publish(Msg{Subject: subj, ID: e.ID}, exp)
	if errors.Is(err, ErrWrongLastSeq) {
		return 0, fmt.Errorf("append %s: %w", e.Type(), events.ErrConflict)
	}
	if err != nil {
		return 0, err
	}
	if !a.Duplicate {
		e.Seq = a.Seq
		w.evs = append(w.evs, e)
		w.stored(e)
	}
	if lossy && w.chance(0.1) {
		// The request was sent twice: the id dedups it (or the expected
		// sequence refuses it), nothing is stored twice.
		if b, err := w.log.Publish(Msg{Subject: subj, ID: e.ID}, exp); err == nil && !b.Duplicate {
			panic(fmt.Sprintf("sim: a repeated id was stored twice: %s", e.ID))
		}
	}
	if lossy && w.chance(0.1) {
		return 0, errLost // stored, but the ack never came back
	}
	return a.Seq, nil
}

// stored hashes and checks an event the log just stored.
func (w *world) stored(e events.Event) {
	if _, ok := e.Data.(events.NodeLost); ok {
		if _, err := w.leases.Get(e.Subject); err == nil {
			// Judged while the lease was away; its host manager took it
			// again and has not recorded the take yet (that record now
			// conflicts, and the loss is read before anything is decided).
			w.trace("node.lost %s at seq %d while its host holds its lease", e.Subject, e.Seq)
		}
	}
	data, _ := json.Marshal(e.Data)
	fmt.Fprintf(w.sum, "%d|%s|%s|%s|%s|%d|%s|%s\n", e.Seq, e.ID, e.Source, e.Subject, e.CauseID, e.Time.UnixNano(), e.Type(), data)
	for _, v := range w.check.Add(e) {
		if f := known(v); f != "" {
			w.known = append(w.known, Known{Finding: f, Violation: v})
			w.trace("KNOWN %s %s", f, v)
			continue
		}
		w.violations = append(w.violations, v)
		w.trace("VIOLATION %s", v)
	}
	w.trace("#%d %s %s %s %s %+v cause=%s", e.Seq, e.ID, events.ShortType(e.Type()), e.Subject, e.Source, e.Data, e.CauseID)
}

// read returns the events after cursor that component who sees now: with
// read delays on, only those stored a random lag ago.
func (w *world) read(cursor uint64) []events.Event {
	end := len(w.evs)
	if w.faulting && w.now().Before(w.lagUntil) {
		lag := w.dur(0, 1500*time.Millisecond)
		limit := w.now().Add(-lag)
		for end > int(cursor) {
			m, _ := w.log.Get(uint64(end))
			if !m.Time.After(limit) {
				break
			}
			end--
		}
	}
	if int(cursor) >= end {
		return nil
	}
	return w.evs[cursor:end]
}

// Run simulates one cluster with the options' seed and returns what it
// found. It is deterministic: the same options give the same Result.
func Run(opt Options) Result {
	opt = opt.withDefaults()
	w := &world{
		opt:    opt,
		rng:    rand.New(rand.NewPCG(opt.Seed, opt.Seed^0x5eed5eed)),
		frng:   rand.New(rand.NewPCG(opt.Seed^0xfa017fa017, opt.Seed)),
		clock:  NewClock(epoch0),
		guests: map[string]*guest{},
		guards: map[string]*guard{},
		spool:  map[string][]events.Event{},
		cut:    map[string]time.Time{},
		check:  invariant.NewChecker(invariant.Options{Grace: opt.Grace}),
		sum:    sha256.New(),
	}
	w.log = NewLog(w.now, 2*time.Minute)
	w.leases = NewKV(w.now, nodeTimeout)
	w.election = NewKV(w.now, electionTTL)
	w.setup()
	w.faulting = true
	w.scheduleFault()
	stop := func() bool { return !w.opt.KeepGoing && len(w.violations) > 0 }
	for w.steps < opt.Steps && len(w.q) > 0 && !stop() {
		w.step()
	}
	w.faulting = false
	w.heal()
	end := w.now().Add(opt.Quiet)
	for len(w.q) > 0 && !w.q[0].at.After(end) && !stop() {
		w.step()
	}
	if !stop() {
		w.clock.Set(end)
	}
	r := Result{
		Seed: opt.Seed, Mutation: opt.Mutation, Steps: w.steps, Events: len(w.evs),
		Hash: hex.EncodeToString(w.sum.Sum(nil)), SimTime: w.now().Sub(epoch0),
		Faults: w.faults, Scheduled: w.nfault, Violations: w.violations, Known: w.known,
	}
	if !stop() {
		r.Liveness = w.liveness()
	}
	return r
}

func (w *world) step() {
	t := heap.Pop(&w.q).(*task)
	w.clock.Set(t.at)
	w.steps++
	t.fn()
}

// setup writes the configuration and starts every component.
func (w *world) setup() {
	cfg, err := config.Parse("sim.yaml", []byte(w.configYAML()))
	if err != nil {
		panic(fmt.Sprintf("sim: config: %v", err))
	}
	w.cfg = cfg
	raw, _ := json.Marshal(cfg)
	sum, _ := cfg.Hash()
	e := w.stamp(events.Event{Source: failover.CLISource("sim"), Data: events.ConfigApplied{Config: raw, Hash: sum, By: "sim"}}, w.now())
	if _, err := w.appendEvent("operator", e, nil); err != nil {
		panic(fmt.Sprintf("sim: apply config: %v", err))
	}
	w.operator = &failover.State{}
	for i, n := range cfg.Nodes {
		h := &host{w: w, node: n, skew: w.dur(-300*time.Millisecond, 300*time.Millisecond)}
		w.hosts = append(w.hosts, h)
		w.guards[n] = &guard{}
		h.start()
		w.every(guardTick, func() bool { return true }, func() { w.guardCheck(n) })
		w.every(agentTick, func() bool { return true }, func() { w.flushSpool(n) })
		_ = i
	}
	for i := range w.opt.Controllers {
		c := &controller{w: w, name: fmt.Sprintf("ctl%d", i+1), skew: w.dur(-300*time.Millisecond, 300*time.Millisecond)}
		w.ctls = append(w.ctls, c)
		c.start()
	}
}

// configYAML draws the cluster's configuration from the seed.
func (w *world) configYAML() string {
	var b strings.Builder
	nodes := make([]string, w.opt.Nodes)
	for i := range nodes {
		nodes[i] = fmt.Sprintf("node%d", i+1)
	}
	fmt.Fprintf(&b, "cluster: sim\nnode_timeout: %v\nguest_timeout: %v\nnodes: [%s]\npackages:\n", nodeTimeout, guestTimeout, strings.Join(nodes, ", "))
	policies := []string{"configured_node", "min_package_node"}
	for i := range w.opt.Packages {
		order := slices.Clone(nodes)
		w.rng.Shuffle(len(order), func(a, b int) { order[a], order[b] = order[b], order[a] })
		policy, failback := policies[w.rng.IntN(2)], []string{"manual", "automatic"}[w.rng.IntN(2)]
		if w.opt.Dependencies && (i == 2 || i == 3) && w.opt.Packages >= 4 {
			policy = "configured_node" // an exclusion's packages use it
		}
		fmt.Fprintf(&b, "  - name: pkg%d\n    nodes: [%s]\n    failover_policy: %s\n    failback_policy: %s\n",
			i+1, strings.Join(order, ", "), policy, failback)
		if w.opt.Dependencies {
			switch {
			case i == 1:
				b.WriteString("    dependencies: [{name: pkg1, condition: up, location: any_node}]\n")
			case i == 2 && w.opt.Packages >= 4:
				b.WriteString("    priority: 10\n    dependencies: [{name: pkg4, condition: down, location: same_node}]\n")
			case i == 3:
				b.WriteString("    priority: 20\n    dependencies: [{name: pkg3, condition: down, location: same_node}]\n")
			}
		}
		fmt.Fprintf(&b, "    guest:\n      name: vm%d\n      driver: process\n      restart: %d\n      start_timeout: 10s\n", i+1, w.rng.IntN(2))
		fmt.Fprintf(&b, "    services:\n      - name: steady\n        cmd: [sleep, infinity]\n        restart: %d\n        halt_timeout: 2s\n", 1+w.rng.IntN(3))
		fmt.Fprintf(&b, "      - name: flaky\n        cmd: [false]\n        restart: %d\n        restart_window: 30s\n", w.rng.IntN(4))
		fmt.Fprintf(&b, "        backoff: {delay: 500ms, factor: 2, max: 2s}\n        halt_timeout: 2s\n")
	}
	return b.String()
}

// lifetime draws how long a process of service runs before it exits by
// itself: flaky ones within seconds, steady ones within minutes.
func (w *world) lifetime(service string) time.Duration {
	if service == "flaky" {
		return w.dur(time.Second, 15*time.Second)
	}
	return w.dur(30*time.Second, 5*time.Minute)
}

// heal ends every fault: partitions, outages, delays; crashed components
// start again.
func (w *world) heal() {
	w.cut = map[string]time.Time{}
	w.outageUntil, w.lagUntil = time.Time{}, time.Time{}
	for _, h := range w.hosts {
		h.pausedUntil = time.Time{}
		startAgain(h)
	}
	for _, c := range w.ctls {
		c.pausedUntil = time.Time{}
		startAgain(c)
	}
}

// liveness lists the packages that did not settle: once the faults
// stopped, every package is running, failed, or halted (by an operator, or
// waiting for a node it may run on), and nothing is left to decide.
func (w *world) liveness() []string {
	st := failover.Fold(w.evs)
	var out []string
	for _, cp := range w.cfg.Packages {
		note := st.Note(cp.Name)
		p := st.Package(cp.Name)
		phase := failover.Phase("")
		if p != nil {
			phase = p.Phase
		}
		switch {
		case note == failover.NotePlacementDue:
			out = append(out, fmt.Sprintf("%s: %s is due (phase %q) after %v without faults", cp.Name, note, phase, w.opt.Quiet))
		case phase == failover.PhaseRunning, phase == failover.PhaseFailed, phase == failover.PhaseHalted:
		case phase == failover.PhaseLost || phase == failover.PhasePlaced || phase == "":
			// Down and waiting, by policy: for a node, for an operator.
		default:
			out = append(out, fmt.Sprintf("%s: still %s (%s) after %v without faults", cp.Name, phase, note, w.opt.Quiet))
		}
	}
	for _, o := range w.check.Report().Open {
		out = append(out, fmt.Sprintf("%s: %s on %s (epoch %d, seq %d) never ended", o.Package, o.Type, o.Node, o.Epoch, o.Seq))
	}
	return out
}
