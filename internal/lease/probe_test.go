package lease_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/vmguard/vmguard/events"
	"github.com/vmguard/vmguard/internal/lease"
	"github.com/vmguard/vmguard/internal/natsd"
)

// waitVerdict polls p until it says want, within d.
func waitVerdict(t *testing.T, p *lease.Prober, want lease.Verdict, d time.Duration, what string) time.Time {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		now := time.Now()
		got, _ := p.Decide(now)
		if got == want {
			return now
		}
		if now.After(deadline) {
			t.Fatalf("%s: verdict %s after %s, want %s", what, got, d, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestProberOnClusterOutage runs a Prober against a real three-server
// cluster whose lease bucket is R3: Young until the store has taken its
// probes for a TTL, then Lost; with two servers shut down (no quorum)
// Unknown; once they are back Young again, for a whole TTL from then, and
// Lost after. ReadFromLeader reads a held lease and reports a missing one.
func TestProberOnClusterOutage(t *testing.T) {
	if testing.Short() {
		t.Skip("three-server cluster")
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c := natsd.StartCluster(t, 3)
	js, err := jetstream.New(c.Connect(t))
	if err != nil {
		t.Fatal(err)
	}
	const ttl = 3 * time.Second
	retry := func(what string, f func(context.Context) error) { t.Helper(); c.Retry(30*time.Second, what, f) }
	retry("stream R3", func(ctx context.Context) error { _, err := events.EnsureStream(ctx, js, 3); return err })
	var kv jetstream.KeyValue
	retry("lease bucket", func(ctx context.Context) (err error) { kv, err = lease.Ensure(ctx, js, ttl); return err })
	retry("a lease", func(ctx context.Context) error {
		_, err := kv.Put(ctx, "node1", lease.Value{Node: "node1", Holder: "h", TTLMS: ttl.Milliseconds()}.Encode())
		return err
	})

	p := lease.NewProber(js, "test-run", lease.SystemClock{}, nil)
	p.SetTTL(ttl)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); p.Run(ctx) }()
	defer wg.Wait()
	defer cancel()

	if v, _ := p.Decide(time.Now()); v == lease.Lost {
		t.Fatal("lost before any probe")
	}
	first := waitVerdict(t, p, lease.Young, 10*time.Second, "store writable")
	lost := waitVerdict(t, p, lease.Lost, 3*ttl, "store writable for a ttl")
	if lost.Sub(first) < ttl-lease.ProbeEvery(ttl)-100*time.Millisecond {
		t.Errorf("Lost %s after Young was first seen, want about a ttl (%s)", lost.Sub(first), ttl)
	}
	// The lease written above has outlived its ttl by now (the bucket's
	// TTL is ttl): renew it, as its holder would, before reading it back.
	retry("renew node1", func(ctx context.Context) error {
		_, err := kv.Put(ctx, "node1", lease.Value{Node: "node1", Holder: "h", TTLMS: ttl.Milliseconds()}.Encode())
		return err
	})
	retry("read node1 from the leader", func(ctx context.Context) error {
		v, found, err := lease.ReadFromLeader(ctx, js, "node1")
		if err == nil && (!found || v.Holder != "h") {
			t.Fatalf("read node1 from the leader: %+v found %v", v, found)
		}
		return err
	})
	retry("read node9 from the leader", func(ctx context.Context) error {
		_, found, err := lease.ReadFromLeader(ctx, js, "node9")
		if err == nil && found {
			t.Fatal("node9 found at the leader, never written")
		}
		return err
	})
	retry("delete node1", func(ctx context.Context) error { return kv.Delete(ctx, "node1") })
	retry("read deleted node1 from the leader", func(ctx context.Context) error {
		_, found, err := lease.ReadFromLeader(ctx, js, "node1")
		if err == nil && found {
			return fmt.Errorf("node1 still found after its delete")
		}
		return err
	})

	// The outage: two of three servers down, the bucket has no quorum.
	c.Shutdown(1)
	c.Shutdown(2)
	down := time.Now()
	waitVerdict(t, p, lease.Unknown, lease.ProbeGap(ttl)+5*time.Second, "store without quorum")
	t.Logf("Unknown %s after the second server went down", time.Since(down).Round(time.Millisecond))
	time.Sleep(ttl) // the outage lasts longer than a ttl
	if v, _ := p.Decide(time.Now()); v != lease.Unknown {
		t.Fatalf("during the outage: %s, want unknown", v)
	}
	c.Restart(1)
	c.Restart(2)
	back := waitVerdict(t, p, lease.Young, 60*time.Second, "store back")
	_, since := p.Decide(back)
	t.Logf("store writable again %s after the outage began (%s of it down)", since.Sub(down).Round(time.Millisecond), ttl)
	again := waitVerdict(t, p, lease.Lost, 3*ttl, "store back for a ttl")
	if again.Sub(since) < ttl {
		t.Errorf("Lost %s after the store came back, want at least a ttl (%s)", again.Sub(since), ttl)
	}
}
