package events_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/vmguard/vmguard/events"
	"github.com/vmguard/vmguard/events/eventstest"
)

// A replay from a sequence its consumer holds nothing at or after, though
// the stream leader's last sequence is past it (here: the last message was
// removed; in a cluster, the consumer's server lagging the leader) ends
// within the lag bound instead of waiting on the consumer for ever.
func TestReplayEndsWhenConsumerHoldsNothingBeforeTheEnd(t *testing.T) {
	ctx := context.Background()
	l, nc := openLog(t)
	var last uint64
	for range 3 {
		e := events.New(eventstest.Source(events.TypeNodeJoined, "node1"), "node1", events.NodeJoined{Version: "1"})
		seq, err := l.Append(ctx, e)
		if err != nil {
			t.Fatal(err)
		}
		last = seq
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	st, err := js.Stream(ctx, events.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.DeleteMsg(ctx, last); err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	start := time.Now()
	n := 0
	_, err = l.Replay(rctx, events.ReadOptions{StartSeq: last}, func(events.Event) error { n++; return nil })
	if err != nil {
		t.Fatalf("replay: %v (after %v)", err, time.Since(start))
	}
	if n != 0 {
		t.Fatalf("replay handed %d events, want 0", n)
	}
	t.Logf("replay ended after %v", time.Since(start).Round(time.Millisecond))
}
