package events_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/vmguard/vmguard/events"
	"github.com/vmguard/vmguard/internal/natsd/natstest"
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

// TestNextOfAFilter: Next returns the first event on a subject filter at or
// after a sequence, none past the last, and a malformed message there as
// an ErrInvalid that names its sequence, so a reader can skip it.
func TestNextOfAFilter(t *testing.T) {
	ctx := context.Background()
	l, nc := openLog(t)
	web := func(epoch uint64) uint64 {
		t.Helper()
		seq, err := l.Append(ctx, events.New(events.ControllerSource, "web", events.PackagePlaced{Node: "node2", Epoch: epoch, Reason: "auto_run"}))
		if err != nil {
			t.Fatal(err)
		}
		return seq
	}
	first := web(1)
	if _, err := l.Append(ctx, events.New(events.HostSource("node2"), "node2", events.NodeJoined{})); err != nil {
		t.Fatal(err)
	}
	if err := nc.Publish(events.PackageSubject("web", "package", "placed"), []byte("not an event")); err != nil {
		t.Fatal(err)
	}
	second := web(2)
	e, ok, err := l.Next(ctx, events.PackageFilter("web"), 1)
	if err != nil || !ok || e.Seq != first || e.Data.(events.PackagePlaced).Epoch != 1 {
		t.Fatalf("next of web from 1: %+v %v %v, want epoch 1 at %d", e, ok, err, first)
	}
	natstest.WaitFor(t, 5*time.Second, "the malformed message stored", func() bool {
		last, _ := l.LastSeq(ctx)
		return last == second
	})
	e, ok, err = l.Next(ctx, events.PackageFilter("web"), first+1)
	if !ok || !errors.Is(err, events.ErrInvalid) || e.Seq != second-1 {
		t.Fatalf("next of web after the first: %+v %v %v, want ErrInvalid at %d", e, ok, err, second-1)
	}
	if e, ok, err = l.Next(ctx, events.PackageFilter("web"), e.Seq+1); err != nil || !ok || e.Seq != second {
		t.Fatalf("next of web after the malformed one: %+v %v %v, want %d", e, ok, err, second)
	}
	if _, ok, err := l.Next(ctx, events.PackageFilter("web"), second+1); err != nil || ok {
		t.Fatalf("next of web past its last: %v %v, want none", ok, err)
	}
}
