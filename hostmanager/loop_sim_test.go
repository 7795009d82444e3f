package hostmanager

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vmguard/vmguard/events"
)

// handed is an action a Loop handed its Performer.
type handed struct {
	ctx context.Context
	key string
	a   Action
}

// handPerformer is the exported seam's Performer in the test: it keeps
// what it is handed; the test performs it.
type handPerformer struct{ got []handed }

func (p *handPerformer) Start(ctx context.Context, key string, a Action) {
	p.got = append(p.got, handed{ctx: ctx, key: key, a: a})
}

// take returns what was handed since the last call.
func (p *handPerformer) take() []handed {
	out := p.got
	p.got = nil
	return out
}

// TestNewLoopSteps drives the exported loop (NewLoop, the simulator's
// seam) through a package's start with no goroutine: each action is handed
// to the Performer within the step that starts it, the test performs it
// (appends its result as the agent or driver would) and reports its end
// with Finished; the log is the one the runner's loop writes
// (TestLoopSteps). Then a service exits, its restart waits on the
// AfterFunc timer and runs at Woken; a lost lease cancels the run in
// flight.
func TestNewLoopSteps(t *testing.T) {
	ctx := context.Background()
	at := t0
	now := func() time.Time { return at }
	log := &memLog{t: t, now: now}
	perf := &handPerformer{}
	timers := &fakeTimers{now: now}
	var fenced []string
	ids := 0
	newID := func() string {
		ids++
		return fmt.Sprintf("h%d", ids)
	}
	l, err := NewLoop(LoopConfig{Node: me, Log: log, Performer: perf, Now: now, NewID: newID,
		AfterFunc: func(d time.Duration, f func()) Timer { return timers.after(d, f) },
		Fence:     func(why string) { fenced = append(fenced, why) }})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := NewLoop(LoopConfig{Node: me, Log: log}); err == nil {
		t.Fatal("NewLoop without a Performer, clock and timers: no error")
	}
	deliver := func() {
		for _, ev := range log.unread() {
			l.Handle(ctx, ev)
		}
	}
	appendEv := func(ev events.Event) {
		t.Helper()
		if _, err := log.Append(ctx, ev); err != nil {
			t.Fatal(err)
		}
	}
	// perform does each handed action as fakeDo does and reports it.
	perform := func(want ...ActionKind) []handed {
		t.Helper()
		hs := perf.take()
		var kinds []ActionKind
		for _, h := range hs {
			kinds = append(kinds, h.a.Kind)
			pid := 0
			switch h.a.Kind {
			case StartGuest:
				appendEv(h.a.GuestStarted())
			case RunService:
				pid = 42
				appendEv(events.Event{Source: agentSource(h.a.Guest.Name), Subject: h.a.Package, CauseID: h.a.CauseID,
					Data: events.ProcessStarted{Guest: h.a.Guest.Name, Service: h.a.Service.Name, PID: pid, RequestID: h.a.RequestID, Epoch: h.a.Epoch}})
			}
			l.Finished(ctx, h.key, h.a, pid, nil)
		}
		if !slices.Equal(kinds, want) {
			t.Fatalf("actions handed %v, want %v", kinds, want)
		}
		return hs
	}

	appendEv(events.Event{Source: "/vmguard/cli/test", Subject: "test",
		Data: configApplied(t, cfgYAML("restart: unlimited\nbackoff: {delay: 2s, factor: 2, max: 4s}", ""))})
	deliver()
	l.Renewed(at)
	l.LeaseTaken(ctx, at)
	if !l.Member().MayAct(at) {
		t.Fatal("the loop may not act after the lease take and the join")
	}
	appendEv(events.Event{Source: "/vmguard/failover", Subject: "web", Data: events.PackagePlaced{Node: me, Epoch: 1, Reason: "auto_run"}})
	deliver()
	perform(StartGuest)
	deliver()
	runs := perform(RunService, RunService)
	deliver()
	deliver()
	want := []string{"cluster.config_applied", "node.joined", "package.placed", "package.starting", "guest.started",
		"process.started", "process.started", "package.started"}
	if got := log.types(); !slices.Equal(got, want) {
		t.Fatalf("log %v, want %v", got, want)
	}
	// The loop's decisions carry the ids NewID drew, in order.
	var own []string
	for _, ev := range log.all() {
		if strings.HasPrefix(ev.ID, "h") {
			own = append(own, ev.ID+" "+shortTypes([]events.Event{ev})[0])
		}
	}
	if want := []string{"h2 node.joined", "h3 package.starting", "h4 package.started"}; !slices.Equal(own, want) {
		t.Errorf("events with NewID's ids %v, want %v", own, want)
	}
	if p := l.State().Package("web"); p == nil || p.Inst == nil || !p.Inst.Started || l.InFlight() != 0 {
		t.Fatalf("web not started with nothing in flight: %+v, %d in flight", p, l.InFlight())
	}

	// A service exits: its restart waits for the timer.
	a := runs[0].a
	appendEv(events.Event{Source: agentSource(a.Guest.Name), Subject: "web", Data: events.ProcessExited{Guest: a.Guest.Name, Service: a.Service.Name,
		PID: 42, ExitCode: 1, RequestID: a.RequestID, Epoch: a.Epoch}})
	deliver()
	deliver()
	if got := perf.take(); len(got) != 0 || timers.fire() != 0 {
		t.Fatalf("the restart ran before its delay: %d handed", len(got))
	}
	at = at.Add(2 * time.Second)
	if n := timers.fire(); n != 1 {
		t.Fatalf("%d timers fired at the delay, want the run's", n)
	}
	l.Woken(ctx)
	if len(perf.got) != 1 || perf.got[0].a.Kind != RunService {
		t.Fatalf("handed %+v at Woken, want the restart's run", perf.got)
	}
	// The lease is lost while the run is in flight: its context ends,
	// and the canceled end changes nothing.
	run := perf.take()[0]
	l.LeaseLost(ctx, "lease not renewed in time", at)
	if !errors.Is(run.ctx.Err(), context.Canceled) {
		t.Fatalf("the run in flight was not cancelled by the lease's loss: %v", run.ctx.Err())
	}
	n := len(log.all())
	l.Finished(ctx, run.key, run.a, 0, context.Canceled)
	if l.InFlight() != 0 || len(log.all()) != n || len(perf.got) != 0 {
		t.Fatalf("after the canceled end: %d in flight, log %v, %d handed", l.InFlight(), log.types()[n:], len(perf.got))
	}
	if len(fenced) != 0 {
		t.Fatalf("fenced %v: the keeper stops the guests on a lost lease, not the loop", fenced)
	}

	// A host manager started again replays the log (nothing decided),
	// begins, and records its lease take before it acts.
	l2, err := NewLoop(LoopConfig{Node: me, Log: log, Performer: perf, Now: now, NewID: newID,
		AfterFunc: func(d time.Duration, f func()) Timer { return timers.after(d, f) }})
	if err != nil {
		t.Fatal(err)
	}
	n = len(log.all())
	for _, ev := range log.all() {
		l2.Replay(ev)
	}
	l2.Begin(ctx)
	if len(log.all()) != n || len(perf.got) != 0 {
		t.Fatalf("the replay decided or acted: log %v, %d handed", log.types()[n:], len(perf.got))
	}
	at = at.Add(time.Second)
	l2.Renewed(at)
	l2.LeaseTaken(ctx, at)
	if got := log.types()[n:]; len(got) == 0 || got[0] != "node.lease_taken" {
		t.Fatalf("after the lease take the log has %v, want node.lease_taken first", got)
	}
	if !l2.Member().MayAct(at) {
		t.Fatal("the restarted loop may not act after its lease take is recorded")
	}
}
