package failover

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/vmguard/vmguard/events"
	"github.com/vmguard/vmguard/internal/natsd"
)

// TestElectorAlone runs two electors on one bucket, without runners: one
// leads and says so on its channel, the other does not; when the leader
// stops it releases the key and the other leads at once (well inside the
// TTL, which a standby would otherwise wait out).
func TestElectorAlone(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	l, err := events.Open(ctx, natsd.Connect(t, natsd.StartTest(t)))
	if err != nil {
		t.Fatal(err)
	}
	const ttl = 20 * time.Second // far longer than the test may take to hand over
	kv, err := l.EnsureBucket(ctx, electionBucket(ttl))
	if err != nil {
		t.Fatal(err)
	}
	start := func(id string) (*elector, chan bool, context.CancelFunc, chan struct{}) {
		el := newElector(id, events.NewID(), ttl, time.Now, slog.New(slog.DiscardHandler))
		el.kv = kv
		lead := make(chan bool, 4)
		ectx, stop := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { defer close(done); el.Run(ectx, lead) }()
		return el, lead, stop, done
	}
	a, aLead, stopA, aDone := start("a")
	select {
	case v := <-aLead:
		if !v || !a.leading() {
			t.Fatalf("first elector: told %v, leading %v", v, a.leading())
		}
	case <-ctx.Done():
		t.Fatal("first elector never led")
	}
	b, bLead, stopB, bDone := start("b")
	defer func() { stopB(); <-bDone }()
	if v, ok, err := CurrentLeader(ctx, l.JetStream()); err != nil || !ok || v.ID != "a" {
		t.Fatalf("leader key: %+v %v %v, want a", v, ok, err)
	}
	if b.leading() {
		t.Fatal("second elector leads while the first holds the key")
	}
	stopA()
	<-aDone
	if a.leading() {
		t.Fatal("stopped elector still leads")
	}
	select {
	case v := <-bLead:
		if !v || !b.leading() {
			t.Fatalf("second elector: told %v, leading %v", v, b.leading())
		}
	case <-time.After(ttl / 2):
		t.Fatal("second elector did not take over within half the TTL of the release")
	}
}
