package events_test

import (
	"context"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/vmguard/vmguard/events"
)

// TestReadersNameTheirConsumers: a read's consumer is named once, so that
// a create retried after a timeout the server did answer finds the
// consumer its first attempt made rather than making another (nats.go
// names an unnamed one afresh on each attempt: a slow server was left
// with one per attempt).
func TestReadersNameTheirConsumers(t *testing.T) {
	ctx := context.Background()
	_, nc := openLog(t)
	a, b := events.ConsumerConfigForTest(events.ReadOptions{}), events.ConsumerConfigForTest(events.ReadOptions{})
	if a.Name == "" || a.Name == b.Name {
		t.Fatalf("consumer names %q and %q, want two different names", a.Name, b.Name)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	st, err := js.Stream(ctx, events.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	for range 2 { // an attempt, and its retry
		if _, err := st.CreateConsumer(ctx, a); err != nil {
			t.Fatal(err)
		}
	}
	n := 0
	for range st.ConsumerNames(ctx).Name() {
		n++
	}
	if n != 1 {
		t.Errorf("%d consumers after a create and its retry, want 1", n)
	}
}
