package hostmanager

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/vmguard/vmguard/internal/lease"
	"github.com/vmguard/vmguard/internal/natsd"
	"github.com/vmguard/vmguard/internal/timeline"
)

// TestLeaseKeeper: the keeper alone takes the node's lease and tells the
// loop, is not stale while it renews, steps down (and says so) when
// another instance of the node's host manager writes the lease, and a
// second keeper's release deletes the lease it holds.
func TestLeaseKeeper(t *testing.T) {
	t.Parallel()
	srv := natsd.StartTest(t)
	js, err := jetstream.New(natsd.Connect(t, srv))
	if err != nil {
		t.Fatal(err)
	}
	noDriver := func(name string) (Driver, error) { return nil, errors.New("no drivers here") }
	const ttl = 2 * time.Second
	keeper := func(holder string) (*leaseKeeper, *sync.WaitGroup, context.CancelFunc) {
		k := newLeaseKeeper("node1", holder, natsLeases{js}, time.Now, slog.New(slog.DiscardHandler), noMetrics{}, noDriver, nil)
		if !k.stale() {
			t.Fatal("a keeper that never renewed is not stale")
		}
		k.configure(ttl, timeline.Timeline{})
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		k.start(ctx, &wg)
		t.Cleanup(func() {
			cancel()
			wg.Wait()
		})
		return k, &wg, cancel
	}
	next := func(k *leaseKeeper) leaseEvent {
		t.Helper()
		select {
		case le := <-k.events:
			return le
		case <-time.After(15 * time.Second):
			t.Fatal("no lease event")
			return leaseEvent{}
		}
	}
	holder := func() string {
		t.Helper()
		v, found, err := lease.ReadFromLeader(context.Background(), js, "node1")
		if err != nil || !found {
			t.Fatalf("read lease: found %v, %v", found, err)
		}
		return v.Holder
	}

	k1, wg1, _ := keeper("h1")
	if le := next(k1); !le.held {
		t.Fatalf("first event %+v, want the lease held", le)
	}
	if k1.stale() {
		t.Error("stale right after the take")
	}
	if h := holder(); h != "h1" {
		t.Fatalf("lease holder %q, want h1", h)
	}

	// Another instance takes the lease: the keeper steps down.
	kv, err := lease.Open(context.Background(), js)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(context.Background(), "node1", lease.Value{Node: "node1", Holder: "h2", Renewed: time.Now().UTC(), TTLMS: ttl.Milliseconds()}.Encode()); err != nil {
		t.Fatal(err)
	}
	if le := next(k1); le.superseded != "h2" {
		t.Fatalf("after another holder's write: %+v, want superseded by h2", le)
	}
	done := make(chan struct{})
	go func() {
		wg1.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		t.Fatal("the superseded keeper did not stop")
	}

	// A keeper that holds the lease releases it on a clean stop.
	if err := kv.Delete(context.Background(), "node1"); err != nil {
		t.Fatal(err)
	}
	k3, _, _ := keeper("h3")
	if le := next(k3); !le.held {
		t.Fatalf("first event %+v, want the lease held", le)
	}
	k3.release(context.Background())
	if _, found, err := lease.ReadFromLeader(context.Background(), js, "node1"); err != nil || found {
		t.Fatalf("after release: found %v, %v; want the lease gone", found, err)
	}
}
