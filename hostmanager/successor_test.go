package hostmanager

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/vmguard/vmguard/events"
)

// successorYAML: app needs web up on its node; web waits at most 1m for it.
const successorYAML = `cluster: test
nodes: [node1, node2]
packages:
  - name: web
    nodes: [node1, node2]
    successor_halt_timeout: 1m
    guest: {name: webvm}
    services:
      - {name: a, cmd: [sleep, "1000"]}
  - name: app
    nodes: [node1, node2]
    dependencies: [{name: web, condition: up, location: same_node}]
    guest: {name: appvm}
    services:
      - {name: s, cmd: [sleep, "1000"]}
`

// startBoth places and starts web and app on this node.
func startBoth(t *testing.T) *harness {
	h := newHarness(t, successorYAML)
	h.place(me, "auto_run")
	h.add("/vmguard/failover", "app", "", events.PackagePlaced{Node: me, Epoch: 1, Reason: "auto_run"})
	h.settle()
	if h.inst() == nil || h.s.Package("app").Inst == nil || !h.s.Package("app").Inst.Started {
		t.Fatal("web and app not both started")
	}
	return h
}

// TestFailedWaitsForSuccessors: a package whose service fails halts only
// once the packages that depend on it (app) halted, as Serviceguard halts a
// package whose dependency fails first: its stops wait (NotBefore), at most
// its successor_halt_timeout from the failure.
func TestFailedWaitsForSuccessors(t *testing.T) {
	t.Run("app halts first", func(t *testing.T) {
		h := startBoth(t)
		h.exit("a", 0)
		eq(t, "web's failure", h.settle(), []string{"service.failed"})
		failedAt := h.lastOf(events.TypeServiceFailed).Time
		acts := Pending(h.s, "web")
		if len(acts) != 1 || acts[0].Kind != StopGuest || !acts[0].NotBefore.Equal(failedAt.Add(time.Minute)) {
			t.Fatalf("web's stops: %+v, want the guest stop held until the failure + 1m", acts)
		}
		if got := Affected(h.s, events.Event{Subject: "app", Data: events.PackageHalted{}}); len(got) != 2 || got[1] != "web" {
			t.Errorf("Affected by an app event: %v, want app and web", got)
		}
		h.add("/vmguard/failover", "app", "", events.PackageHalting{Node: me, Epoch: 1, Reason: "dependency: web"})
		eq(t, "app halts, then web", h.settle(), []string{"process.exited", "guest.stopped", "package.halted", "guest.stopped", "package.failed"})
		if h.log[len(h.log)-3].Subject != "app" || h.last().Subject != "web" {
			t.Errorf("order: app's package.halted, then web's stop: %s", shortTypes(h.log[len(h.log)-5:]))
		}
	})
	t.Run("at most successor_halt_timeout", func(t *testing.T) {
		h := startBoth(t)
		h.exit("a", 0)
		eq(t, "web's failure", h.settle(), []string{"service.failed"})
		h.advance(59 * time.Second)
		eq(t, "before the bound", h.settle(), nil)
		h.advance(time.Second)
		eq(t, "at the bound", h.settle(), []string{"guest.stopped", "package.failed"})
		if h.s.Package("app").Inst == nil {
			t.Error("app halted by the host manager: only the controller halts it")
		}
	})
	t.Run("an operator halt does not wait", func(t *testing.T) {
		h := startBoth(t)
		h.add("/vmguard/cli/op", "web", "", events.PackageHalting{Node: me, Epoch: 1, Reason: "x", By: "op"})
		for _, a := range Pending(h.s, "web") {
			if !a.NotBefore.IsZero() {
				t.Errorf("held: %+v", a)
			}
		}
	})
}

// refusingLog fails the first append of one event type (a lost reply, a
// timeout), as the log can; the loop retries it on its timer.
type refusingLog struct {
	*memLog
	refuse string
}

func (l *refusingLog) Append(ctx context.Context, e events.Event, opts ...events.AppendOption) (uint64, error) {
	if l.refuse != "" && e.Type() == l.refuse {
		l.refuse = ""
		return 0, errors.New("append timed out")
	}
	return l.memLog.Append(ctx, e, opts...)
}

// TestDependencyStopsWhenRetriedHaltLands: web failed and waits for app,
// which depends on it, to halt; app's package.halted fails to append and
// goes out on the retry's timer: web's stop follows at once, not at its
// successor_halt_timeout (the simulator's dependency seed 992 waited the
// bound, past the end of its run).
func TestDependencyStopsWhenRetriedHaltLands(t *testing.T) {
	ctx := context.Background()
	at := t0
	now := func() time.Time { return at }
	log := &refusingLog{memLog: &memLog{t: t, now: now}}
	perf := &handPerformer{}
	timers := &fakeTimers{now: now}
	l, err := NewLoop(LoopConfig{Node: me, Log: log, Performer: perf, Now: now,
		AfterFunc: func(d time.Duration, f func()) Timer { return timers.after(d, f) }})
	if err != nil {
		t.Fatal(err)
	}
	appendEv := func(ev events.Event) {
		t.Helper()
		if _, err := log.Append(ctx, ev); err != nil {
			t.Fatal(err)
		}
	}
	// settle delivers the log and performs what is handed, as the agent
	// and the driver would, until nothing more happens.
	settle := func() {
		for range 20 {
			for _, ev := range log.unread() {
				l.Handle(ctx, ev)
			}
			hs := perf.take()
			if len(hs) == 0 {
				return
			}
			for _, h := range hs {
				a, pid := h.a, 0
				switch a.Kind {
				case StartGuest:
					appendEv(a.GuestStarted())
				case StopGuest:
					appendEv(a.GuestStopped(a.Reason))
				case RunService:
					pid = 7
					appendEv(events.Event{Source: agentSource(a.Guest.Name), Subject: a.Package, CauseID: a.CauseID,
						Data: events.ProcessStarted{Guest: a.Guest.Name, Service: a.Service.Name, PID: pid, RequestID: a.RequestID, Epoch: a.Epoch}})
				case StopService:
					appendEv(events.Event{Source: agentSource(a.Guest.Name), Subject: a.Package, Data: events.ProcessExited{Guest: a.Guest.Name,
						Service: a.Service.Name, PID: a.PID, ExitCode: -1, Signal: "SIGTERM", RequestID: a.RequestID, Epoch: a.Epoch, Reason: "stopped"}})
				}
				l.Finished(ctx, h.key, a, pid, nil)
			}
		}
		t.Fatal("the loop did not settle")
	}
	appendEv(events.Event{Source: "/vmguard/cli/test", Subject: "test", Data: configApplied(t, successorYAML)})
	settle()
	l.Renewed(at)
	l.LeaseTaken(ctx, at)
	for _, pkg := range []string{"web", "app"} {
		appendEv(events.Event{Source: "/vmguard/failover", Subject: pkg, Data: events.PackagePlaced{Node: me, Epoch: 1, Reason: "auto_run"}})
	}
	settle()
	web := l.State().Package("web").Inst
	if web == nil || !web.Started || l.State().Package("app").Inst == nil || !l.State().Package("app").Inst.Started {
		t.Fatalf("web and app not both started: %v", log.types())
	}
	sv := web.Service("a")
	appendEv(events.Event{Source: agentSource("webvm"), Subject: "web", Data: events.ProcessExited{Guest: "webvm", Service: "a",
		PID: sv.Proc.PID, ExitCode: 0, RequestID: sv.Proc.RequestID, Epoch: 1}})
	settle()
	log.refuse = events.TypePackageHalted
	appendEv(events.Event{Source: "/vmguard/failover", Subject: "app", Data: events.PackageHalting{Node: me, Epoch: 1, Reason: "dependency: web"}})
	settle()
	if p := l.State().Package("app"); p.Inst == nil || log.refuse != "" {
		t.Fatalf("app's package.halted was not refused once: %v", log.types())
	}
	at = at.Add(time.Second)
	if n := timers.fire(); n == 0 {
		t.Fatal("no timer for the refused append's retry")
	}
	l.Woken(ctx)
	hs := perf.take()
	if l.State().Package("app").Inst != nil || len(hs) != 1 || hs[0].a.Package != "web" || hs[0].a.Kind != StopGuest {
		t.Fatalf("after app's package.halted went out on the retry: handed %+v, log %v; want web's guest stop at once", hs, log.types())
	}
}
