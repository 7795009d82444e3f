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
	"github.com/vmguard/vmguard/internal/natsd/natstest"
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

// all returns every event, in order.
func (l *memLog) all() []events.Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.evs)
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
	// unreported: a run is accepted (pid 42) and its process.started
	// never appended.
	unreported bool
}

func (d *fakeDo) perform(ctx context.Context, a Action) (int, error) {
	d.mu.Lock()
	d.done = append(d.done, a.Kind)
	d.mu.Unlock()
	switch a.Kind {
	case StartGuest:
		return 0, d.appendFact(ctx, a.GuestStarted())
	case RunService:
		if d.unreported {
			return 42, nil
		}
		e := events.Event{Source: agentSource(a.Guest.Name), Subject: a.Package, CauseID: a.CauseID,
			Data: events.ProcessStarted{Guest: a.Guest.Name, Service: a.Service.Name, PID: 42, RequestID: a.RequestID, Epoch: a.Epoch}}
		return 42, d.appendFact(ctx, e)
	}
	return 0, nil
}

// kinds returns the kinds of the actions performed, in order.
func (d *fakeDo) kinds() []ActionKind {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.done)
}

func (d *fakeDo) appendFact(ctx context.Context, e events.Event, opts ...events.AppendOption) error {
	_, err := d.log.Append(ctx, e, opts...)
	return err
}

// fakeTimers is the step test's afterFunc: a timer fires only when the
// test calls fire.
type fakeTimers struct {
	now    func() time.Time
	mu     sync.Mutex
	timers []*fakeTimer
}

type fakeTimer struct {
	due             time.Time
	f               func()
	stopped, called bool
}

func (t *fakeTimer) Stop() bool {
	was := !t.stopped && !t.called
	t.stopped = true
	return was
}

func (ft *fakeTimers) after(d time.Duration, f func()) timer {
	ft.mu.Lock()
	defer ft.mu.Unlock()
	t := &fakeTimer{due: ft.now().Add(d), f: f}
	ft.timers = append(ft.timers, t)
	return t
}

// fire calls, in the test's goroutine, every timer due by now that was
// neither stopped nor fired, and returns how many.
func (ft *fakeTimers) fire() int {
	ft.mu.Lock()
	var due []*fakeTimer
	for _, t := range ft.timers {
		if !t.stopped && !t.called && !t.due.After(ft.now()) {
			t.called = true
			due = append(due, t)
		}
	}
	ft.mu.Unlock()
	for _, t := range due {
		t.f()
	}
	return len(due)
}

// loopEnv is a runner whose loop the test drives step by step: the log,
// the performer and the timers are fakes, the clock moves when the test
// says, the connection is up, and the lease keeper does not run (the test
// tells the loop the lease is held, and the last renewal is now).
type loopEnv struct {
	t      *testing.T
	ctx    context.Context
	at     time.Time
	log    *memLog
	do     *fakeDo
	timers *fakeTimers
	r      *Runner
}

func newLoopEnv(t *testing.T) *loopEnv {
	ctx, cancel := context.WithCancel(context.Background())
	e := &loopEnv{t: t, ctx: ctx, at: t0}
	now := func() time.Time { return e.at }
	e.log = &memLog{t: t, now: now}
	e.do = &fakeDo{log: e.log}
	e.timers = &fakeTimers{now: now}
	logger := slog.New(slog.DiscardHandler)
	r := newLoop(me, logger, e.log, now, e.timers.after, func() bool { return true }, noMetrics{}, testHooks{})
	r.actuator = &actuator{node: me, now: now, logger: logger, log: e.log, drivers: map[string]Driver{}, hb: r.hb}
	r.ex = newExecutor(e.do, now, r.after, logger, &r.wg, r.wake)
	r.lease = newLeaseKeeper(me, "holder1", nil, now, logger, noMetrics{}, r.actuator.driver, nil)
	r.lease.started = true // not run: the test plays it
	r.lease.lastOK.Store(now().UnixNano())
	e.r = r
	t.Cleanup(func() {
		cancel()
		r.wg.Wait()
	})
	return e
}

// deliver hands the loop what the log holds that it has not read, as the
// follower would: the loop's own decisions too (it ignores them, having
// applied them when it appended them).
func (e *loopEnv) deliver() {
	for _, ev := range e.log.unread() {
		e.r.handle(e.ctx, item{e: ev})
	}
}

// result hands the loop the next action's result.
func (e *loopEnv) result() {
	e.t.Helper()
	select {
	case res := <-e.r.ex.results:
		e.r.finished(e.ctx, res)
	case <-time.After(10 * time.Second):
		e.t.Fatal("no action result")
	}
}

// append appends e as someone else (the controller, an agent) would.
func (e *loopEnv) append(ev events.Event) {
	e.t.Helper()
	if _, err := e.log.Append(e.ctx, ev); err != nil {
		e.t.Fatal(err)
	}
}

// startWeb configures the cluster with svc added to web's services, takes
// the lease, places web on this node and runs the loop's steps until web
// started.
func (e *loopEnv) startWeb(svc string) {
	e.t.Helper()
	e.append(events.Event{Source: "/vmguard/cli/test", Subject: "test", Data: configApplied(e.t, cfgYAML(svc, ""))})
	e.deliver()
	e.r.onLease(e.ctx, leaseEvent{held: true, at: e.at})
	if !e.r.active() {
		e.t.Fatal("not active after the lease take and the join")
	}
	e.append(events.Event{Source: "/vmguard/failover", Subject: "web", Data: events.PackagePlaced{Node: me, Epoch: 1, Reason: "auto_run"}})
	e.deliver() // package.starting appended, the guest's start issued
	e.result()  // guest started
	e.deliver() // guest.started read: both services' runs issued
	e.result()
	e.result()
	e.deliver() // process.started read: package.started appended
	e.deliver() // its own package.started read back: nothing more
}

// TestLoopSteps drives the loop one step at a time, without its goroutine
// (Run), through the seams: the appender (a memory log), the performer (a
// fake agent and driver) and the clock. The lease is taken, the node
// joins, a placement arrives and the loop starts the package: decisions
// appended with their effects issued, each result handed back as a step.
func TestLoopSteps(t *testing.T) {
	e := newLoopEnv(t)
	e.startWeb("")
	want := []string{"cluster.config_applied", "node.joined", "package.placed", "package.starting", "guest.started",
		"process.started", "process.started", "package.started"}
	if got := e.log.types(); !slices.Equal(got, want) {
		t.Fatalf("log %v, want %v", got, want)
	}
	// Each decision about web was appended expecting web's last event
	// the loop had read: package.placed (3), then process.started (7).
	for seq, want := range map[uint64]uint64{4: 3, 8: 7} {
		if x, ok := e.log.expect[seq]; !ok || x != events.ExpectPackageSeq("web", want) {
			t.Errorf("event %d appended with %+v (%v), want web's sequence %d expected", seq, x, ok, want)
		}
	}
	if got, want := e.do.kinds(), []ActionKind{StartGuest, RunService, RunService}; !slices.Equal(got, want) {
		t.Errorf("actions %v, want %v", got, want)
	}
	if p := e.r.st.Packages["web"]; p == nil || p.Inst == nil || !p.Inst.Started {
		t.Errorf("web not started in the loop's state: %+v", p)
	}
}

// restartArmed starts web with a restart delay of 2s, makes its service a
// exit and returns once the loop armed the restart's run (nothing fired).
func restartArmed(t *testing.T) *loopEnv {
	e := newLoopEnv(t)
	e.startWeb("restart: unlimited\nbackoff: {delay: 2s, factor: 2, max: 4s}")
	var run events.ProcessStarted
	for _, ev := range e.log.all() {
		if d, ok := ev.Data.(events.ProcessStarted); ok && d.Service == "a" {
			run = d
		}
	}
	e.append(events.Event{Source: agentSource("webvm"), Subject: "web", Data: events.ProcessExited{Guest: "webvm", Service: "a",
		PID: run.PID, ExitCode: 1, RequestID: run.RequestID, Epoch: run.Epoch}})
	e.deliver() // process.exited read: service.restarting appended, its run armed
	if got := e.log.types(); got[len(got)-1] != "service.restarting" {
		t.Fatalf("log ends %v, want service.restarting", got[len(got)-3:])
	}
	e.deliver()
	if n := e.timers.fire(); n != 0 {
		t.Fatalf("%d timers fired before the delay", n)
	}
	return e
}

// fireOne fires the timers due and fails unless exactly one fired and
// woke the loop for web; it hands the wake to the loop's step, after the
// clock moved by step.
func (e *loopEnv) fireOne(when string, step time.Duration) {
	e.t.Helper()
	if n := e.timers.fire(); n != 1 {
		e.t.Fatalf("%d timers fired %s, want the run's", n, when)
	}
	e.at = e.at.Add(step)
	select {
	case w := <-e.r.wake:
		if w != pkgWork("web") {
			e.t.Fatalf("woken for %+v, want web", w)
		}
		e.r.woken(e.ctx, w)
	default:
		e.t.Fatalf("the timer did not wake the loop %s", when)
	}
}

// TestLoopTimerStep: a service exits, the loop decides its restart after
// the backoff's delay and arms a timer instead of running it; nothing runs
// before the timer fires, and the timer's step (woken) runs it.
func TestLoopTimerStep(t *testing.T) {
	e := restartArmed(t)
	e.at = e.at.Add(2 * time.Second)
	e.fireOne("at the delay", 0)
	e.result()
	if got, want := e.do.kinds(), []ActionKind{StartGuest, RunService, RunService, RunService}; !slices.Equal(got, want) {
		t.Errorf("actions %v, want %v: the restart's run once the timer fired", got, want)
	}
}

// TestLoopTimerClockStepBack: the clock steps back between a timer firing
// and the loop taking its wake, so that the action woken is not due yet by
// the clock: the loop arms it again for the rest of the delay and runs it
// then. (It was not armed again, the timer of that key having fired with
// the same due time, and nothing woke the package after: a failing
// package's stop waited forever, simulator seed 2485 with dependencies.)
func TestLoopTimerClockStepBack(t *testing.T) {
	e := restartArmed(t)
	e.at = e.at.Add(2 * time.Second)
	e.fireOne("at the delay", -745*time.Millisecond) // stepped back before the loop reads the wake
	if got, want := e.do.kinds(), []ActionKind{StartGuest, RunService, RunService}; !slices.Equal(got, want) {
		t.Fatalf("actions %v, want %v: nothing before the delay by the clock", got, want)
	}
	e.at = e.at.Add(745 * time.Millisecond)
	e.fireOne("at the delay by the stepped-back clock", 0)
	e.result()
	if got, want := e.do.kinds(), []ActionKind{StartGuest, RunService, RunService, RunService}; !slices.Equal(got, want) {
		t.Errorf("actions %v, want %v: the restart's run once its timer fired again", got, want)
	}
}

// TestLoopUnreportedRunIsGuarded: the exit the loop records for a run
// whose process.started did not come within ReportTimeout is appended
// guarded by the package's last sequence the loop has read, so that a host
// reading the log late (the process.started may be there, unread) records
// nothing rather than the exit of a process that runs.
func TestLoopUnreportedRunIsGuarded(t *testing.T) {
	e := newLoopEnv(t)
	e.do.unreported = true
	e.append(events.Event{Source: "/vmguard/cli/test", Subject: "test", Data: configApplied(e.t, cfgYAML("", ""))})
	e.deliver()
	e.r.onLease(e.ctx, leaseEvent{held: true, at: e.at})
	e.append(events.Event{Source: "/vmguard/failover", Subject: "web", Data: events.PackagePlaced{Node: me, Epoch: 1, Reason: "auto_run"}})
	e.deliver() // package.starting, the guest's start
	e.result()
	e.deliver() // guest.started: the runs, accepted, never reported
	e.result()
	e.result()
	e.deliver()
	read := e.r.st.PackageSeq("web")
	e.at = e.at.Add(ReportTimeout + time.Second)
	e.r.lease.lastOK.Store(e.at.UnixNano()) // the lease renewed meanwhile
	if n := e.timers.fire(); n == 0 {
		t.Fatal("no report timer fired after ReportTimeout")
	}
	select {
	case w := <-e.r.wake:
		e.r.woken(e.ctx, w)
	default:
		t.Fatal("the report timer did not wake the loop")
	}
	var exit events.Event
	natstest.WaitFor(t, 10*time.Second, "the unreported run's process.exited", func() bool {
		for _, ev := range e.log.all() {
			if x, ok := ev.Data.(events.ProcessExited); ok && x.Reason == ReasonUnreported {
				exit = ev
				return true
			}
		}
		return false
	})
	e.log.mu.Lock()
	x, ok := e.log.expect[exit.Seq]
	e.log.mu.Unlock()
	if !ok || x != events.ExpectPackageSeq("web", read) {
		t.Errorf("unreported exit appended with %+v (%v), want web's last sequence read, %d, expected", x, ok, read)
	}
}
