package invariant

import (
	"strings"
	"testing"

	"github.com/vmguard/vmguard/events"
)

type logb struct{ evs []events.Event }

func (l *logb) add(subject string, cause string, d events.Payload) events.Event {
	e := events.Event{ID: events.NewID(), Source: "/t", Subject: subject, CauseID: cause, Data: d, Seq: uint64(len(l.evs) + 1)}
	l.evs = append(l.evs, e)
	return e
}

func TestCleanFailoverPasses(t *testing.T) {
	var l logb
	p1 := l.add("web", "", events.PackagePlaced{Node: "n1", Epoch: 1, Reason: "auto_run"})
	s1 := l.add("web", p1.ID, events.ProcessStarted{Guest: "g", Service: "s", PID: 10, RequestID: "r1", Epoch: 1})
	x1 := l.add("web", "r1", events.ProcessExited{Guest: "g", Service: "s", PID: 10, RequestID: "r1", Epoch: 1})
	r := l.add("web", x1.ID, events.ServiceRestarting{Service: "s", Node: "n1", Epoch: 1, Attempt: 1})
	l.add("web", r.ID, events.ProcessStarted{Guest: "g", Service: "s", PID: 11, RequestID: r.ID, Epoch: 1})
	l.add("web", "", events.ProcessExited{Guest: "g", Service: "s", PID: 11, RequestID: r.ID, Epoch: 1})
	f := l.add("web", "", events.PackageFailed{Node: "n1", Epoch: 1, Reason: "x"})
	p2 := l.add("web", f.ID, events.PackagePlaced{Node: "n2", Epoch: 2, Reason: "failover", PreviousNode: "n1"})
	l.add("web", p2.ID, events.ProcessStarted{Guest: "g", Service: "s", PID: 20, RequestID: "r2", Epoch: 2})
	_ = s1
	if probs := Check(l.evs); len(probs) != 0 {
		t.Fatalf("clean log reported: %v", probs)
	}
}

func TestViolationsFound(t *testing.T) {
	var l logb
	p1 := l.add("web", "", events.PackagePlaced{Node: "n1", Epoch: 1, Reason: "auto_run"})
	l.add("web", p1.ID, events.ProcessStarted{Guest: "g", Service: "s", PID: 10, RequestID: "r1", Epoch: 1})
	p2 := l.add("web", p1.ID, events.PackagePlaced{Node: "n2", Epoch: 2, Reason: "failover"}) // caused by a placement
	l.add("web", p2.ID, events.ProcessStarted{Guest: "g2", Service: "s", PID: 20, RequestID: "r2", Epoch: 2})
	l.add("web", "nope", events.ServiceRestarting{Service: "s", Node: "n1", Epoch: 1, Attempt: 1})
	probs := strings.Join(Check(l.evs), "\n")
	for _, want := range []string{"failover caused by package.placed", "two placements at once", "causeid nope is not in the log"} {
		if !strings.Contains(probs, want) {
			t.Errorf("missing %q in:\n%s", want, probs)
		}
	}
}
