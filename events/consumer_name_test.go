package events_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/vmguard/vmguard/events"
	"github.com/vmguard/vmguard/internal/natsd/natstest"
)

// TestFailedCreateLeavesNoConsumer: a read names its consumer, so that
// when a create fails (no answer in time) the consumer a late answer made
// is deleted, and the next attempt gets a name of its own (nats.go named
// an unnamed consumer afresh on each attempt and nothing removed the ones
// a slow server made; one name for every attempt waited on a peer cut
// off).
func TestFailedCreateLeavesNoConsumer(t *testing.T) {
	ctx := context.Background()
	l, nc := openLog(t)
	cfg := events.ConsumerConfigForTest(events.ReadOptions{})
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	st, err := js.Stream(ctx, events.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.CreateConsumer(ctx, cfg); err != nil { // the attempt whose answer came too late
		t.Fatal(err)
	}
	first := cfg.Name
	l.CreatedNotForTest(ctx, &cfg)
	if cfg.Name == "" || cfg.Name == first {
		t.Fatalf("next attempt named %q after %q, want a new name", cfg.Name, first)
	}
	natstest.WaitFor(t, 5*time.Second, "the late consumer deleted", func() bool {
		n := 0
		for range st.ConsumerNames(ctx).Name() {
			n++
		}
		return n == 0
	})
}
