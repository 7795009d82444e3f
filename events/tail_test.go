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
