package metrics

import (
	"context"
	"errors"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/vmguard/vmguard/events"
	"github.com/vmguard/vmguard/internal/natsd"
)

// TestObserverCountsDecisions appends through a Log observed by Metrics:
// a guarded service.restarting counts as a decision and a restart, and its
// latency is measured because the event it answers was read first; an
// unguarded append is no decision; a conflict is counted as a failure and
// as nothing else; reads move the last read sequence.
func TestObserverCountsDecisions(t *testing.T) {
	ctx := context.Background()
	srv := natsd.StartTest(t)
	m := New()
	l, err := events.Open(ctx, natsd.Connect(t, srv), events.WithObserver(m))
	if err != nil {
		t.Fatal(err)
	}
	m.WatchLog(l)
	exit := events.New(events.GuestSource("webvm"), "web", events.ProcessExited{Guest: "webvm", Service: "flaky", PID: 7, ExitCode: 1, Epoch: 1, RequestID: "r1"})
	exitSeq, err := l.Append(ctx, exit) // an observation: not guarded
	if err != nil {
		t.Fatal(err)
	}
	if got := testutil.ToFloat64(m.decisions.WithLabelValues("process.exited")); got != 0 {
		t.Errorf("an unguarded append counted as %v decisions", got)
	}
	if _, err := l.Replay(ctx, events.ReadOptions{}, func(events.Event) error { return nil }); err != nil {
		t.Fatal(err)
	}
	if m.LastRead() != exitSeq {
		t.Errorf("LastRead = %d, want %d", m.LastRead(), exitSeq)
	}
	restart := events.New(events.HostSource("node1"), "web", events.ServiceRestarting{Service: "flaky", Node: "node1", Epoch: 1, Attempt: 1, RestartsLeft: 1, DelayMS: 500})
	restart.CauseID = exit.ID
	if _, err := l.Append(ctx, restart, events.ExpectPackageSeq("web", exitSeq)); err != nil {
		t.Fatal(err)
	}
	if got := testutil.ToFloat64(m.restarts.WithLabelValues("web")); got != 1 {
		t.Errorf("restarts = %v, want 1", got)
	}
	if got := testutil.ToFloat64(m.decisions.WithLabelValues("service.restarting")); got != 1 {
		t.Errorf("decisions{service.restarting} = %v, want 1", got)
	}
	if got := testutil.CollectAndCount(m.decisionSeconds); got != 1 {
		t.Errorf("decision latency series = %d, want 1", got)
	}
	// A stale guard: refused, counted as a conflict, not as a restart.
	again := events.New(events.HostSource("node1"), "web", events.ServiceRestarting{Service: "flaky", Node: "node1", Epoch: 1, Attempt: 2, RestartsLeft: 0, DelayMS: 1000})
	if _, err := l.Append(ctx, again, events.ExpectPackageSeq("web", exitSeq)); !errors.Is(err, events.ErrConflict) {
		t.Fatalf("stale append: %v, want a conflict", err)
	}
	if got := testutil.ToFloat64(m.appendFailed.WithLabelValues("service.restarting", "conflict")); got != 1 {
		t.Errorf("conflicts = %v, want 1", got)
	}
	if got := testutil.ToFloat64(m.restarts.WithLabelValues("web")); got != 1 {
		t.Errorf("restarts after a refused append = %v, want still 1", got)
	}
	if n, err := testutil.GatherAndCount(m.reg, "vmguard_events_skipped_total", "vmguard_log_last_sequence"); err != nil || n != 2 {
		t.Errorf("log gauges: %d series, %v", n, err)
	}
}
