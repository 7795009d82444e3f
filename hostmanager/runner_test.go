package hostmanager

import (
	"context"
	"errors"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vmguard/vmguard/events"
)

// A service that always exits with restart: 2 restarts exactly twice, then
// fails; the package fails only once everything of it has stopped.
func TestRunnerRestartLimitThenPackageFails(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.applyConfig(testYAML("none", `
		cmd: [sh, -c, "exit 1"]
		restart: 2`))
	e.startRunner("node1", nil, nil)
	e.place("web", "node1")
	e.waitCount("web", "package.failed", 1, 30*time.Second)

	if n := e.count("web", "service.restarting"); n != 2 {
		t.Errorf("service.restarting: %d, want 2", n)
	}
	if n := e.count("web", "service.failed"); n != 1 {
		t.Errorf("service.failed: %d, want 1", n)
	}
	if n := e.count("web", "process.started"); n != 3 {
		t.Errorf("process.started: %d, want 3 (first run and two restarts)", n)
	}
	evs := e.pkgEvents("web")
	failed, _ := last(evs, "web", "package.failed")
	stopped, ok := last(evs, "web", "guest.stopped")
	if !ok || stopped.Seq > failed.Seq {
		t.Errorf("package.failed (seq %d) before guest.stopped (ok %v, seq %d)", failed.Seq, ok, stopped.Seq)
	}
	if x, _ := last(evs, "web", "process.exited"); x.Seq > failed.Seq {
		t.Errorf("a process exited after package.failed")
	}
	d := failed.Data.(events.PackageFailed)
	if d.Service != "svc" || d.Node != "node1" || d.Epoch != 1 {
		t.Errorf("package.failed = %+v", d)
	}
	// Each restart names the exit that caused it and counts down; each
	// start after the first answers a restart decision and names it.
	byID := map[string]events.Event{}
	for _, ev := range evs {
		byID[ev.ID] = ev
	}
	attempt, restarts, starts := 0, map[string]bool{}, 0
	for _, ev := range evs {
		switch d := ev.Data.(type) {
		case events.ServiceRestarting:
			attempt++
			restarts[ev.ID] = true
			if d.Attempt != attempt || d.RestartsLeft != 2-attempt {
				t.Errorf("restart seq %d: attempt %d, left %d; want attempt %d, left %d", ev.Seq, d.Attempt, d.RestartsLeft, attempt, 2-attempt)
			}
			if c, ok := byID[ev.CauseID]; !ok || c.Type() != events.TypeProcessExited || c.Seq > ev.Seq {
				t.Errorf("restart seq %d names cause %q, want an earlier process.exited", ev.Seq, ev.CauseID)
			}
		case events.ProcessStarted:
			if starts++; starts > 1 && (!restarts[ev.CauseID] || !restarts[d.RequestID]) {
				t.Errorf("process.started seq %d: cause %q, request %q; want the restart decision before it", ev.Seq, ev.CauseID, d.RequestID)
			}
		}
	}
	e.checkInvariants()
}

// restart: unlimited keeps restarting until an operator halts the package.
func TestRunnerRestartUnlimited(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.applyConfig(testYAML("none", `
		cmd: [sh, -c, "exit 0"]
		restart: unlimited`))
	e.startRunner("node1", nil, nil)
	epoch := e.place("web", "node1")
	e.haltAfterRestarts(5, epoch)
	if n := e.count("web", "service.failed") + e.count("web", "package.failed"); n != 0 {
		t.Errorf("%d failures with restart: unlimited", n)
	}
	h, _ := last(e.events(), "web", "package.halted")
	if r := h.Data.(events.PackageHalted).Reason; r != "operator_halt" {
		t.Errorf("package.halted reason %q", r)
	}
	for _, ev := range e.pkgEvents("web") {
		if r, ok := ev.Data.(events.ServiceRestarting); ok && r.RestartsLeft != -1 {
			t.Errorf("restart with restarts_left %d, want -1 (unlimited)", r.RestartsLeft)
		}
	}
	e.checkInvariants()
}

// With restart_window only the restarts inside the window count: exits
// spaced wider than window/restart never use the restarts up.
func TestRunnerRestartWindow(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	// At most 2 restarts in any 1s: exits 0.6s apart leave room forever;
	// without the window the third exit would fail the service.
	e.applyConfig(testYAML("none", `
		cmd: [sh, -c, "sleep 0.6; exit 3"]
		restart: 2
		restart_window: 1s`))
	e.startRunner("node1", nil, nil)
	epoch := e.place("web", "node1")
	e.haltAfterRestarts(5, epoch)
	if n := e.count("web", "service.failed"); n != 0 {
		t.Errorf("service.failed %d times, want none", n)
	}
	e.checkInvariants()
}

// A guest whose agent is killed is lost (no heartbeat for guest_timeout),
// forced off and started again (guest.restart: 1); its services run again.
func TestRunnerGuestLostRestarts(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.webOnNode1("1", sleeper("none"))
	pid := e.agentPID("node1", "webvm")
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	e.waitCount("web", "guest.lost", 1, 30*time.Second)
	e.waitCount("web", "guest.started", 2, 30*time.Second)
	e.waitCount("web", "process.started", 2, 30*time.Second)
	gs, _ := last(e.events(), "web", "guest.started")
	ps, _ := last(e.events(), "web", "process.started")
	if rid := ps.Data.(events.ProcessStarted).RequestID; rid != gs.ID+"/svc" {
		t.Errorf("service restarted with request id %s, want %s/svc", rid, gs.ID)
	}
	if n := e.count("web", "guest.lost"); n != 1 {
		t.Errorf("guest.lost %d times, want 1", n)
	}
	if n := e.count("web", "package.failed"); n != 0 {
		t.Errorf("package failed")
	}
	if pid2 := e.agentPID("node1", "webvm"); pid2 == pid {
		t.Errorf("agent pid unchanged")
	}
	e.checkInvariants()
}

// With guest.restart: none a lost guest fails the package on the node.
func TestRunnerGuestLostFails(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.webOnNode1("none", sleeper("3"))
	if err := syscall.Kill(e.agentPID("node1", "webvm"), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	e.waitCount("web", "package.failed", 1, 30*time.Second)
	evs := e.events()
	if !has(evs, "web", "guest.lost") {
		t.Error("no guest.lost")
	}
	if n := e.count("web", "guest.started"); n != 1 {
		t.Errorf("guest.started %d times, want 1 (no restart)", n)
	}
	if n := e.count("web", "service.restarting"); n != 0 {
		t.Errorf("service.restarting %d times, want none", n)
	}
	e.checkInvariants()
}

// The host manager dies right after it appended a restart decision and
// before it asked the agent: the next one finds the decision in the log and
// performs it, once.
func TestRunnerCrashBetweenDecisionAndAction(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.applyConfig(testYAML("none", `
		cmd: [sh, -c, "sleep 0.3; exit 1"]
		restart: unlimited`))
	var decided string
	h := e.startRunner("node1", nil, &testHooks{afterAppend: func(d events.Event) bool {
		if _, ok := d.Data.(events.ServiceRestarting); ok {
			decided = d.ID
			return true
		}
		return false
	}})
	epoch := e.place("web", "node1")
	if err := h.wait(t, 30*time.Second); !errors.Is(err, errCrashed) {
		t.Fatalf("runner returned %v, want the crash", err)
	}
	startedFor := func(id string) int {
		n := 0
		for _, ev := range e.pkgEvents("web") {
			if d, ok := ev.Data.(events.ProcessStarted); ok && d.RequestID == id {
				n++
			}
		}
		return n
	}
	e.eventsNow() // the check below looks at everything the crashed runner wrote
	if n := startedFor(decided); n != 0 {
		t.Fatalf("process.started for the decision before the restart: %d", n)
	}
	// The next host manager: it finishes the restart, and goes on.
	e.startRunner("node1", nil, nil)
	e.waitFor("the decided restart to start", 30*time.Second, func([]events.Event) bool { return startedFor(decided) >= 1 })
	e.haltAfterRestarts(3, epoch)
	if n := startedFor(decided); n != 1 {
		t.Errorf("process.started for decision %s: %d, want exactly 1", decided, n)
	}
	// And every decision started exactly once.
	starts := map[string]int{}
	for _, ev := range e.pkgEvents("web") {
		if d, ok := ev.Data.(events.ProcessStarted); ok {
			starts[d.RequestID]++
		}
	}
	for id, n := range starts {
		if n != 1 {
			t.Errorf("request %s started %d times", id, n)
		}
	}
	e.checkInvariants()
}

// HaltOnExit: on ctx end the runner halts its packages (node_shutdown, no
// `by`), releases its lease and returns.
func TestRunnerHaltOnExit(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.applyConfig(testYAML("none", sleeper("none")))
	h := e.startRunner("node1", func(c *Config) { c.HaltOnExit = true; c.ShutdownTimeout = 30 * time.Second }, nil)
	e.placeStarted("web", "node1")
	kv := leaseKV(t, e)
	if _, err := kv.Get(context.Background(), "node1"); err != nil {
		t.Fatalf("lease while running: %v", err)
	}
	if err := h.stop(t); err != nil {
		t.Fatalf("Run: %v", err)
	}
	evs := e.eventsNow()
	hl, ok := last(evs, "web", "package.halting")
	if !ok {
		t.Fatal("no package.halting")
	}
	if d := hl.Data.(events.PackageHalting); d.Reason != ReasonNodeShutdown || d.By != "" {
		t.Errorf("package.halting = %+v, want reason node_shutdown without by", d)
	}
	hd, ok := last(evs, "web", "package.halted")
	if !ok || hd.Data.(events.PackageHalted).Reason != ReasonNodeShutdown {
		t.Errorf("package.halted: %v %+v", ok, hd.Data)
	}
	x, ok := last(evs, "web", "process.exited")
	if !ok || x.Data.(events.ProcessExited).Reason != "stopped" {
		t.Errorf("process.exited: %v %+v", ok, x.Data)
	}
	if _, err := kv.Get(context.Background(), "node1"); err == nil {
		t.Error("lease still there after a clean shutdown")
	}
	// It leaves on purpose: node.halted (host_shutdown, no by), recorded
	// after the package is down, so no node.lost follows; the next host
	// manager of the node joins it again.
	halted := nodeEvents(evs, "node1", "node.halted")
	if len(halted) != 1 {
		t.Fatalf("node.halted of node1: %d, want 1", len(halted))
	}
	if d := halted[0].Data.(events.NodeHalted); d.Reason != ReasonHostShutdown || d.By != "" {
		t.Errorf("node.halted = %+v, want reason %s without by", d, ReasonHostShutdown)
	}
	if halted[0].Seq < hd.Seq {
		t.Errorf("node.halted (seq %d) before package.halted (seq %d)", halted[0].Seq, hd.Seq)
	}
	e.startRunner("node1", nil, nil)
	e.waitFor("node1 joined again after its clean stop", 20*time.Second, func(evs []events.Event) bool {
		j := nodeEvents(evs, "node1", "node.joined")
		return len(j) == 2 && j[1].Seq > halted[0].Seq
	})
	e.checkInvariants()
}

func TestRunnerNodeJoinsOnce(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.applyConfig(testYAML("none", `
		cmd: [sleep, "1000"]`))
	h := e.startRunner("node1", nil, nil)
	joined := func() int {
		n := 0
		for _, ev := range e.events() {
			if _, ok := ev.Data.(events.NodeJoined); ok && ev.Subject == "node1" {
				n++
			}
		}
		return n
	}
	e.waitFor("node.joined", 20*time.Second, func([]events.Event) bool { return joined() == 1 })
	if err := h.stop(t); err != nil {
		t.Fatal(err)
	}
	// A restarted host manager of a node the log shows joined does not join again.
	e.startRunner("node1", nil, nil)
	e.placeStarted("web", "node1")
	if n := joined(); n != 1 {
		t.Errorf("node.joined %d times, want 1", n)
	}
}

// A restart with backoff is sent only after its delay (a timer, not a sleep
// in the loop): delay, then times factor, at most max.
func TestRunnerBackoffDelaysRestarts(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.applyConfig(testYAML("none", `
		cmd: [sh, -c, "exit 1"]
		restart: 3
		backoff: {delay: 200ms, factor: 2, max: 500ms}`))
	e.startRunner("node1", nil, nil)
	e.place("web", "node1")
	e.waitCount("web", "package.failed", 1, 30*time.Second)
	byID := map[string]events.Event{}
	for _, ev := range e.pkgEvents("web") {
		byID[ev.ID] = ev
	}
	var delays []int64
	for _, ev := range e.pkgEvents("web") {
		d, ok := ev.Data.(events.ProcessStarted)
		if !ok {
			continue
		}
		dec, ok := byID[d.RequestID]
		if !ok {
			continue // the first run: its request id is <guest.started id>/svc
		}
		r := dec.Data.(events.ServiceRestarting)
		delays = append(delays, r.DelayMS)
		if got := ev.Time.Sub(dec.Time); got < time.Duration(r.DelayMS)*time.Millisecond {
			t.Errorf("restart %d started %s after its decision, before its delay %dms", r.Attempt, got, r.DelayMS)
		}
	}
	if want := []int64{200, 400, 500}; !slices.Equal(delays, want) {
		t.Errorf("delays %v, want %v", delays, want)
	}
}

// A malformed message on the package's subjects is skipped by every reader;
// it still advances the package's sequence, so the next decision's
// expected-sequence append does not conflict forever. Here the decision is
// the guest monitor's guest.lost, which no later event about the package
// precedes.
func TestRunnerSkippedMessageDoesNotBlockDecisions(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.applyConfig(testYAML("1", `
		cmd: [sleep, "1000"]`))
	e.startRunner("node1", nil, nil)
	e.placeStarted("web", "node1")
	if _, err := e.log.JetStream().Publish(context.Background(), events.PackageSubject("web", "process", "exited"), []byte("not an event")); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(e.agentPID("node1", "webvm"), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	e.waitCount("web", "guest.lost", 1, 30*time.Second)
	e.waitCount("web", "guest.started", 2, 30*time.Second)
}

// recordSetup is a log where node1 joined and web is placed on it: what a
// host manager of node1 that starts again finds.
func recordSetup(t *testing.T) (*testEnv, uint64) {
	e := newEnv(t)
	e.applyConfig(testYAML("none", `
		cmd: [sleep, "1000"]`))
	j := e.append(events.Event{Source: HostSource("node1"), Subject: "node1", Data: events.NodeJoined{}})
	e.place("web", "node1")
	return e, j.Seq
}

// firstHostEvent returns the index of the first event node1's host manager
// wrote about a package, -1 if none.
func firstHostEvent(evs []events.Event) int {
	for i, ev := range evs {
		if ev.Source == HostSource("node1") && ev.Subject == "web" {
			return i
		}
	}
	return -1
}

// TestRunnerRecordsLeaseTakeBeforeActing (sim finding stale_loss): a host
// manager that starts while the log shows its node joined records its
// lease take (node.lease_taken, guarded by the node's last sequence)
// before it decides anything about a package; a node.lost judged from the
// log before that record (the controller found the lease gone while the
// host manager was away) is then refused.
func TestRunnerRecordsLeaseTakeBeforeActing(t *testing.T) {
	t.Parallel()
	e, joinSeq := recordSetup(t)
	e.startRunner("node1", nil, nil)
	e.waitCount("web", "package.started", 1, 30*time.Second)
	evs := e.eventsNow()
	rec := -1
	for i, ev := range evs {
		if d, ok := ev.Data.(events.NodeLeaseTaken); ok && ev.Subject == "node1" && d.Holder != "" {
			rec = i
		}
	}
	if rec < 0 {
		t.Fatal("no node.lease_taken of node1")
	}
	if first := firstHostEvent(evs); first < rec {
		t.Fatalf("host decided about web at seq %d, before its lease take was recorded at seq %d", evs[first].Seq, evs[rec].Seq)
	}
	stale := events.Stamp(events.Event{Source: "/vmguard/failover", Subject: "node1", Data: events.NodeLost{Reason: "lease expired"}}, time.Now())
	_, err := e.log.Append(context.Background(), stale, events.ExpectLastSeq(events.NodeFilter("node1"), joinSeq))
	if !errors.Is(err, events.ErrConflict) {
		t.Fatalf("stale node.lost guarded by seq %d: %v, want a conflict", joinSeq, err)
	}
	e.checkInvariants()
}

// TestRunnerReadsLossBeforeActing (sim finding act_before_loss): the
// controller records node1 lost between the host manager's replay and the
// record of its lease take. The record conflicts; the host manager reads
// the loss, joins again, and decides nothing for the placement the loss
// released, nor anything at all before its join is stored.
func TestRunnerReadsLossBeforeActing(t *testing.T) {
	t.Parallel()
	e, joinSeq := recordSetup(t)
	var once sync.Once
	lostSeq := make(chan uint64, 1)
	e.startRunner("node1", nil, &testHooks{beforeRecord: func(events.Event) {
		once.Do(func() {
			lost := events.Stamp(events.Event{Source: "/vmguard/failover", Subject: "node1", Data: events.NodeLost{Reason: "lease expired"}}, time.Now())
			seq, err := e.log.Append(context.Background(), lost, events.ExpectLastSeq(events.NodeFilter("node1"), joinSeq))
			if err != nil {
				t.Errorf("node.lost: %v", err)
			}
			lostSeq <- seq
		})
	}})
	var lost uint64
	select {
	case lost = <-lostSeq:
	case <-time.After(30 * time.Second):
		t.Fatal("the host manager never recorded its lease take")
	}
	var joined events.Event
	e.waitFor("node1 joined again after its loss", 30*time.Second, func(evs []events.Event) bool {
		for _, ev := range evs {
			if _, ok := ev.Data.(events.NodeJoined); ok && ev.Subject == "node1" && ev.Seq > lost {
				joined = ev
				return true
			}
		}
		return false
	})
	// The controller places web again on the node that joined.
	e.placeStarted("web", "node1")
	evs := e.eventsNow()
	if first := firstHostEvent(evs); first >= 0 && evs[first].Seq < joined.Seq {
		t.Fatalf("host decided %s about web at seq %d, before its join at seq %d (loss at %d)", events.ShortType(evs[first].Type()), evs[first].Seq, joined.Seq, lost)
	}
	for _, ev := range evs {
		if d, ok := ev.Data.(events.PackageStarting); ok && d.Epoch == 1 {
			t.Errorf("started epoch 1, which the loss released: seq %d", ev.Seq)
		}
	}
	e.checkInvariants()
}
