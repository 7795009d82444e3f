package failover

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/vmguard/vmguard/events"
	"github.com/vmguard/vmguard/internal/lease"
)

// This file is the simulator's entry point into the controller's loop
// (docs/sim.md): NewLoop builds the Runner's loop, the same code Run
// drives, over effects the caller provides, and Loop exposes its
// synchronous steps. Nothing here starts a goroutine, reads the wall clock
// or opens a connection; the caller decides when each step happens.

// DecisionLog is what the loop appends its decisions to and checks them
// against (events.Log implements it): an append guarded by the options'
// expected sequences, an atomic batch, a subject's tail (the node-current
// check before a placement) and the log's last sequence (the catch-up
// before deciding as a new leader).
type DecisionLog interface {
	Append(ctx context.Context, e events.Event, opts ...events.AppendOption) (uint64, error)
	AppendBatch(ctx context.Context, items ...events.BatchItem) ([]uint64, error)
	Tail(ctx context.Context, subject string) (events.SubjectTail, error)
	LastSeq(ctx context.Context) (uint64, error)
}

// LeaseStore is where the loop reads the node leases: the lease bucket in
// production.
type LeaseStore interface {
	// Open makes the store ready to read (ttl: the configured
	// node_timeout): false with no error when there is nothing to read
	// yet; it is asked again at the next check.
	Open(ctx context.Context, ttl time.Duration) (bool, error)
	// Get reads node's lease (an encoded lease.Value): found false when
	// it is missing, deleted or expired.
	Get(ctx context.Context, node string) (raw []byte, found bool, err error)
	// GetAtLeader reads node's lease from the store's leader.
	GetAtLeader(ctx context.Context, node string) (v lease.Value, found bool, err error)
}

// StoreProber judges whether the lease store has been taking writes for a
// node_timeout (lease.Prober in production; a simulator feeds a
// lease.Judge). Run is never called by the Loop.
type StoreProber interface {
	Run(ctx context.Context)
	SetTTL(ttl time.Duration)
	Decide(now time.Time) (lease.Verdict, time.Time)
}

// LoopConfig configures a Loop. Log, Leases, Prober, Now and Clock are
// required.
type LoopConfig struct {
	// ID names the instance in its log messages.
	ID string
	// Log takes the decisions.
	Log DecisionLog
	// Leases and Prober are what the lease checks read.
	Leases LeaseStore
	Prober StoreProber
	// Now stamps decisions and judges freezes (Config.Now).
	Now func() time.Time
	// Clock is the monotonic clock: the prober's verdicts are asked at its
	// time, and the start grace and unsure appends are measured by it.
	Clock lease.Clock
	// StartGrace is Config.StartGrace.
	StartGrace time.Duration
	// Logger receives the loop's messages (default: discard).
	Logger *slog.Logger
}

// Loop is the failover controller's loop without Run's goroutines: the
// simulator's entry point. Each method is one step of Runner.loop, run
// synchronously; leadership is what the caller says it is (LeadChanged),
// with no lease of its own. A Loop is not safe for concurrent use.
type Loop struct{ r *Runner }

// NewLoop returns the loop of a fresh controller (empty state, standing
// by) over cfg's effects.
func NewLoop(cfg LoopConfig) (*Loop, error) {
	if cfg.Log == nil || cfg.Leases == nil || cfg.Prober == nil || cfg.Now == nil || cfg.Clock == nil {
		return nil, errors.New("new failover loop: Log, Leases, Prober, Now and Clock are required")
	}
	// Log is never used: the steps append to out, and nothing opens
	// buckets or follows the log.
	r, err := NewRunner(Config{Log: &events.Log{}, ID: cfg.ID, Now: cfg.Now, StartGrace: cfg.StartGrace, Logger: cfg.Logger, NoSnapshot: true})
	if err != nil {
		return nil, err
	}
	r.out = cfg.Log
	r.mono = cfg.Clock
	r.live = newLiveness(simLeases{cfg.Leases}, cfg.Prober, cfg.Now, cfg.Clock, r.cfg.CheckInterval*4, r.logger)
	// Leadership is the caller's: the loop decides while LeadChanged(true)
	// holds.
	r.el.always()
	return &Loop{r: r}, nil
}

// Handle is the step of a message read from the log: apply e and, while
// deciding, answer it. Events at or below the state's sequence are
// ignored.
func (l *Loop) Handle(ctx context.Context, e events.Event) { l.r.handle(ctx, item{e: e}) }

// Drained is the step after the messages at hand were handled.
func (l *Loop) Drained(ctx context.Context) { l.r.drained(ctx) }

// LeadChanged is the step of the elector's news: leading or not.
func (l *Loop) LeadChanged(ctx context.Context, leading bool) { l.r.leadChanged(ctx, leading) }

// ReconcileTick is the step of each reconcile interval
// (DefaultReconcileInterval).
func (l *Loop) ReconcileTick(ctx context.Context) { l.r.reconcileTick(ctx) }

// CheckTick is the step of each check interval (DefaultCheckInterval):
// freezes that ended, and the node leases.
func (l *Loop) CheckTick(ctx context.Context) { l.r.checkTick(ctx) }

// Seq is the stream sequence of the last event the loop applied.
func (l *Loop) Seq() uint64 { return l.r.state.Seq }

// Stats returns what the loop did so far; its Leader is always true
// (leadership is the caller's).
func (l *Loop) Stats() Stats { return l.r.Stats() }

// simLeases is the leaseStore of a caller's LeaseStore.
type simLeases struct{ s LeaseStore }

func (s simLeases) open(ctx context.Context, ttl time.Duration) (bool, error) {
	return s.s.Open(ctx, ttl)
}

func (s simLeases) get(ctx context.Context, node string) ([]byte, bool, error) {
	return s.s.Get(ctx, node)
}

func (s simLeases) getAtLeader(ctx context.Context, node string) (lease.Value, bool, error) {
	return s.s.GetAtLeader(ctx, node)
}

// State is the loop's state, for the caller to read between steps (it
// must not change it).
func (l *Loop) State() *State { return l.r.state }
