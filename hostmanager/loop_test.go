package hostmanager

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/vmguard/vmguard/events"
)

// memLog is an in-memory log for the loop's step test (the appender seam):
// it numbers and stamps what is appended, checks it against the schemas,
// and hands back, in order, what the loop has not read yet.
type memLog struct {
	t    *testing.T
	mu   sync.Mutex
	now  func() time.Time
	evs  []events.Event
	read int
	// expect holds, by sequence, the expected-sequence check an append
	// carried.
	expect map[uint64]events.Expect
}

func (l *memLog) Append(_ context.Context, e events.Event, opts ...events.AppendOption) (uint64, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	e.Seq = uint64(len(l.evs) + 1)
	for _, o := range opts {
		if x, ok := o.(events.Expect); ok {
			if l.expect == nil {
				l.expect = map[uint64]events.Expect{}
			}
			l.expect[e.Seq] = x
		}
	}
	if e.ID == "" {
		e.ID = fmt.Sprintf("e%d", e.Seq)
	}
	if e.Time.IsZero() {
		e.Time = l.now()
	}
	if _, err := testCodec().Encode(e); err != nil {
		l.t.Errorf("event %d %s: the log would refuse it: %v", e.Seq, e.Type(), err)
	}
	l.evs = append(l.evs, e)
	return e.Seq, nil
}

// unread returns the events appended since the last call.
func (l *memLog) unread() []events.Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := slices.Clone(l.evs[l.read:])
	l.read = len(l.evs)
	return out
}

// types returns the short types of every event, in order.
func (l *memLog) types() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return shortTypes(l.evs)
}

// fakeDo is the performer of the step test: it records each action and
// appends its result as the actuator and the agent would (a guest that
// starts, a process that runs with pid 42).
type fakeDo struct {
	log  *memLog
	mu   sync.Mutex
	done []ActionKind
}

func (d *fakeDo) perform(ctx context.Context, a Action) (int, error) {
	d.mu.Lock()
	d.done = append(d.done, a.Kind)
	d.mu.Unlock()
	switch a.Kind {
	case StartGuest:
		return 0, d.appendFact(ctx, a.GuestStarted())
	case RunService:
		e := events.Event{Source: agentSource(a.Guest.Name), Subject: a.Package, CauseID: a.CauseID,
			Data: events.ProcessStarted{Guest: a.Guest.Name, Service: a.Service.Name, PID: 42, RequestID: a.RequestID, Epoch: a.Epoch}}
		return 42, d.appendFact(ctx, e)
	}
	return 0, nil
}

func (d *fakeDo) appendFact(ctx context.Context, e events.Event) error {
	_, err := d.log.Append(ctx, e)
	return err
}

// stepRunner is a runner whose loop the test drives step by step: the log
// and the performer are fakes, the clock stands still, the connection is
// up, and the lease keeper does not run (the test tells the loop the lease
// is held, and the last renewal is now).
func stepRunner(t *testing.T, log *memLog, do performer, now func() time.Time) *Runner {
	logger := slog.New(slog.DiscardHandler)
	r := newLoop(me, logger, log, now, func() bool { return true }, noMetrics{}, testHooks{})
	r.actuator = &actuator{node: me, now: now, logger: logger, log: log, drivers: map[string]Driver{}, hb: r.hb}
	r.ex = newExecutor(do, now, logger, &r.wg, r.wake)
	r.lease = newLeaseKeeper(me, "holder1", nil, now, logger, noMetrics{}, r.actuator.driver, nil)
	r.lease.started = true // not run: the test plays it
	r.lease.lastOK.Store(now().UnixNano())
	t.Cleanup(r.wg.Wait)
	return r
}

// TestLoopSteps drives the loop one step at a time, without its goroutine
// (Run), through the seams: the appender (a memory log), the performer (a
// fake agent and driver) and the clock. The lease is taken, the node
// joins, a placement arrives and the loop starts the package: decisions
// appended with their effects issued, each result handed back as a step.
func TestLoopSteps(t *testing.T) {
	now := func() time.Time { return t0 }
	log := &memLog{t: t, now: now}
	do := &fakeDo{log: log}
	r := stepRunner(t, log, do, now)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// deliver hands the loop what the log holds that it has not read, as
	// the follower would: the loop's own decisions too (it ignores them,
	// having applied them when it appended them).
	deliver := func() {
		for _, e := range log.unread() {
			r.handle(ctx, item{e: e})
		}
	}
	// result hands the loop the next action's result.
	result := func() {
		t.Helper()
		select {
		case res := <-r.ex.results:
			r.finished(ctx, res)
		case <-time.After(10 * time.Second):
			t.Fatal("no action result")
		}
	}
	c := configApplied(t, cfgYAML("", ""))
	if _, err := log.Append(ctx, events.Event{Source: "/vmguard/cli/test", Subject: "test", Data: c}); err != nil {
		t.Fatal(err)
	}
	deliver()
	r.onLease(ctx, leaseEvent{held: true, at: now()})
	if !r.active() {
		t.Fatal("not active after the lease take and the join")
	}
	if _, err := log.Append(ctx, events.Event{Source: "/vmguard/failover", Subject: "web",
		Data: events.PackagePlaced{Node: me, Epoch: 1, Reason: "auto_run"}}); err != nil {
		t.Fatal(err)
	}
	deliver() // package.starting appended, the guest's start issued
	result()  // guest started
	deliver() // guest.started read: both services' runs issued
	result()
	result()
	deliver() // process.started read: package.started appended
	deliver() // its own package.started read back: nothing more
	want := []string{"cluster.config_applied", "node.joined", "package.placed", "package.starting", "guest.started",
		"process.started", "process.started", "package.started"}
	if got := log.types(); !slices.Equal(got, want) {
		t.Fatalf("log %v, want %v", got, want)
	}
	// Each decision about web was appended expecting web's last event
	// the loop had read: package.placed (3), then process.started (7).
	for seq, want := range map[uint64]uint64{4: 3, 8: 7} {
		if x, ok := log.expect[seq]; !ok || x != events.ExpectPackageSeq("web", want) {
			t.Errorf("event %d appended with %+v (%v), want web's sequence %d expected", seq, x, ok, want)
		}
	}
	do.mu.Lock()
	defer do.mu.Unlock()
	if want := []ActionKind{StartGuest, RunService, RunService}; !slices.Equal(do.done, want) {
		t.Errorf("actions %v, want %v", do.done, want)
	}
	if p := r.st.Packages["web"]; p == nil || p.Inst == nil || !p.Inst.Started {
		t.Errorf("web not started in the loop's state: %+v", p)
	}
}

// configApplied returns the config.applied of yaml.
func configApplied(t *testing.T, yaml string) events.ConfigApplied {
	h := newHarness(t, yaml)
	return h.log[0].Data.(events.ConfigApplied)
}
