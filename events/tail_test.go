package events_test

import (
	"context"
	"testing"

	"github.com/vmguard/vmguard/events"
)

// TestTailOfAFilter: Tail takes a wildcard filter (a node's subjects) and
// names the last event on any of them; the controller checks a placement's
// target node with it.
func TestTailOfAFilter(t *testing.T) {
	ctx := context.Background()
	l, _ := openLog(t)
	if tl, err := l.Tail(ctx, events.NodeFilter("node2")); err != nil || tl.Found || tl.Seq != 0 {
		t.Fatalf("tail of an empty filter: %+v, %v", tl, err)
	}
	if _, err := l.Append(ctx, events.New(events.HostSource("node2"), "node2", events.NodeJoined{})); err != nil {
		t.Fatal(err)
	}
	lost, err := l.Append(ctx, events.New(events.ControllerSource, "node2", events.NodeLost{Reason: "lease expired"}))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.Append(ctx, events.New(events.HostSource("node1"), "node1", events.NodeJoined{})); err != nil {
		t.Fatal(err)
	}
	tl, err := l.Tail(ctx, events.NodeFilter("node2"))
	if err != nil || !tl.Found || tl.Seq != lost || tl.Event.Type() != events.TypeNodeLost {
		t.Errorf("tail of node2's subjects: %+v, %v; want the node.lost at seq %d", tl, err, lost)
	}
}

// TestFirstOfAFilter: First names the first message on a (wildcard)
// subject at or after a sequence, and nothing when there is none; a host
// manager finds where a log's placement markers begin with it.
func TestFirstOfAFilter(t *testing.T) {
	ctx := context.Background()
	l, _ := openLog(t)
	if seq, ok, err := l.First(ctx, "vmguard.events.placement.>", 1); err != nil || ok || seq != 0 {
		t.Fatalf("first of an empty log: %d %v %v", seq, ok, err)
	}
	p := events.New(events.ControllerSource, "web", events.PackagePlaced{Node: "node2", Epoch: 1, Reason: "auto_run"})
	m, ok := events.PlacementMarker(p)
	if !ok || m.Subject != "node2" || m.Data != (events.PlacementNoted{Package: "web", Epoch: 1}) {
		t.Fatalf("marker %+v %v, want placement.noted of web on node2", m, ok)
	}
	if _, err := l.Append(ctx, events.New(events.HostSource("node2"), "node2", events.NodeJoined{})); err != nil {
		t.Fatal(err)
	}
	seqs, err := l.AppendBatch(ctx, events.BatchItem{Event: m}, events.BatchItem{Event: p})
	if err != nil {
		t.Fatal(err)
	}
	if seq, ok, err := l.First(ctx, "vmguard.events.placement.>", 1); err != nil || !ok || seq != seqs[0] {
		t.Errorf("first marker: %d %v %v, want seq %d", seq, ok, err, seqs[0])
	}
	if seq, ok, err := l.First(ctx, events.PlacementFilter("node2"), seqs[0]+1); err != nil || ok {
		t.Errorf("first marker after the only one: %d %v %v, want none", seq, ok, err)
	}
	if _, ok, _ := l.First(ctx, events.PlacementFilter("node1"), 1); ok {
		t.Errorf("node1 has a marker: want none")
	}
}
