package events_test

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/vmguard/vmguard/events"
	"github.com/vmguard/vmguard/internal/natsd"
)

// A replay whose connection the server cuts as a slow consumer loses the
// messages on their way (its consumer takes no acks, so nothing is sent
// again). The server here lets a client fall 256 KiB behind, far less than
// the bytes a replay asks for at once, so every replay of a few MB is cut,
// in its middle and at its end. The replay notices the gap (the consumer's
// delivery sequence, or the consumer saying it sent more than arrived),
// reads again after the last event it handed on, and hands every event
// once, in order: the events in parts too, which it never starts reading
// in their middle.
func TestReplayReadsAgainWhatWasLostInDelivery(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	s := natsd.StartTestConf(t, t.TempDir(), "max_pending: 262144\nmax_payload: 65536\n")
	w, err := events.Open(ctx, natsd.Connect(t, s))
	if err != nil {
		t.Fatal(err)
	}
	const n, every = 3000, 500
	reason := strings.Repeat("r", 1000)
	var want []string // event IDs in log order
	var pending []*events.Appending
	for i := range n {
		if i%every == every-1 {
			for _, a := range pending {
				if _, err := a.Wait(ctx); err != nil {
					t.Fatal(err)
				}
			}
			pending = pending[:0]
			e := bigConfig(t, 200<<10, fmt.Sprint(i))
			if _, err := w.Append(ctx, e); err != nil {
				t.Fatalf("append config: %v", err)
			}
			want = append(want, e.ID)
			continue
		}
		e := events.New(events.OperatorSource("test"), fmt.Sprintf("p%d", i%50), events.PackageReset{Reason: reason, By: "test"})
		a, err := w.AppendAsync(e)
		if err != nil {
			t.Fatal(err)
		}
		pending = append(pending, a)
		want = append(want, e.ID)
	}
	for _, a := range pending {
		if _, err := a.Wait(ctx); err != nil {
			t.Fatal(err)
		}
	}

	var logged lockedBuffer
	r, err := events.Open(ctx, natsd.Connect(t, s), events.WithLogger(slog.New(slog.NewTextHandler(&logged, nil))))
	if err != nil {
		t.Fatal(err)
	}
	for round := range 2 {
		var got []string
		start := time.Now()
		last, err := r.Replay(ctx, events.ReadOptions{}, func(e events.Event) error {
			got = append(got, e.ID)
			return nil
		})
		if err != nil {
			t.Fatalf("round %d: replay: %v\n%s", round, err, logged.String())
		}
		if len(got) != len(want) {
			t.Fatalf("round %d: replay handed %d events, want %d (last %d)", round, len(got), len(want), last)
		}
		for i := range want {
			if got[i] != want[i] {
				t.Fatalf("round %d: event %d is %s, want %s", round, i, got[i], want[i])
			}
		}
		t.Logf("round %d: %d events in %v", round, len(got), time.Since(start).Round(time.Millisecond))
	}
	resumes := strings.Count(logged.String(), "reading again after")
	if resumes == 0 {
		t.Fatalf("no replay lost messages on its way: the server did not cut the reader (the test proves nothing)\n%s", logged.String())
	}
	t.Logf("%d resumes after lost messages", resumes)
	if testing.Verbose() {
		t.Log(logged.String())
	}
}
