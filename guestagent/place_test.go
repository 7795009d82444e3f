package guestagent_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/vmguard/vmguard/events"
	"github.com/vmguard/vmguard/guestagent"
	"github.com/vmguard/vmguard/internal/lease"
	"github.com/vmguard/vmguard/internal/natsd/natstest"
)

// placeOn appends package.placed for pkg on node under epoch, as the
// failover controller does.
func placeOn(t *testing.T, l *events.Log, pkg, node string, epoch uint64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := l.Append(ctx, events.Stamp(events.Event{Source: "/vmguard/failover", Subject: pkg,
		Data: events.PackagePlaced{Node: node, Epoch: epoch, Reason: "failover"}}, time.Now())); err != nil {
		t.Fatal(err)
	}
}

// tryPlace sends a place request, again while the agent answers 503 (it
// could not read the log in time: a loaded machine), as a host manager does.
func tryPlace(c *guestagent.Client, pkg, node string, epoch uint64) (guestagent.PlaceReply, error) {
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		rep, err := c.Place(ctx, guestagent.PlaceRequest{Package: pkg, Node: node, Epoch: epoch})
		cancel()
		if !errors.Is(err, guestagent.ErrUnavailable) || time.Now().After(deadline) {
			return rep, err
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// tryRunRetry sends a run request, again while the agent answers 503.
func tryRunRetry(c *guestagent.Client, req guestagent.RunRequest) (guestagent.RunReply, error) {
	deadline := time.Now().Add(30 * time.Second)
	for {
		rep, err := tryRun(c, req)
		if !errors.Is(err, guestagent.ErrUnavailable) || time.Now().After(deadline) {
			return rep, err
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// wantConflict checks that err is a 409 saying want.
func wantConflict(t *testing.T, what string, err error, want string) {
	t.Helper()
	if !errors.Is(err, guestagent.ErrConflict) || !strings.Contains(err.Error(), want) {
		t.Fatalf("%s: %v, want conflict: %q", what, err, want)
	}
}

// waitPlaced waits until ping says the agent follows node with its lease held.
func waitPlaced(t *testing.T, c *guestagent.Client, node string) {
	t.Helper()
	natstest.WaitFor(t, 10*time.Second, "agent following "+node+" with its lease held", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		p, err := c.Ping(ctx)
		return err == nil && p.Node == node && p.Lease == guestagent.LeaseHeld
	})
}

// TestPlaceFollowsNode is a failover in which the guest's agent keeps
// running (the guest moved: live migration, or a VM whose agent outlived
// the move): the host manager of the new node names it, the agent checks
// the log's placement and switches leases. From then on the old node's
// lease, lapsed and deleted, does not stop its process, and the new
// node's lease, once it lapses, does. Requests the log does not back (a
// node it does not place the package on, an older epoch) are refused and
// change nothing.
func TestPlaceFollowsNode(t *testing.T) {
	const ttl = 5 * time.Second
	url, l, kv := fencingSetUp(t, ttl)
	rn1 := renewer(t, kv, "node1", ttl)
	rn2 := renewer(t, kv, "node2", ttl)
	placeOn(t, l, "web", "node1", 1)
	ta := startAgent(t, url, withNode)

	req := sh("web", "a", "a", "exec sleep 1000")
	req.Node, req.Epoch = "node1", 1
	runWhenHeld(t, ta.client, req)
	waitPlaced(t, ta.client, "node1")

	// The log does not place web on node2 yet: refused.
	_, err := tryPlace(ta.client, "web", "node2", 2)
	wantConflict(t, "place on node2 before the log says so", err, "the log places it on node node1 under epoch 1")
	// A run naming node2 is refused the same way.
	late := sh("web", "b", "b", "exec sleep 1000")
	late.Node, late.Epoch = "node2", 2
	_, err = tryRunRetry(ta.client, late)
	wantConflict(t, "run for node2 before the log says so", err, "the log places it on node node1")

	// The controller places web on node2 under epoch 2; node2's host
	// manager names it.
	placeOn(t, l, "web", "node2", 2)
	_, err = tryPlace(ta.client, "web", "node3", 2)
	wantConflict(t, "place on node3", err, "the log places it on node node2 under epoch 2")
	beats := make(chan guestagent.Heartbeat, 64)
	sub, err := connect(t, url).Subscribe(guestagent.HeartbeatSubject("g1"), func(m *nats.Msg) {
		var hb guestagent.Heartbeat
		if json.Unmarshal(m.Data, &hb) == nil {
			select {
			case beats <- hb:
			default:
			}
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	rep, err := tryPlace(ta.client, "web", "node2", 2)
	if err != nil || !rep.Changed || rep.Node != "node2" || rep.Epoch != 2 {
		t.Fatalf("place on node2: %+v, %v", rep, err)
	}
	waitPlaced(t, ta.client, "node2")
	natstest.WaitFor(t, 5*time.Second, "a heartbeat from node2", func() bool {
		select {
		case hb := <-beats:
			return hb.Node == "node2"
		default:
			return false
		}
	})
	// Again: nothing changes.
	if rep, err := tryPlace(ta.client, "web", "node2", 2); err != nil || rep.Changed {
		t.Fatalf("place on node2 again: %+v, %v", rep, err)
	}

	// The old placement's host manager is refused: an older epoch.
	_, err = tryPlace(ta.client, "web", "node1", 1)
	wantConflict(t, "place under the old epoch", err, "epoch 1 is older than epoch 2")
	old := sh("web", "c", "c", "exec sleep 1000")
	old.Node, old.Epoch = "node1", 1
	_, err = tryRun(ta.client, old)
	wantConflict(t, "run under the old epoch", err, "epoch 1 is older than epoch 2")

	// node1's lease lapses and is deleted: the agent no longer follows it,
	// so its process outlives FenceAfter(ttl) and then some.
	rn1.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	if err := kv.Delete(ctx, "node1"); err != nil {
		t.Fatal(err)
	}
	cancel()
	for start := time.Now(); time.Since(start) < lease.FenceAfter(ttl)+lease.RenewEvery(ttl); time.Sleep(50 * time.Millisecond) {
		ps := ta.Processes()
		if len(ps) != 1 || ps[0].State != guestagent.StateRunning {
			t.Fatalf("processes after node1's lease lapsed: %+v (the agent follows node2)", ps)
		}
	}
	waitPlaced(t, ta.client, "node2")

	// node2's lease lapses: now the agent fences, in time.
	last := rn2.Stop()
	e, x := waitExit(t, l, "web", "a")
	if x.Reason != guestagent.ReasonFenced {
		t.Errorf("exit of a: %+v, want reason fenced", x)
	}
	if e.Time.After(last.Add(ttl)) {
		t.Errorf("a exited %s after node2's last renewal, not within the ttl %s", e.Time.Sub(last), ttl)
	}
}

// TestPlaceWithoutNode: an agent that fences but was started without a
// node (a guest image that does not know where it boots) refuses runs until
// a host manager names its node and the log confirms it.
func TestPlaceWithoutNode(t *testing.T) {
	const ttl = 5 * time.Second
	url, l, kv := fencingSetUp(t, ttl)
	renewer(t, kv, "node2", ttl)
	ta := startAgent(t, url, func(c *guestagent.Config) { c.Fence = true })

	wantRefused(t, ta.client, "no node named yet")
	_, err := tryPlace(ta.client, "web", "node2", 3)
	wantConflict(t, "place before any placement", err, "the log places it on node (none) under epoch 0")
	placeOn(t, l, "web", "node2", 3)
	req := sh("web", "a", "a", "exec sleep 1000")
	req.Node, req.Epoch = "node2", 3
	runWhenHeld(t, ta.client, req)
	waitPlaced(t, ta.client, "node2")
}
