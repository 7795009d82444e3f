package failover

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/vmguard/vmguard/events"
	"github.com/vmguard/vmguard/internal/natsd"
)

func TestExpectHeaders(t *testing.T) {
	l := newLog(t)
	l.config(testCluster(testPkg("web", "node1")))
	l.join("node1")                         // e2
	l.run("web", "node1", 1)                // e3..e5
	l.add("node1", events.NodeJoined{}, "") // e6
	s := l.state()
	for _, c := range []struct {
		e    events.Event
		want events.Expect
	}{
		{events.Event{Subject: "web", Data: events.PackagePlaced{}}, events.Expect{Subject: events.PackageFilter("web"), Seq: 5}},
		{events.Event{Subject: "db", Data: events.PackageReset{}}, events.Expect{Subject: events.PackageFilter("db"), Seq: 0}},
		{events.Event{Subject: "node1", Data: events.NodeHalted{}}, events.Expect{Subject: events.NodeFilter("node1"), Seq: 6}},
		{events.Event{Subject: "node7", Data: events.NodeJoined{}}, events.Expect{Subject: events.NodeFilter("node7"), Seq: 0}},
	} {
		if got := s.Expect(c.e); got != c.want {
			t.Errorf("Expect(%s %s) = %+v, want %+v", c.e.Type(), c.e.Subject, got, c.want)
		}
	}
}

// TestExpectOnTheLog runs the core against a real JetStream log: decisions
// appended with State.Expect go through once; the same decision from a
// state that missed them (a second controller) is refused with ErrConflict,
// so no package is ever placed twice for one epoch.
func TestExpectOnTheLog(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	log, err := events.Open(ctx, natsd.Connect(t, natsd.StartTest(t)))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range loadFixture(t, "testdata/failover.jsonl") {
		e.Seq = 0
		if _, err := log.Append(ctx, e); err != nil {
			t.Fatalf("append fixture: %v", err)
		}
	}
	read := func() *State {
		t.Helper()
		s := &State{}
		if _, err := log.Replay(ctx, events.ReadOptions{}, func(e events.Event) error { s.Apply(e); return nil }); err != nil {
			t.Fatal(err)
		}
		return s
	}
	appendAll := func(s *State, evs []events.Event) error {
		for _, e := range evs {
			if _, err := log.Append(ctx, events.Stamp(e, t0), s.Expect(e)); err != nil {
				return err
			}
		}
		return nil
	}

	// web runs on node2 (epoch 2); it fails there too.
	s := read()
	failed := events.Stamp(events.Event{Source: "/vmguard/nodes/node2/host", Subject: "web",
		Data: events.PackageFailed{Node: "node2", Epoch: 2, Reason: "service_failed"}}, t0)
	if _, err := log.Append(ctx, failed, s.Expect(failed)); err != nil {
		t.Fatal(err)
	}
	s = read()
	a, b := s.Clone(), s.Clone() // two controllers that read the same log
	trigger := failed
	trigger.Seq = s.Seq
	da, db := Decide(a, trigger), Decide(b, trigger)
	if brief(da) != "web->node3 epoch=3 reason=failover prev=node2 cause="+failed.ID || brief(db) != brief(da) {
		t.Fatalf("decisions: %s / %s", brief(da), brief(db))
	}
	if err := appendAll(a, da); err != nil {
		t.Fatalf("first controller: %v", err)
	}
	if err := appendAll(b, db); !errors.Is(err, events.ErrConflict) {
		t.Fatalf("second controller: err = %v, want ErrConflict", err)
	}
	// Re-read, decide again: nothing left to do.
	s = read()
	if p := s.Package("web"); p.Epoch != 3 || p.Node != "node3" {
		t.Fatalf("web = %+v", p)
	}
	if d := Decide(s, trigger); len(d) != 0 {
		t.Fatalf("after re-reading: %s", brief(d))
	}

	// Node commands are guarded the same way, on the node's subjects.
	cmd := Command{Op: OpNodeHalt, Node: "node1", By: "ann"}
	ha, err := s.Command(cmd)
	if err != nil {
		t.Fatal(err)
	}
	hb, _ := s.Command(cmd)
	if err := appendAll(s, ha); err != nil {
		t.Fatalf("node halt: %v", err)
	}
	if err := appendAll(s, hb); !errors.Is(err, events.ErrConflict) {
		t.Fatalf("stale node halt: err = %v, want ErrConflict", err)
	}
	if _, err := read().Command(cmd); !errors.Is(err, ErrRefused) {
		t.Fatalf("node halt of a halted node: %v", err)
	}
}

// TestEveryPackageEventMovesTheGuard: an event of any package type moves
// the sequence a decision about the package is guarded by; one that did
// not would make every decision about the package conflict until the next
// event about it, forever if none comes (a host lost in the middle of a
// live migration: guest.migrating was its last word).
func TestEveryPackageEventMovesTheGuard(t *testing.T) {
	samples := []events.Payload{
		events.PackagePlaced{}, events.PackageStarting{}, events.PackageStarted{}, events.PackageHalting{},
		events.PackageHalted{}, events.PackageFailed{}, events.PackageSwitchingChanged{}, events.PackageReset{},
		events.PackageChecked{},
		events.GuestStarted{}, events.GuestLost{}, events.GuestStopped{},
		events.GuestMigrating{}, events.GuestMigrated{}, events.GuestMigrationFailed{},
		events.ServiceRestarting{}, events.ServiceFailed{}, events.ProcessStarted{}, events.ProcessExited{},
	}
	sampled := map[string]bool{}
	for _, d := range samples {
		sampled[d.EventType()] = true
	}
	for _, typ := range events.Types() {
		if sc, _ := events.ScopeOf(typ); sc == events.ScopePackage && !sampled[typ] {
			t.Errorf("no sample of %s", typ)
		}
	}
	for _, d := range samples {
		l := newLog(t)
		l.config(testCluster(testPkg("web", "node1", "node2")))
		l.join("node1", "node2")
		l.run("web", "node1", 1)
		e := l.add("web", d, "")
		if got := l.state().Expect(events.Event{Subject: "web", Data: events.PackagePlaced{}}).Seq; got != e.Seq {
			t.Errorf("after %s at seq %d: a decision about web is guarded by seq %d", events.ShortType(d.EventType()), e.Seq, got)
		}
	}
}
