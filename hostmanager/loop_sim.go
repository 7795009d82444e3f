package hostmanager

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/vmguard/vmguard/events"
)

// This file is the simulator's entry point into the host manager's loop
// (docs/sim.md), as failover.NewLoop is into the controller's: NewLoop
// builds the Runner's loop, the same code Run drives, over effects the
// caller provides, and Loop exposes its synchronous steps. Nothing here
// starts a goroutine, reads the wall clock or opens a connection: the
// actions go to the caller's Performer, the timers to its AfterFunc, the
// node lease and the guests' heartbeats are what the caller reports (the
// lease keeper and the heartbeat subscriptions are tied to NATS and are
// not part of a Loop), and the caller decides when each step happens.

// Appender is what the loop appends its decisions and node records to:
// an append guarded by the options' expected sequences (events.Log
// implements it).
type Appender interface {
	Append(ctx context.Context, e events.Event, opts ...events.AppendOption) (uint64, error)
}

// Performer performs a Loop's actions (the actuator in production: guest
// drivers and agent requests). Start must not block: the caller performs
// a, appends its result event (GuestStarted and the like) as the actuator
// does, and reports the end with Loop.Finished, key and a as given. ctx
// ends when the loop cancels the action (a fence, the lease lost, a start
// the log no longer asks for); the caller then reports context.Canceled.
type Performer interface {
	Start(ctx context.Context, key string, a Action)
}

// Timer is a timer AfterFunc started (*time.Timer).
type Timer interface{ Stop() bool }

// LoopConfig configures a Loop. Node, Log, Performer, Now and AfterFunc
// are required.
type LoopConfig struct {
	// Node is the node the loop runs on.
	Node string
	// Log takes the decisions.
	Log Appender
	// Performer takes the actions.
	Performer Performer
	// Now is the node's clock (Config.Now).
	Now func() time.Time
	// AfterFunc calls f after d: the loop's timers (a delayed action, an
	// append's retry). f only queues work: call Loop.Woken after it.
	AfterFunc func(d time.Duration, f func()) Timer
	// Connected reports whether the log's connection is up (default:
	// always).
	Connected func() bool
	// Fence stops every guest of the node when it fences itself (the
	// lease keeper's fence in production), synchronously (default: none).
	Fence func(why string)
	// NewID draws the ids of the events the loop appends, its decisions
	// and facts, and first the instance's lease holder id (default events.NewID, random: a simulator gives its own
	// to replay a seed to the same events).
	NewID func() string
	// Logger receives the loop's messages (default: discard).
	Logger *slog.Logger
}

// Loop is the host manager's loop without Run's goroutines: the
// simulator's entry point. Each method is one step of Run, run
// synchronously. A Loop is not safe for concurrent use.
type Loop struct{ r *Runner }

// NewLoop returns the loop of a fresh host manager (empty state, no
// lease) over cfg's effects.
func NewLoop(cfg LoopConfig) (*Loop, error) {
	if err := events.CheckName("node", cfg.Node); err != nil {
		return nil, err
	}
	if cfg.Log == nil || cfg.Performer == nil || cfg.Now == nil || cfg.AfterFunc == nil {
		return nil, errors.New("new host manager loop: Log, Performer, Now and AfterFunc are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Connected == nil {
		cfg.Connected = func() bool { return true }
	}
	if cfg.NewID == nil {
		cfg.NewID = events.NewID
	}
	if cfg.Fence == nil {
		cfg.Fence = func(string) {}
	}
	after := func(d time.Duration, f func()) timer { return cfg.AfterFunc(d, f) }
	logger := cfg.Logger.With("node", cfg.Node)
	r := newLoop(cfg.Node, logger, cfg.Log, cfg.Now, after, cfg.Connected, noMetrics{}, testHooks{})
	r.fenceGuests, r.newID = cfg.Fence, cfg.NewID
	// The actuator is kept for what the loop asks of it (a guest's
	// connection: none, so no heartbeat subscription); it performs
	// nothing.
	r.actuator = &actuator{node: cfg.Node, now: cfg.Now, logger: logger, log: cfg.Log, drivers: map[string]Driver{}, hb: r.hb}
	r.ex = newExecutor(loopFacts{log: cfg.Log, stamp: r.stamp}, cfg.Now, r.after, logger, &r.wg, r.wake)
	r.ex.hand = cfg.Performer.Start
	// The lease keeper does not run: the caller reports the lease
	// (LeaseTaken, Renewed, LeaseLost).
	// Its holder (node.lease_taken's) is the instance's first NewID.
	r.lease = newLeaseKeeper(cfg.Node, cfg.NewID(), nil, cfg.Now, logger, noMetrics{}, r.actuator.driver, nil)
	r.lease.started = true
	return &Loop{r: r}, nil
}

// Replay is the step of an event of the start's replay (Run's begin): it
// is folded into the state and the membership, and nothing is decided.
func (l *Loop) Replay(e events.Event) { l.r.apply(e) }

// Begin ends the replay, as Run does before it follows the log: it notes
// the guests the log shows on this node, configures the lease's timing
// from the configuration in force, and fences the node for a fail-fast
// failure the log shows unanswered.
func (l *Loop) Begin(ctx context.Context) {
	for _, pkg := range l.r.st.PackageNames() {
		l.r.noteLocal(pkg)
	}
	l.r.startLease(ctx)
	l.r.failFast(ctx)
}

// Handle is the step of an event read from the log (the follower's, after
// the replay too): apply e and react. Events at or below the state's
// sequence are ignored.
func (l *Loop) Handle(ctx context.Context, e events.Event) { l.r.handle(ctx, item{e: e}) }

// Finished is the step of an action's end: the Performer's report of the
// action it was given under key, with the pid of a RunService and its
// error (nil: done and its result appended).
func (l *Loop) Finished(ctx context.Context, key string, a Action, pid int, err error) {
	if f := l.r.ex.flights[key]; f != nil {
		f.cancel()
	}
	l.r.finished(ctx, result{a: a, key: key, err: err, pid: pid})
}

// Woken is the step of the timers that fired: the work they queued.
func (l *Loop) Woken(ctx context.Context) {
	for {
		select {
		case w := <-l.r.wake:
			l.r.woken(ctx, w)
		default:
			return
		}
	}
}

// Tick is the step of the guest monitor's tick (every MonitorEvery).
func (l *Loop) Tick(ctx context.Context) { l.r.tick(ctx) }

// MonitorEvery is how often Tick is due.
func (l *Loop) MonitorEvery() time.Duration { return l.r.monitorEvery() }

// Renewed notes a renewal of the node lease that succeeded, sent at sent
// (the node's clock); a take counts as one.
func (l *Loop) Renewed(sent time.Time) { l.r.lease.lastOK.Store(sent.UnixNano()) }

// LeaseTaken is the step of the lease keeper's news that it took the node
// lease at at (first, or again after a fence); Renewed(at) goes first.
func (l *Loop) LeaseTaken(ctx context.Context, at time.Time) {
	l.r.onLease(ctx, leaseEvent{held: true, at: at})
}

// LeaseLost is the step of the lease keeper's news that it lost the lease
// (reason) at at, having stopped the node's guests itself.
func (l *Loop) LeaseLost(ctx context.Context, reason string, at time.Time) {
	l.r.lease.lastOK.Store(0)
	l.r.onLease(ctx, leaseEvent{reason: reason, at: at})
}

// Heartbeat notes a heartbeat of guest from this node, now.
func (l *Loop) Heartbeat(guest string) { l.r.hb.beat(guest) }

// State is the state the loop folded; read it, do not change it.
func (l *Loop) State() *State { return l.r.st }

// Member is the node's membership the loop keeps; read it, do not change
// it.
func (l *Loop) Member() *Member { return l.r.member }

// InFlight reports how many actions the loop has handed out whose end it
// has not been told.
func (l *Loop) InFlight() int { return len(l.r.ex.flights) }

// loopFacts is a Loop's executor performer: the actions go to the caller
// (executor.hand), and a fact the loop records itself (a process the
// agent did not report) is appended once, its failure returned, instead
// of retried on the machine's clock as the actuator does.
type loopFacts struct {
	log   Appender
	stamp func(events.Event) events.Event
}

func (loopFacts) perform(context.Context, Action) (int, error) {
	return 0, errors.New("a Loop's actions go to its Performer")
}

func (f loopFacts) appendFact(ctx context.Context, e events.Event, opts ...events.AppendOption) error {
	_, err := f.log.Append(ctx, f.stamp(e), opts...)
	return err
}
