package failover

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/vmguard/vmguard/events"
	"github.com/vmguard/vmguard/internal/lease"
)

// Defaults of Config.
const (
	DefaultElectionTTL       = 3 * time.Second
	DefaultCheckInterval     = 250 * time.Millisecond
	DefaultReconcileInterval = time.Second
	DefaultSnapshotEvery     = 10_000
	DefaultSnapshotInterval  = 30 * time.Second
)

// appendTimeout bounds one append of a decision; a decision that times out
// is decided again by the next reconcile (the expected-sequence check makes
// a late duplicate harmless).
const appendTimeout = 5 * time.Second

// Config configures a Runner. Log or Conn is required; the rest has defaults.
type Config struct {
	// Log is the event log to follow and append to. If nil, Run opens one
	// on Conn.
	Log *events.Log
	// Conn is the NATS connection to open the log on when Log is nil.
	Conn *nats.Conn
	// Logger receives the runner's own messages (leadership, decisions,
	// errors it recovers from). Default: discard.
	Logger *slog.Logger
	// ID names this instance in the leader key (default: host name and pid).
	ID string
	// Now stamps decisions (default time.Now). Leadership deadlines use the
	// monotonic clock, not Now.
	Now func() time.Time
	// ElectionTTL is how long leadership lasts without renewal (the
	// election bucket's TTL); the leader renews every ElectionTTL/3 and
	// stops deciding at once when a renewal fails or the TTL passes
	// without one. Default 3s. Every instance should use the same value.
	ElectionTTL time.Duration
	// CheckInterval is how often the leader checks node leases. Default 250ms.
	CheckInterval time.Duration
	// ReconcileInterval is how often the leader runs Reconcile besides
	// answering each event. Default 1s.
	ReconcileInterval time.Duration
	// SnapshotEvery and SnapshotInterval say when the state is written to
	// the snapshot bucket: after this many events, or this long after the
	// last snapshot if anything changed; also on a clean exit. Defaults
	// 10,000 events and 30s.
	SnapshotEvery    uint64
	SnapshotInterval time.Duration
	// NoSnapshot neither loads nor writes snapshots: a cold start replays
	// the whole log.
	NoSnapshot bool
	// StartGrace is how long, after it starts to lead, the controller waits
	// for a node that has not joined yet (no node event at all: it may be
	// starting with the cluster) before it places a package that was never
	// placed on a node after it in the package's list, as Serviceguard
	// waits for the cluster to form before it starts packages. Once that
	// node joins the package is placed there at once. Default: the
	// configuration's node_timeout; negative: do not wait.
	StartGrace time.Duration
	// NoElection makes this instance decide without a leader lease, as if
	// it always led. Only for tests that prove the expected-sequence check
	// alone keeps two deciding controllers from placing a package twice.
	NoElection bool
}

func (c Config) withDefaults() (Config, error) {
	if c.Log == nil && c.Conn == nil {
		return c, errors.New("new failover runner: Log or Conn is required")
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.ID == "" {
		host, _ := os.Hostname()
		if host == "" {
			host = "failover"
		}
		c.ID = fmt.Sprintf("%s-%d", host, os.Getpid())
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.ElectionTTL == 0 {
		c.ElectionTTL = DefaultElectionTTL
	}
	if c.ElectionTTL < 100*time.Millisecond {
		return c, fmt.Errorf("new failover runner: election ttl %s: want at least 100ms", c.ElectionTTL)
	}
	if c.CheckInterval <= 0 {
		c.CheckInterval = DefaultCheckInterval
	}
	if c.ReconcileInterval <= 0 {
		c.ReconcileInterval = DefaultReconcileInterval
	}
	if c.SnapshotEvery == 0 {
		c.SnapshotEvery = DefaultSnapshotEvery
	}
	if c.SnapshotInterval <= 0 {
		c.SnapshotInterval = DefaultSnapshotInterval
	}
	return c, nil
}

// Stats counts what a Runner did; read it with Runner.Stats.
type Stats struct {
	// Seq is the stream sequence of the last event applied and answered:
	// any decision the event led to has been appended (or refused) before
	// Seq reaches it, so a Seq at the log's end means nothing it read is
	// still on its way.
	Seq uint64
	// Leader reports whether the instance holds the leader lease now.
	Leader bool
	// Decisions counts the decisions it appended (placements, halts,
	// node.lost).
	Decisions uint64
	// Conflicts counts its decisions the log refused with
	// events.ErrConflict because something about the package or node was
	// written since it read the log (another controller, a host, an operator).
	Conflicts uint64
	// NodesLost counts the node.lost events it appended.
	NodesLost uint64
	// SnapshotSeq is the stream sequence of the snapshot it started from,
	// 0 if it replayed the whole log.
	SnapshotSeq uint64
	// Snapshots counts the snapshots it wrote.
	Snapshots uint64
	// CatchUp is how long the cold start took: loading the snapshot and
	// reading the log up to its end.
	CatchUp time.Duration
}

// Runner is the failover controller around the pure core: it follows the
// log into a State (so a standby is always warm), takes part in the leader
// election, and as leader appends what Decide and Reconcile return, records
// node.lost for nodes whose lease expired and writes snapshots for a fast
// cold start. Create it with NewRunner and run it with Run.
//
// It is a loop with parts, each with one job (docs/design-notes.md §4): the
// follower reads the log (follower.go), the elector holds leadership
// (election.go), liveness watches the node leases (liveness.go), snapshots
// keep the state for a cold start (snapshot.go); the loop (this file) owns
// the State and every decision, one synchronous step per message or tick.
type Runner struct {
	cfg    Config
	logger *slog.Logger
	run    string // unique id of this runner in the leader key
	// el campaigns for and holds leadership (election.go); the main loop
	// checks el.leading() before every append.
	el *elector

	running  atomic.Bool
	caughtUp chan struct{}
	seq      atomic.Uint64
	reqs     chan chan *State

	mu    sync.Mutex
	stats Stats

	// Owned by Run's goroutine.
	log *events.Log
	// out is what decisions are appended to and checked against: log, or
	// a simulated log.
	out DecisionLog
	// fol reads the log for the loop (follower.go); live watches the node
	// leases and says which nodes to declare lost (liveness.go). Both are
	// set by Run.
	fol        *follower
	live       *liveness
	warn       warner
	state      *State
	configRaw  json.RawMessage // the config in force as recorded in the log
	lastID     string          // id of the last event applied
	lastIDSeq  uint64
	leader     bool   // the elector said so
	ready      bool   // leader and caught up with the log as of the election
	catchUpTo  uint64 // the stream's last sequence when it became leader
	catchKnown bool
	readyAt    time.Time // when it started deciding (mono)
	// mono reads the monotonic clock that what waits on time inside the
	// loop (the start grace, unsure appends) is measured by:
	// lease.SystemClock, or a simulator's clock (NewLoop).
	mono    lease.Clock
	held    map[string]bool   // packages whose first placement waits, logged once
	pending map[string]uint64 // own decisions in flight: subject key -> seq
	snaps   *snapshots        // nil with NoSnapshot

	// unsure holds packages whose last decision's append had an unknown
	// outcome (an error, not a conflict): it may be stored. Decisions about
	// packages linked to one wait until its subjects move past Seq, or
	// until Until.
	unsure map[string]unsureAppend
}

// NewRunner checks cfg and returns a Runner.
func NewRunner(cfg Config) (*Runner, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	run := events.NewID()
	return &Runner{
		cfg:      cfg,
		logger:   cfg.Logger,
		run:      run,
		el:       newElector(cfg.ID, run, cfg.ElectionTTL, cfg.Now, cfg.Logger),
		caughtUp: make(chan struct{}),
		reqs:     make(chan chan *State),
		state:    &State{},
		pending:  map[string]uint64{},
		unsure:   map[string]unsureAppend{},
		warn:     newWarner(cfg.Logger),
		held:     map[string]bool{},
		mono:     lease.SystemClock{},
	}, nil
}

// CaughtUp is closed once the runner has loaded its snapshot and read the
// log up to the end it had when Run started: its state is warm.
func (r *Runner) CaughtUp() <-chan struct{} { return r.caughtUp }

// Leader reports whether this instance holds the leader lease now (always
// true with NoElection once Run started).
func (r *Runner) Leader() bool { return r.el.leading() }

// Stats returns what the runner did so far.
func (r *Runner) Stats() Stats {
	r.mu.Lock()
	s := r.stats
	r.mu.Unlock()
	s.Seq = r.seq.Load()
	s.Leader = r.Leader()
	return s
}

// State returns a copy of the runner's current state, once it caught up.
func (r *Runner) State(ctx context.Context) (*State, error) {
	reply := make(chan *State, 1)
	select {
	case r.reqs <- reply:
	case <-ctx.Done():
		return nil, fmt.Errorf("get failover state: %w", ctx.Err())
	}
	select {
	case s := <-reply:
		return s, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("get failover state: %w", ctx.Err())
	}
}

func (r *Runner) count(f func(*Stats)) {
	r.mu.Lock()
	f(&r.stats)
	r.mu.Unlock()
}

// Run follows the log and, while it leads, decides, until ctx ends. On a
// clean exit it writes a snapshot and gives up leadership (deletes the
// leader key) so that a standby takes over at once. It returns an error only
// when it cannot start (no log, no buckets) or the log cannot be read.
func (r *Runner) Run(ctx context.Context) error {
	if !r.running.CompareAndSwap(false, true) {
		return errors.New("run failover runner: already running")
	}
	start := time.Now()
	r.log = r.cfg.Log
	if r.log == nil {
		l, err := events.Open(ctx, r.cfg.Conn, events.WithLogger(r.logger))
		if err != nil {
			return fmt.Errorf("run failover runner: %w", err)
		}
		r.log = l
	}
	r.out = r.log
	r.fol = newFollower(r.log, r.logger)
	if !r.openBuckets(ctx) {
		return nil
	}
	if r.snaps != nil {
		r.loadSnapshot(ctx)
		// Whatever ends the run, the state so far is worth keeping.
		defer r.finalSnapshot(ctx)
	}
	if err := r.catchUp(ctx); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	took := time.Since(start)
	r.count(func(s *Stats) { s.CatchUp = took })
	close(r.caughtUp)
	r.logger.Info("failover controller caught up", "seq", r.state.Seq, "from_snapshot", r.Stats().SnapshotSeq, "took", took.Round(time.Millisecond))

	// The elector and the follower outlive ctx until the main loop is done,
	// so that leadership is released only after the last decision.
	bg, stopBG := context.WithCancel(context.WithoutCancel(ctx))
	var wg sync.WaitGroup
	defer wg.Wait()
	defer stopBG()

	items := make(chan item, 1024)
	followErr := make(chan error, 1)
	wg.Add(1)
	go func() {
		defer wg.Done()
		followErr <- r.fol.Run(bg, r.state.Seq+1, items)
	}()

	leases, prober := newNATSLiveness(r.log, r.run, r.logger)
	r.live = newLiveness(leases, prober, r.cfg.Now, lease.SystemClock{}, r.cfg.CheckInterval*4, r.logger)
	r.live.setTTL(r.state)
	wg.Add(1)
	go func() {
		defer wg.Done()
		r.live.Run(bg)
	}()

	lead := make(chan bool)
	if r.cfg.NoElection {
		r.el.always()
	} else {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.el.Run(bg, lead)
		}()
	}
	err := r.loop(ctx, items, lead, followErr)
	r.el.resign()
	return err
}

// openBuckets sets up the election bucket for the elector and the snapshot
// bucket for the snapshots part, unless the config turns them off; false
// when ctx ended first.
func (r *Runner) openBuckets(ctx context.Context) bool {
	if !r.cfg.NoElection {
		kv, ok := r.ensureBucket(ctx, "election bucket", func(ctx context.Context) (jetstream.KeyValue, error) {
			return r.log.EnsureBucket(ctx, electionBucket(r.cfg.ElectionTTL))
		})
		if !ok {
			return false
		}
		r.el.kv = kv
	}
	if !r.cfg.NoSnapshot {
		kv, ok := r.ensureBucket(ctx, "snapshot bucket", func(ctx context.Context) (jetstream.KeyValue, error) {
			return r.log.EnsureBucket(ctx, snapshotBucket)
		})
		if !ok {
			return false
		}
		r.snaps = &snapshots{kv: kv, every: r.cfg.SnapshotEvery, interval: r.cfg.SnapshotInterval, logger: r.logger}
	}
	return true
}

// ensureBucket creates or updates a bucket with ensure, trying again every
// half second while it fails (on a JetStream cluster an R3 bucket is not
// made while a leader is being elected, or when a request goes unanswered);
// false when ctx ended first.
func (r *Runner) ensureBucket(ctx context.Context, what string, ensure func(context.Context) (jetstream.KeyValue, error)) (jetstream.KeyValue, bool) {
	for {
		actx, cancel := context.WithTimeout(ctx, 5*time.Second)
		kv, err := ensure(actx)
		cancel()
		if err == nil {
			r.warn.recovered(what)
			return kv, true
		}
		if ctx.Err() != nil {
			return nil, false
		}
		r.warn.once(what, "ensure "+what+"; retrying", "err", err)
		select {
		case <-ctx.Done():
			return nil, false
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// finalSnapshot writes a snapshot at the end of a run if the state moved
// since the last one.
func (r *Runner) finalSnapshot(ctx context.Context) {
	if !r.snaps.moved(r.state.Seq) {
		return
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	r.saveSnapshot(sctx)
}

// catchUp reads the log from the state's sequence to its current end,
// applying without deciding (follower.catchUp).
func (r *Runner) catchUp(ctx context.Context) error {
	return r.fol.catchUp(ctx, func() uint64 { return r.state.Seq + 1 }, func(e events.Event) error {
		r.apply(e)
		if r.snaps.dueByCount() {
			r.saveSnapshot(ctx)
		}
		r.answered() // nothing to answer while catching up
		return nil
	}, func(seq uint64, subject string) {
		r.skip(seq, subject)
		r.answered()
	})
}

// loop is the goroutine around the loop's steps: it owns the state and
// every decision, and turns what arrives (a message of the log, a change of
// leadership, a tick) into one synchronous step each, so that a simulator
// could drive the same steps without it.
func (r *Runner) loop(ctx context.Context, items <-chan item, lead <-chan bool, followErr <-chan error) error {
	reconcile := time.NewTicker(r.cfg.ReconcileInterval)
	defer reconcile.Stop()
	check := time.NewTicker(r.cfg.CheckInterval)
	defer check.Stop()
	snap := time.NewTicker(r.cfg.SnapshotInterval)
	defer snap.Stop()
	if r.cfg.NoElection {
		r.becomeLeader(ctx)
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-followErr:
			if ctx.Err() != nil {
				return nil
			}
			return err
		case it := <-items:
			r.handle(ctx, it)
		drain: // apply what is already buffered before the periodic work
			for range cap(items) {
				select {
				case it := <-items:
					r.handle(ctx, it)
				default:
					break drain
				}
			}
			r.drained(ctx)
		case l := <-lead:
			r.leadChanged(ctx, l)
		case <-reconcile.C:
			r.reconcileTick(ctx)
		case <-check.C:
			r.checkTick(ctx)
		case <-snap.C:
			if r.snaps.dueByTime(r.state.Seq) {
				r.saveSnapshot(ctx)
			}
		case reply := <-r.reqs:
			reply <- r.state.Clone()
		}
	}
}

// drained is the step after the messages at hand were handled: a snapshot
// if enough events were applied.
func (r *Runner) drained(ctx context.Context) {
	if r.snaps.dueByCount() {
		r.saveSnapshot(ctx)
	}
}

// leadChanged is the step of the elector's news: leading (l) or not.
func (r *Runner) leadChanged(ctx context.Context, l bool) {
	if l {
		r.becomeLeader(ctx)
		return
	}
	r.leader, r.ready = false, false
	r.logger.Warn("lost leadership; standing by", "id", r.cfg.ID)
}

// reconcileTick is the step of each reconcile interval: Reconcile, with
// the controller's clock for what waits on time.
func (r *Runner) reconcileTick(ctx context.Context) {
	if r.leader && !r.catchKnown {
		r.becomeLeader(ctx)
	}
	if r.deciding() {
		r.emit(ctx, ReconcileAt(r.state, r.cfg.Now()))
	}
}

// checkTick is the step of each check interval: freezes that expired, and
// the nodes liveness says are lost.
func (r *Runner) checkTick(ctx context.Context) {
	r.live.setTTL(r.state)
	if r.deciding() {
		r.emit(ctx, Expired(r.state, r.cfg.Now()))
		r.emit(ctx, r.live.lost(ctx, r.state))
	}
}

// becomeLeader notes the log's end: the leader decides only once its state
// has caught up with it.
func (r *Runner) becomeLeader(ctx context.Context) {
	if !r.leader {
		r.logger.Info("leading the failover controllers", "id", r.cfg.ID, "seq", r.state.Seq)
	}
	r.leader, r.ready = true, false
	last, err := r.out.LastSeq(ctx)
	if err != nil {
		r.catchKnown = false // try again at the next reconcile tick
		if ctx.Err() == nil {
			r.warn.once("last seq", "read the log's last sequence; not deciding until it can", "err", err)
		}
		return
	}
	r.warn.recovered("last seq")
	r.catchUpTo, r.catchKnown = last, true
	r.checkReady(ctx)
}

// checkReady starts deciding once the state reached the log's end as of the
// election: a Reconcile for everything due, and a lease check.
func (r *Runner) checkReady(ctx context.Context) {
	if !r.leader || r.ready || !r.catchKnown || r.state.Seq < r.catchUpTo {
		return
	}
	r.ready, r.readyAt = true, r.mono.Now()
	if r.deciding() {
		r.emit(ctx, Reconcile(r.state))
		r.emit(ctx, r.live.lost(ctx, r.state))
	}
}

// deciding reports whether this instance may decide now: it leads, its
// lease has not run out, and it has caught up.
func (r *Runner) deciding() bool { return r.leader && r.ready && r.Leader() }

// handle applies one message of the log and, while deciding, answers it.
func (r *Runner) handle(ctx context.Context, it item) {
	defer r.answered()
	if it.skipped {
		r.skip(it.e.Seq, it.subject)
		r.checkReady(ctx)
		return
	}
	if !r.apply(it.e) {
		return
	}
	if r.ready {
		// A placement's markers change nothing: the placement, stored after
		// them in the same batch, is what Decide answers.
		if !isMarker(it.e) && r.deciding() {
			r.emit(ctx, Decide(r.state, it.e))
		}
		return
	}
	r.checkReady(ctx)
}

// apply folds e into the state and tracks what snapshots need.
func (r *Runner) apply(e events.Event) bool {
	if !r.state.Apply(e) {
		return false
	}
	if d, ok := e.Data.(events.ConfigApplied); ok && r.state.ConfigSeq == e.Seq {
		r.configRaw = d.Config
	}
	r.lastID, r.lastIDSeq = e.ID, e.Seq
	r.advanced()
	return true
}

func (r *Runner) skip(seq uint64, subject string) {
	if seq <= r.state.Seq {
		return
	}
	r.state.Skip(seq, subject)
	r.advanced()
}

// answered publishes the state's sequence in Stats.Seq once what it
// applied has been answered.
func (r *Runner) answered() { r.seq.Store(r.state.Seq) }

func (r *Runner) advanced() {
	r.snaps.applied()
	for k, seq := range r.pending {
		if seq <= r.state.Seq {
			delete(r.pending, k)
		}
	}
}

// pendingKey names the subjects a decision is guarded on.
func pendingKey(e events.Event) string {
	if sc, err := events.ScopeOf(e.Type()); err == nil && sc == events.ScopeNode {
		return "node." + e.Subject
	}
	return "pkg." + e.Subject
}

// emit appends decisions, each stamped and guarded by the expected last
// sequence of its package (or node) as the state saw it. A conflict means
// the state is behind: the event that caused it comes through the log, and
// Decide and Reconcile run again from the newer state. A decision about a
// package whose previous decision is still on its way back is skipped for
// the same reason. Several decisions (a lost node's placements) go out in
// one atomic batch, one fsync in the durable default (in chunks that fit
// the server's limit on a batch: chunks); a batch refused as a whole (one
// stale guard) is sent again one decision at a time, so each gets the
// outcome it would have had alone. A placement of a package linked
// to others by a dependency goes out with its markers (guarded).
func (r *Runner) emit(ctx context.Context, evs []events.Event) {
	var batch []events.Event
	inBatch := map[string]bool{}
	asked := map[string]error{} // nodeCurrent's answer for each node, asked once a pass
	for _, e := range evs {
		if !r.deciding() {
			return
		}
		key := pendingKey(e)
		if r.pending[key] > r.state.Seq || inBatch[key] || r.holdFirstPlacement(e) || r.linkedInFlight(e) {
			continue
		}
		e = events.Stamp(e, r.cfg.Now())
		err := r.nodeCurrent(ctx, e, asked)
		if err != nil {
			r.emitted(ctx, e, 0, err)
			continue
		}
		inBatch[key] = true
		batch = append(batch, e)
	}
	if len(batch) > 1 {
		for _, chunk := range r.chunks(batch) {
			if !r.deciding() {
				return
			}
			r.appendChunk(ctx, chunk)
		}
		return
	}
	r.appendEach(ctx, batch)
}

// chunks splits decisions into runs whose items (guarded: markers and
// the decision) fit in one atomic batch (events.MaxBatch): a loss of 10
// nodes places ~1,000 packages, ~2,000 items with their markers, and a
// batch over the limit would be appended one event at a time.
//
// Decisions that take more than one chunk go in the order of the nodes
// they place on (stably), so that each host manager finds its placements
// in one chunk or two: it takes in the packages of each chunk that places
// some on it at once, and each take-in costs it a new consumer. At 200
// nodes and 10,000 packages a cold start's 20 chunks each placed a few
// packages on every node: 4,000 new consumers instead of ~200.
func (r *Runner) chunks(batch []events.Event) [][]events.Event {
	out := r.cut(batch)
	if len(out) == 1 {
		return out
	}
	byNode := slices.Clone(batch)
	slices.SortStableFunc(byNode, func(a, b events.Event) int { return cmp.Compare(placedOn(a), placedOn(b)) })
	return r.cut(byNode)
}

// cut splits decisions, in order, into runs whose items fit one batch.
func (r *Runner) cut(batch []events.Event) [][]events.Event {
	var out [][]events.Event
	var cur []events.Event
	n := 0
	for _, e := range batch {
		k := len(r.guarded(e, map[string]bool{}, map[string]bool{})) // at most what it takes in a chunk
		if len(cur) > 0 && n+k > events.MaxBatch {
			out, cur, n = append(out, cur), nil, 0
		}
		cur, n = append(cur, e), n+k
	}
	return append(out, cur)
}

// placedOn returns the node a placement places on, "" for another
// decision.
func placedOn(e events.Event) string {
	if d, ok := e.Data.(events.PackagePlaced); ok {
		return d.Node
	}
	return ""
}

// appendChunk appends decisions in one atomic batch, each with its
// markers; a package decided in the chunk is guarded by its decision (no
// marker). A chunk refused as a whole is appended one decision at a time,
// so each gets the outcome it would have had alone.
func (r *Runner) appendChunk(ctx context.Context, chunk []events.Event) {
	if len(chunk) == 1 {
		r.appendEach(ctx, chunk)
		return
	}
	decided := make(map[string]bool, len(chunk))
	for _, e := range chunk {
		decided[pendingKey(e)] = true
	}
	marked := map[string]bool{}
	var items []events.BatchItem
	for _, e := range chunk {
		items = append(items, r.guarded(e, decided, marked)...)
	}
	actx, cancel := context.WithTimeout(ctx, appendTimeout)
	seqs, err := r.out.AppendBatch(actx, items...)
	cancel()
	if err == nil {
		r.stored(ctx, items, seqs)
		return
	}
	r.logger.Debug("decision batch refused; appending one by one", "decisions", len(chunk), "err", err)
	r.appendEach(ctx, chunk)
}

// appendEach appends decisions one at a time, each with its markers.
func (r *Runner) appendEach(ctx context.Context, batch []events.Event) {
	for _, e := range batch {
		if !r.deciding() {
			return
		}
		items := r.guarded(e, map[string]bool{pendingKey(e): true}, map[string]bool{})
		actx, cancel := context.WithTimeout(ctx, appendTimeout)
		if len(items) == 1 {
			seq, err := r.out.Append(actx, e, r.state.Expect(e))
			cancel()
			r.emitted(ctx, e, seq, err)
			continue
		}
		seqs, err := r.out.AppendBatch(actx, items...)
		cancel()
		if err != nil {
			r.emitted(ctx, e, 0, err)
			continue
		}
		r.stored(ctx, items, seqs)
	}
}

// guarded returns the items that append decision e: for a placement, first
// its placement.noted marker on the node's placement subject (unguarded:
// the host manager there reads its placements from it, design-notes §10),
// then a package.checked marker on each package linked to it by a
// dependency (either way), guarded by that package's last sequence as the
// state saw it, then e with its own guard. The placement was decided from the linked
// packages' state, which its own guard does not cover: stored in one atomic
// batch, the markers make it fail if any of them moved, e.g. a newer leader
// placed an excluded package beside it while this one paused before its
// append (docs/sim.md finding 12). A package with a decision of its own in
// the batch (decided, by pendingKey) is guarded by that decision, and a
// package gets one marker a batch (marked): the server refuses a batch that
// checks a subject it already wrote to.
func (r *Runner) guarded(e events.Event, decided, marked map[string]bool) []events.BatchItem {
	var items []events.BatchItem
	if m, ok := events.PlacementMarker(e); ok {
		items = append(items, events.BatchItem{Event: m})
	}
	if _, ok := e.Data.(events.PackagePlaced); ok && r.state.Config != nil {
		for _, q := range r.state.Linked(e.Subject) {
			if decided["pkg."+q] || marked[q] {
				continue
			}
			marked[q] = true
			m := events.Event{ID: events.NewID(), Source: Source, Subject: q, Time: e.Time, CauseID: e.CauseID,
				Data: events.PackageChecked{For: e.Subject, Seq: r.state.PackageSeq(q)}}
			items = append(items, events.BatchItem{Event: m, Opts: []events.AppendOption{r.state.Expect(m)}})
		}
	}
	return append(items, events.BatchItem{Event: e, Opts: []events.AppendOption{r.state.Expect(e)}})
}

// stored records the outcome of a batch the log stored at seqs: each
// decision as emitted, each marker as pending on its package (a decision
// about it waits until the marker is read back, or it would conflict).
func (r *Runner) stored(ctx context.Context, items []events.BatchItem, seqs []uint64) {
	for i, it := range items {
		switch it.Event.Data.(type) {
		case events.PackageChecked:
			r.pending["pkg."+it.Event.Subject] = seqs[i]
			continue
		case events.PlacementNoted:
			continue
		}
		r.emitted(ctx, it.Event, seqs[i], nil)
	}
}

// linkedInFlight reports whether e is about a package linked by a
// dependency to one whose decision is still on its way back: e was decided
// from a state without it (the exclusions and up dependencies between
// packages are not covered by the per-package append guard), so it waits;
// reading that decision back decides the linked packages again.
func (r *Runner) linkedInFlight(e events.Event) bool {
	if r.state.Config == nil {
		return false
	}
	for _, q := range r.state.Linked(e.Subject) {
		if r.pending["pkg."+q] > r.state.Seq {
			return true
		}
		if u, ok := r.unsure[q]; ok {
			if r.state.PackageSeq(q) <= u.Seq && r.mono.Now().Before(u.Until) {
				return true
			}
			delete(r.unsure, q)
		}
	}
	return false
}

// unsureAppend is a decision whose append may or may not be stored: the
// package's last sequence when it was decided, and how long linked
// decisions wait for it to show.
type unsureAppend struct {
	Seq   uint64
	Until time.Time
}

// unsureFor is how long decisions about linked packages wait for a decision
// whose append had an unknown outcome: past it, one that was stored has
// been read back (reads lag far less), and one that was not is decided
// again.
const unsureFor = 2 * appendTimeout

// emitted records the outcome of appending decision e at seq.
func (r *Runner) emitted(ctx context.Context, e events.Event, seq uint64, err error) {
	switch {
	case errors.Is(err, events.ErrConflict):
		r.count(func(s *Stats) { s.Conflicts++ })
		r.logger.Debug("decision refused: the log moved on", "type", events.ShortType(e.Type()), "subject", e.Subject)
	case err != nil:
		if ctx.Err() == nil {
			r.warn.once("append", "append decision; deciding again later", "type", events.ShortType(e.Type()), "subject", e.Subject, "err", err)
		}
		if pendingKey(e) == "pkg."+e.Subject {
			r.unsure[e.Subject] = unsureAppend{Seq: r.state.PackageSeq(e.Subject), Until: r.mono.Now().Add(unsureFor)}
		}
	default:
		r.warn.recovered("append")
		r.pending[pendingKey(e)] = seq
		_, lost := e.Data.(events.NodeLost)
		r.count(func(s *Stats) {
			s.Decisions++
			if lost {
				s.NodesLost++
			}
		})
		r.logger.Info("decided", "type", events.ShortType(e.Type()), "subject", e.Subject, "what", e.Summary(), "seq", seq, "cause", e.CauseID)
	}
}

// nodeCurrent checks, for a placement, that nothing about its target node
// was written since the state read it: the append's expected-sequence guard
// covers only the package's subjects, so without this a placement decided
// before the controller read the node's loss could land on a lost node. It
// returns events.ErrConflict when the node moved on (its event comes through
// the log and the decision is made again). A node event written between
// this check and the append is still possible: such a placement is void in
// every fold (this one counts it lost at once and places again; the host
// managers never start it, not even after the node joins again; verify
// notes it), docs/design-notes.md §6.
//
// asked holds the answer for each node already asked in the same pass of
// emit: the state does not change during a pass, and the decisions of a
// pass are appended after all of them are checked, so asking again for each
// placement on the same node (a node loss's hundreds, at scale) would only
// cost a request each.
func (r *Runner) nodeCurrent(ctx context.Context, e events.Event, asked map[string]error) error {
	d, ok := e.Data.(events.PackagePlaced)
	if !ok {
		return nil
	}
	if err, done := asked[d.Node]; done {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, appendTimeout)
	defer cancel()
	t, err := r.out.Tail(ctx, events.NodeFilter(d.Node))
	if err == nil && t.Seq > r.state.NodeSeq(d.Node) {
		err = fmt.Errorf("node %s: seq %d not read yet: %w", d.Node, t.Seq, events.ErrConflict)
	}
	asked[d.Node] = err
	return err
}

// holdFirstPlacement reports whether e, the first placement of a package
// (auto_run, epoch 1), waits for a node before e's node in the package's
// list that has not joined yet and may still be starting: during StartGrace
// after this controller started deciding. Its join (Decide) or the first
// Reconcile after the grace places the package.
func (r *Runner) holdFirstPlacement(e events.Event) bool {
	d, ok := e.Data.(events.PackagePlaced)
	if !ok || d.Epoch != 1 || ReasonCode(d.Reason) != ReasonAutoRun || r.state.Config == nil {
		return false
	}
	grace := r.cfg.StartGrace
	if grace == 0 {
		grace = r.state.Config.NodeTimeout.D()
	}
	if grace <= 0 || r.mono.Now().Sub(r.readyAt) >= grace {
		return false
	}
	cp, ok := r.state.Config.Package(e.Subject)
	if !ok {
		return false
	}
	p := r.state.Package(e.Subject)
	for _, n := range cp.Nodes {
		if n == d.Node {
			return false
		}
		if ns := r.state.Node(n); (ns == nil || ns.Membership == MemberUnknown) && p.SwitchingEnabled(n) {
			if !r.held[e.Subject] {
				r.held[e.Subject] = true
				r.logger.Info("first placement waits for a node of higher priority to join", "package", e.Subject,
					"waiting_for", n, "else", d.Node, "at_most", (grace - r.mono.Now().Sub(r.readyAt)).Round(time.Millisecond))
			}
			return true
		}
	}
	return false
}
