package hostmanager

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/vmguard/vmguard/config"
	"github.com/vmguard/vmguard/events"
)

// Defaults of Config.
const (
	// DefaultShutdownTimeout bounds the clean halt of HaltOnExit.
	DefaultShutdownTimeout = time.Minute
	// ReasonNodeShutdown is the package.halting reason of a clean shutdown
	// (HaltOnExit). It has no `by`, so auto_run stays on.
	ReasonNodeShutdown = "node_shutdown"
)

// appendTimeout bounds one append of the runner's own decisions.
const appendTimeout = 10 * time.Second

// Config configures a Runner.
type Config struct {
	// Node is the node this host manager runs on (required, a valid name).
	Node string
	// Log is the event log (required). Its NATS connection also carries
	// agent requests and heartbeats, and the node lease unless LeaseConn
	// is given.
	Log *events.Log
	// LeaseConn, if set, is a NATS connection of the node lease's own: its
	// renewals then never queue behind what the log's connection reads (a
	// guest flooding its subjects fills that connection with junk the
	// follower must read and skip). Default: the log's connection.
	LeaseConn *nats.Conn
	// GuestConn, if set, carries the requests to and heartbeats of the
	// guests whose driver is not "process": the in-process connection to
	// the host's leaf node (vmguard host --leaf), so that they never
	// leave the host. Process-driver agents, children of the host manager
	// on its own identity, stay on the log's connection. Default: the
	// log's connection for every guest.
	GuestConn *nats.Conn
	// Logger receives the runner's log (default: discard).
	Logger *slog.Logger
	// Drivers are the guest drivers by config name (guest.driver). The
	// "process" and "exec" drivers are added unless given here.
	Drivers map[string]Driver
	// StateDir holds this node's local files; the process driver keeps its
	// agents under <StateDir>/guests (default .vmguard/host/<node>). When
	// its last element is the node's name, the process driver can migrate
	// a guest to another node's host manager on this machine whose state
	// directory is a sibling named after that node (`vmguard up`, the
	// default .vmguard/host/<node>).
	StateDir string
	// AgentBin is the vmguard binary the process driver runs as `vmguard
	// agent` (default: the running executable).
	AgentBin string
	// AgentArgs are extra `vmguard agent` arguments for the process driver.
	AgentArgs []string
	// AgentGuestArgs, if set, returns more `vmguard agent` arguments for
	// one guest of the process driver (ProcessDriverConfig.GuestArgs).
	AgentGuestArgs func(guest string) []string
	// NATSURL is the URL process-driver agents connect to (default: the
	// URL the log's connection uses).
	NATSURL string
	// Now is the clock (default time.Now). Every part of the runner reads
	// the time from it: the decisions' stamps and restart delays, the
	// lease keeper, the guest monitor and heartbeats, the replay's bound.
	// Intervals are differences of two values it returned, monotonic with
	// time.Now, except the lease's last renewal (lastOK), kept as Unix
	// nanoseconds for other goroutines: wall time. The loop's timers go
	// through time.AfterFunc (the afterFunc seam); the other timers and
	// I/O deadlines (context deadlines, the lease keeper's and follower's
	// pauses, lease.Renew's attempts and its Sent, the guard's socket) run
	// on the machine's clock.
	Now func() time.Time
	// HaltOnExit makes Run, when its ctx ends, halt this node's packages
	// (package.halting reason node_shutdown, without `by`, so auto_run
	// stays on), wait until they are down, delete the node's lease and
	// return; at most ShutdownTimeout. Without it Run returns at once and
	// leaves the guests running: a restarted host manager takes them over,
	// and if none does, the lease lapses and the guests fence themselves.
	HaltOnExit bool
	// ShutdownTimeout bounds the halt of HaltOnExit (default 1m).
	ShutdownTimeout time.Duration
	// ReplayWait bounds how long the start's replay of the log retries
	// reads that fail (a cluster electing or out of reach); 0 means
	// DefaultReplayWait. Run returns an error after it.
	ReplayWait time.Duration
	// Configs, if set, shares parsed configurations with the other host
	// managers of this process that have the same cache (ConfigCache);
	// nil: a cache of this host manager's own.
	Configs *ConfigCache
	// Version is recorded in node.joined.
	Version string
	// Metrics receives lease renewals and guest heartbeats (default: none).
	Metrics Metrics
	// Guard makes the runner pet a node guard (`vmguard guard`, see
	// guard.go) over GuardSocket(StateDir) after each lease renewal,
	// starting it as GuardBin (default: AgentBin, else the running
	// executable) with GuardArgs when none answers.
	Guard     bool
	GuardBin  string
	GuardArgs []string
	// ReadWholeLog makes the runner read and fold every event of the
	// cluster, as it did before it read only what concerns its node
	// (concern.go); for comparisons (`vmguard bench scale --read-all`).
	ReadWholeLog bool
}

// Runner is one node's host manager: it folds the log into a State,
// appends the core's decisions with the expected-sequence check, performs
// the actions the log asks for (guest drivers, agent run and stop
// requests), watches guest heartbeats and holds the node lease. Create it
// with NewRunner; Run it once.
type Runner struct {
	cfg    Config
	node   string
	logger *slog.Logger
	// The loop's effects: appending decisions, the clock, whether the
	// log's connection is up (decisions are not queued for a reconnect).
	log       appender
	now       func() time.Time
	after     afterFunc
	connected func() bool

	// The parts the loop feeds and is fed by, each with its own job.
	reader *follower // reads the log: the replay, then what follows
	ex     *executor // starts actions, keeps them by key
	// actuator performs them (the executor's performer).
	actuator *actuator
	hb       *heartbeats  // this node's guests' heartbeats and watches
	lease    *leaseKeeper // holds the node lease, fences, pets the guard

	// Owned by the loop goroutine.
	st *State
	// member is this node's membership (member.go): it decides joins and
	// fences and whether packages may be acted on.
	member      *Member
	appendRetry map[work]timer // a retry of a failed append, by work
	// fencedFor holds "<package>/<epoch>" the node fenced itself for.
	fencedFor map[string]bool
	wake      chan work // timers: a delayed action, a retry
	wg        sync.WaitGroup

	// newID draws the ids of the events the loop appends (events.NewID;
	// a Loop's caller may give its own, LoopConfig.NewID).
	newID func() string
	// fenceGuests, if set, stops the node's guests when it fences itself,
	// synchronously, instead of the lease keeper's fence in a goroutine
	// (LoopConfig.Fence); nil in production.
	fenceGuests func(why string)

	// test holds the hooks tests give newRunner; zero in production.
	test testHooks
}

// appender is what the loop and the executor need of the log: appending
// an event, with the expected-sequence check (events.Log).
type appender interface {
	Append(ctx context.Context, e events.Event, opts ...events.AppendOption) (uint64, error)
}

// siblingGuests returns the process driver's PeerDir for a state directory
// named after its node: the guests directory of the sibling named after
// the other node; nil otherwise (no migration with the process driver).
func siblingGuests(stateDir, node string) func(string) string {
	if filepath.Base(stateDir) != node {
		return nil
	}
	parent := filepath.Dir(stateDir)
	return func(n string) string { return filepath.Join(parent, n, "guests") }
}

// errCrashed is returned by Run when afterAppend asked it to stop at once.
var errCrashed = errors.New("stopped by test hook")

// ErrSuperseded is returned by Run when another host manager instance of
// the same node took the node's lease: this one stepped down and left the
// guests to it.
var ErrSuperseded = errors.New("node lease taken by another host manager instance of this node")

// testHooks are the seams tests give newRunner; NewRunner gives none.
type testHooks struct {
	// afterAppend, if set, is called after each decision is appended;
	// true makes Run return at once, as if killed (crashed is set then).
	afterAppend func(events.Event) bool
	// onHandle, if set, is called with each event the loop reads.
	onHandle func(events.Event)
	// beforeRecord, if set, is called with the node.joined or
	// node.lease_taken that records a lease take, before it is appended.
	beforeRecord func(events.Event)
	crashed      bool
}

// NewRunner checks cfg and returns a runner.
func NewRunner(cfg Config) (*Runner, error) { return newRunner(cfg, testHooks{}) }

// newRunner is NewRunner with test hooks.
func newRunner(cfg Config, hooks testHooks) (*Runner, error) {
	if err := events.CheckName("node", cfg.Node); err != nil {
		return nil, fmt.Errorf("new host manager: %w", err)
	}
	if cfg.Log == nil {
		return nil, errors.New("new host manager: event log: missing")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Metrics == nil {
		cfg.Metrics = noMetrics{}
	}
	if cfg.StateDir == "" {
		cfg.StateDir = filepath.Join(".vmguard", "host", cfg.Node)
	}
	if cfg.ShutdownTimeout <= 0 {
		cfg.ShutdownTimeout = DefaultShutdownTimeout
	}
	links, err := newNATSLinks(cfg)
	if err != nil {
		return nil, fmt.Errorf("new host manager: %w", err)
	}
	if cfg.NATSURL == "" {
		cfg.NATSURL = links.url
	}
	drivers, err := newDrivers(cfg)
	if err != nil {
		return nil, fmt.Errorf("new host manager: %w", err)
	}
	logger := cfg.Logger.With("node", cfg.Node)
	pt, err := guardPetter(cfg, logger)
	if err != nil {
		return nil, fmt.Errorf("new host manager: %w", err)
	}
	r := newLoop(cfg.Node, logger, cfg.Log, cfg.Now, realTimers, links.connected, cfg.Metrics, hooks)
	r.cfg = cfg
	if cfg.Configs == nil {
		cfg.Configs = NewConfigCache() // the follower and the loop parse each configuration once
	}
	r.reader = newFollower(cfg, logger)
	r.st.configs = cfg.Configs
	r.actuator = &actuator{node: cfg.Node, now: cfg.Now, logger: logger, log: cfg.Log, guests: links.guests, drivers: drivers, hb: r.hb}
	r.ex = newExecutor(r.actuator, cfg.Now, r.after, logger, &r.wg, r.wake)
	r.lease = newLeaseKeeper(cfg.Node, events.NewID(), links.leases, cfg.Now, logger, cfg.Metrics, r.actuator.driver, pt)
	return r, nil
}

// newLoop returns the loop of node's runner, without its follower,
// actuator, executor and lease keeper (newRunner adds them).
func newLoop(node string, logger *slog.Logger, log appender, now func() time.Time, after afterFunc, connected func() bool, m Metrics, hooks testHooks) *Runner {
	return &Runner{node: node, logger: logger, log: log, now: now, after: after, connected: connected,
		hb: newHeartbeats(node, now, m, logger), st: NewState(node), member: NewMember(node),
		appendRetry: map[work]timer{}, fencedFor: map[string]bool{}, wake: make(chan work, 64), newID: events.NewID, test: hooks}
}

// stamp gives e an id (newID) and the time, unless it has them.
func (r *Runner) stamp(e events.Event) events.Event {
	if e.ID == "" {
		e.ID = r.newID()
	}
	return events.Stamp(e, r.now())
}

// guardPetter returns the petter of the node guard cfg asks for, started
// as Config.GuardBin, else AgentBin, else the running executable; nil
// without Config.Guard.
func guardPetter(cfg Config, logger *slog.Logger) (*petter, error) {
	if !cfg.Guard {
		return nil, nil
	}
	bin := cfg.GuardBin
	if bin == "" {
		bin = cfg.AgentBin
	}
	if bin == "" {
		exe, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("find vmguard binary for the node guard: %w", err)
		}
		bin = exe
	}
	return newPetter(cfg.Node, cfg.StateDir, bin, cfg.GuardArgs, logger), nil
}

// newDrivers returns cfg.Drivers with the process driver (the guest agent
// run as a local process) and the exec driver added where cfg has none.
func newDrivers(cfg Config) (map[string]Driver, error) {
	drivers := map[string]Driver{}
	for k, d := range cfg.Drivers {
		drivers[k] = d
	}
	if _, ok := drivers[config.DriverProcess]; !ok {
		pd, err := NewProcessDriver(ProcessDriverConfig{
			Bin: cfg.AgentBin, NATS: cfg.NATSURL, Dir: filepath.Join(cfg.StateDir, "guests"), Args: cfg.AgentArgs, GuestArgs: cfg.AgentGuestArgs,
			PeerDir: siblingGuests(cfg.StateDir, cfg.Node),
		})
		if err != nil {
			return nil, err
		}
		drivers[config.DriverProcess] = pd
	}
	if _, ok := drivers[config.DriverExec]; !ok {
		drivers[config.DriverExec] = ExecDriver{}
	}
	return drivers, nil
}

// Driver returns the guest driver registered under name.
func (r *Runner) Driver(name string) (Driver, bool) {
	d, ok := r.actuator.drivers[name]
	return d, ok
}

// Run rebuilds the state from the log, then follows it: it decides, acts,
// watches guests and holds the node lease until ctx ends (with HaltOnExit:
// until this node's packages are halted and its lease is released). It
// returns an error if the log cannot be read at start, or if the halt of
// HaltOnExit did not finish in time.
//
// Run is the loop's goroutine: it starts the parts and hands each input
// to one of the loop's steps (handle: an event arrived; finished: an
// action finished; woken: a timer fired; onLease: the lease keeper spoke;
// tick: the monitor's tick), which run synchronously and issue effects
// through the parts.
func (r *Runner) Run(ctx context.Context) error {
	lctx, stop := context.WithCancel(context.WithoutCancel(ctx))
	defer func() {
		stop()
		r.wg.Wait()
	}()
	in, err := r.begin(lctx)
	if err != nil {
		return err
	}
	defer r.hb.close()
	flush, stopPets := r.startPetter(ctx)
	defer stopPets()

	tick := time.NewTicker(r.monitorEvery())
	defer tick.Stop()
	var deadline <-chan time.Time
	parent := ctx.Done()
	r.startLease(lctx)
	r.failFast(lctx) // a fail-fast the log shows unanswered, from before a restart
	for {
		if done, err := r.ended(lctx, flush); done {
			return err
		}
		select {
		case <-parent:
			parent = nil
			if r.cfg.HaltOnExit {
				r.member.Observe(Observation{Kind: ObserveShutdown, At: r.now()})
			}
			if !r.member.Shutdown {
				r.logger.Info("host manager stopping; guests keep running", "frozen", r.member.FrozenAt(r.now()))
				return nil
			}
			t := time.NewTimer(r.cfg.ShutdownTimeout)
			defer t.Stop()
			deadline = t.C
			r.logger.Info("halting this node's packages", "timeout", r.cfg.ShutdownTimeout)
			r.processAll(lctx)
		case <-deadline:
			return fmt.Errorf("halt packages of node %s: not down after %s", r.node, r.cfg.ShutdownTimeout)
		case it := <-in:
			r.handle(lctx, it)
		case res := <-r.ex.results:
			r.finished(lctx, res)
		case w := <-r.wake:
			r.woken(lctx, w)
		case le := <-r.lease.events:
			r.onLease(lctx, le)
		case <-tick.C:
			r.tick(lctx)
			tick.Reset(r.monitorEvery())
		}
	}
}

// begin rebuilds the state from the log (the follower's replay), notes
// the guests on this node, and starts the follower after the replay; it
// returns the channel the follower feeds.
func (r *Runner) begin(ctx context.Context) (<-chan item, error) {
	last, err := r.reader.replay(ctx, func(e events.Event) { r.apply(e) }, r.st.Skip)
	if err != nil {
		return nil, fmt.Errorf("replay log: %w", err)
	}
	last = max(last, r.st.Seq)
	r.logger.Info("host manager state rebuilt", "seq", last, "packages", len(r.st.Packages), "concern", len(r.reader.concern))
	for _, pkg := range r.st.PackageNames() {
		r.noteLocal(pkg)
	}
	in := make(chan item, 128) // an item holds an event (~250 B); the follower waits when it is full
	cfg := r.st.Config
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		r.reader.Run(ctx, last+1, cfg, in)
	}()
	return in, nil
}

// startPetter starts the guard's petter, if any, until the returned stop
// (it outlives the loop's context: the clean stop's disarm goes on flush).
func (r *Runner) startPetter(ctx context.Context) (flush chan pet, stop func()) {
	flush = make(chan pet, 1)
	if r.lease.petter == nil {
		return flush, func() {}
	}
	pctx, stopPets := context.WithCancel(context.WithoutCancel(ctx))
	pdone := make(chan struct{})
	go func() {
		defer close(pdone)
		r.lease.petter.run(pctx, flush)
	}()
	return flush, func() {
		stopPets()
		<-pdone
	}
}

// ended reports whether Run must return, and with what: a test hook's
// crash, another instance of this node's host manager took the lease, or
// a clean stop that halted the node's packages (it records the halt,
// releases the lease and disarms the guard first).
func (r *Runner) ended(ctx context.Context, flush chan<- pet) (bool, error) {
	switch {
	case r.test.crashed:
		return true, errCrashed
	case r.member.Superseded:
		return true, fmt.Errorf("host manager of node %s: %w", r.node, ErrSuperseded)
	case r.member.Shutdown && r.allDown():
		r.recordHalted(ctx)
		r.lease.release(ctx)
		if r.lease.petter != nil {
			flush <- pet{Holder: r.lease.holder, Disarm: true, Guests: []GuestRef{}}
		}
		r.logger.Info("host manager stopped; packages halted, lease released")
		return true, nil
	}
	return false, nil
}

// woken is the loop's step when a timer fired: a retry, a delayed action.
func (r *Runner) woken(ctx context.Context, w work) {
	delete(r.appendRetry, w)
	if w.node {
		r.nodeWork(ctx)
	} else {
		r.process(ctx, w.pkg)
	}
}

// tick is the loop's step on the monitor's tick: it checks the guests'
// heartbeats and retries a lease take's record that conflicted.
func (r *Runner) tick(ctx context.Context) {
	if r.member.Held && !r.member.Recorded && r.appendRetry[workNode] == nil {
		// The lease take's record conflicted with a node event the loop
		// has not seen (a malformed one, say): try again.
		r.nodeWork(ctx)
	}
	r.checkGuests(ctx)
}

// handle applies one followed item and reacts.
func (r *Runner) handle(ctx context.Context, it item) {
	if it.skipSeq > 0 {
		r.st.Skip(it.skipSeq, it.skipSub)
		return
	}
	if it.install != nil {
		names := make([]string, 0, len(it.install))
		for name, p := range it.install {
			r.st.Install(p)
			names = append(names, name)
		}
		slices.Sort(names)
		for _, pkg := range names {
			r.noteLocal(pkg)
			r.process(ctx, pkg)
			if r.test.crashed {
				return
			}
		}
		return
	}
	e := it.e
	if r.test.onHandle != nil {
		r.test.onHandle(e)
	}
	if !r.apply(e) {
		return
	}
	if _, ok := e.Data.(events.ConfigApplied); ok {
		r.startLease(ctx)
	}
	r.failFast(ctx)
	if e.Subject == r.node && (isNodeEvent(e) || !r.member.Recorded) {
		// Any event about the node may be what a record of the lease take
		// conflicted with.
		if sc, ok := scopeOf(e); ok && sc == events.ScopeNode {
			r.nodeWork(ctx)
		}
	}
	for _, pkg := range Affected(r.st, e) {
		r.process(ctx, pkg)
		if r.test.crashed {
			return
		}
	}
}

func isNodeEvent(e events.Event) bool {
	switch e.Data.(type) {
	case events.NodeJoined, events.NodeLost, events.NodeHalted, events.NodeFenced,
		events.NodeFrozen, events.NodeThawed, events.NodeLeaseTaken:
		return true
	}
	return false
}

// apply folds e into the state and into this node's membership.
func (r *Runner) apply(e events.Event) bool {
	if !r.st.Apply(e) {
		return false
	}
	if !r.member.Apply(e) {
		return true
	}
	if r.member.Frozen && !r.member.FrozenUntil.IsZero() {
		r.lease.freeze(r.member.FrozenUntil.UnixNano())
	} else if r.member.Frozen {
		r.lease.freeze(math.MaxInt64)
	} else {
		r.lease.freeze(0)
	}
	switch e.Data.(type) {
	case events.NodeFrozen:
		r.logger.Warn("node frozen: deciding nothing, guests keep running, guard disarmed", "until", r.member.FrozenUntil)
	case events.NodeThawed:
		r.logger.Info("node thawed; deciding again")
	}
	if _, ok := e.Data.(events.NodeThawed); ok || r.member.Frozen {
		// The guard's deadline follows at once: past the freeze's end, or
		// back to the usual one before the next renewal writes a lease
		// without frozen_until (which lets the controller count a lapse
		// as a loss again).
		r.lease.petNow()
	}
	return true
}

// ReasonHostShutdown is the node.halted reason of a clean stop of the host
// manager (HaltOnExit): its packages are halted and it leaves on purpose,
// so the controller records no node.lost when its lease is released.
const ReasonHostShutdown = "host_shutdown"

// recordHalted appends node.halted (reason host_shutdown, no by) once this
// node's packages are down in a clean stop, before the lease is released;
// a failure is logged (the controller then records node.lost, as before).
func (r *Runner) recordHalted(ctx context.Context) {
	if !r.member.Joined || !r.member.Held {
		return
	}
	e := r.stamp(events.Event{Source: r.st.Source(), Subject: r.node, Data: events.NodeHalted{Reason: ReasonHostShutdown}})
	actx, cancel := context.WithTimeout(ctx, appendTimeout)
	defer cancel()
	if _, err := r.log.Append(actx, e, events.ExpectLastSeq(events.NodeFilter(r.node), r.st.NodeSeqs[r.node])); err != nil {
		r.logger.Warn("append node.halted", "err", err)
		return
	}
	r.logger.Info("node.halted appended", "reason", ReasonHostShutdown)
}

// active reports whether the runner may decide and act: it holds the lease,
// has not fenced itself and the node is not frozen (Member.MayAct).
func (r *Runner) active() bool { return r.member.MayAct(r.now()) }

// processAll processes every package that concerns this node (the others
// have nothing to decide or act on here: State.LocalNames).
func (r *Runner) processAll(ctx context.Context) {
	for _, pkg := range r.st.LocalNames() {
		r.process(ctx, pkg)
		if r.test.crashed {
			return
		}
	}
}

// process appends the decisions the log asks for about pkg, one at a time,
// then starts the actions it asks for.
func (r *Runner) process(ctx context.Context, pkg string) {
	defer r.noteLocal(pkg)
	if !r.active() || ctx.Err() != nil {
		return
	}
	if r.lease.stale() {
		// Not renewed lately (this process was stopped, or the server is
		// slow): the lease keeper fences the node or renews; act on
		// nothing until then.
		r.retry(ctx, pkgWork(pkg))
		return
	}
	if r.member.Shutdown && !r.haltForShutdown(ctx, pkg) {
		return
	}
	decided := false
	for range 64 {
		d, ok := Decide(r.st, pkg)
		if !ok {
			break
		}
		if !r.appendDecision(ctx, pkg, d) {
			return
		}
		decided = true
	}
	r.act(ctx, pkg)
	if !decided {
		return
	}
	// A decision about pkg (its package.halted) may be what a stop of a
	// package it depends on waits for (Pending's NotBefore). Handle
	// processes those after an event about pkg (Affected); a decision
	// appended here from a timer (an append's retry) or a lease take would
	// otherwise leave them waiting for the stop's bound.
	for _, dep := range upDependencies(r.st, pkg) {
		r.process(ctx, dep)
		if r.test.crashed {
			return
		}
	}
}

// appendDecision appends d about pkg with the expected-sequence check and
// applies it. It returns false on a conflict (the newer event, on its way,
// triggers another round) or an error (retried later).
func (r *Runner) appendDecision(ctx context.Context, pkg string, d events.Event) bool {
	if !r.connected() {
		// Not into the reconnect buffer: a decision waiting there would
		// hold the loop, and be stale when it arrives.
		r.retry(ctx, pkgWork(pkg))
		return false
	}
	d = r.stamp(d)
	actx, cancel := context.WithTimeout(ctx, appendTimeout)
	seq, err := r.log.Append(actx, d, r.st.Expect(pkg))
	cancel()
	if errors.Is(err, events.ErrInvalid) {
		// A bug: what this node builds must fit the schemas. Record the
		// decision without its text rather than retry it forever.
		r.logger.Error("decision refused as invalid; appending a fallback", "package", pkg, "type", d.Type(), "err", err)
		fb, ok := Fallback(d)
		if !ok {
			r.logger.Error("no fallback for an invalid decision; dropped until the log changes", "package", pkg, "type", d.Type())
			return false
		}
		d = r.stamp(fb)
		actx, cancel := context.WithTimeout(ctx, appendTimeout)
		seq, err = r.log.Append(actx, d, r.st.Expect(pkg))
		cancel()
		if errors.Is(err, events.ErrInvalid) {
			r.logger.Error("fallback decision refused as invalid; dropped until the log changes", "package", pkg, "type", d.Type(), "err", err)
			return false
		}
	}
	if errors.Is(err, events.ErrConflict) {
		r.logger.Debug("decision conflicts with a newer event; deciding again", "package", pkg, "type", d.Type())
		return false
	}
	if err != nil {
		if ctx.Err() == nil {
			r.logger.Warn("append decision; retrying", "package", pkg, "type", d.Type(), "err", err)
			r.retry(ctx, pkgWork(pkg))
		}
		return false
	}
	d.Seq = seq
	r.apply(d)
	r.logger.Debug("decided", "package", pkg, "type", d.Type(), "seq", seq)
	if r.test.afterAppend != nil && r.test.afterAppend(d) {
		r.test.crashed = true
		return false
	}
	return true
}

// retry does w again in a second.
func (r *Runner) retry(ctx context.Context, w work) {
	if r.appendRetry[w] != nil {
		return
	}
	r.appendRetry[w] = r.after(time.Second, func() {
		select {
		case r.wake <- w:
		case <-ctx.Done():
		}
	})
}

// haltForShutdown appends package.halting (node_shutdown) for pkg's
// instance or unstarted placement on this node; false if it could not.
func (r *Runner) haltForShutdown(ctx context.Context, pkg string) bool {
	p := r.st.Packages[pkg]
	if p == nil {
		return true
	}
	var epoch uint64
	switch c := p.Current; {
	case p.Inst != nil && !p.Inst.Stopping():
		epoch = p.Inst.Epoch
	case p.Inst == nil && c.Epoch > 0 && c.Node == r.node && !c.Released && c.Halt == nil:
		epoch = c.Epoch
	default:
		return true
	}
	d := events.Event{Source: r.st.Source(), Subject: pkg, CauseID: p.Current.ID,
		Data: events.PackageHalting{Node: r.node, Epoch: epoch, Reason: ReasonNodeShutdown}}
	return r.appendDecision(ctx, pkg, d)
}

// allDown reports whether nothing of any package runs or is placed to run
// on this node.
func (r *Runner) allDown() bool {
	for _, p := range r.st.Packages {
		if p.Inst != nil {
			return false
		}
		if c := p.Current; c.Epoch > 0 && c.Node == r.node && !c.Released {
			return false
		}
	}
	return len(r.ex.flights) == 0
}

// noteLocal records pkg's guest on this node for fencing, and keeps a
// heartbeat subscription for each guest that may run on this node.
func (r *Runner) noteLocal(pkg string) {
	p := r.st.Packages[pkg]
	var cur GuestRef
	has := p != nil && p.Inst != nil && p.Inst.Guest.Phase != GuestDown
	if has {
		cur = GuestRef{Package: pkg, Node: r.node, Guest: p.Inst.Config.Guest}
	}
	old, had := r.lease.setLocal(pkg, cur, has)
	if had && (!has || cur.Name() != old.Name()) {
		r.hb.unfollow(old.Name())
	}
	if had != has || cur.Name() != old.Name() {
		r.lease.petGuests()
	}
	if has {
		r.hb.follow(r.actuator.guests, cur.Guest)
	}
}
