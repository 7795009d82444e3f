package events_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vmguard/vmguard/events"
	"github.com/vmguard/vmguard/internal/natsd"
)

// bigConfig returns a cluster.config_applied whose configuration is about
// size bytes: what `vmguard apply` writes for thousands of packages.
func bigConfig(t *testing.T, size int, tag string) events.Event {
	t.Helper()
	var b strings.Builder
	b.WriteString(`{"cluster":"big","packages":[`)
	for i := 0; b.Len() < size; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"name":"pkg%05d-%s","nodes":["node%03d","node%03d"],"guest":{"name":"vm%05d","driver":"process"},"services":[{"name":"svc","cmd":["sh","-c","sleep 1"]}]}`, i, tag, i%1000, (i+1)%1000, i)
	}
	b.WriteString(`]}`)
	return events.New(events.OperatorSource("test"), "big", events.ConfigApplied{Config: json.RawMessage(b.String()), Hash: "sha256:" + tag, By: "test"})
}

var configSubject = events.ClusterSubject("config_applied")

// openSmallPayloadLog opens a log on a durable server whose messages hold
// at most 64 KiB (max_payload), so that a test's large events take several
// parts without megabytes of JSON.
func openSmallPayloadLog(t *testing.T) *events.Log {
	t.Helper()
	conf := filepath.Join(t.TempDir(), "nats.conf")
	if err := os.WriteFile(conf, []byte("max_payload: 65536\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := natsd.Start(natsd.Config{StoreDir: t.TempDir(), Port: -1, ConfigFile: conf})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Shutdown)
	nc := natsd.Connect(t, s)
	if mp := nc.MaxPayload(); mp != 65536 {
		t.Fatalf("max payload %d, want 65536", mp)
	}
	l, err := events.Open(context.Background(), nc)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// TestLargeEventInParts: an event larger than a message (a configuration of
// some 1,000 packages, 200 KB, against 64 KiB messages) is stored in parts in one atomic batch and read
// back whole by Replay, Follow, Get and Tail, at its last part's sequence;
// its expected-sequence check refuses all of it; a retried Append stores
// nothing twice; AppendAsync and several events in one AppendBatch refuse
// it; a stream without atomic batches refuses it rather than store a part.
func TestLargeEventInParts(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	l := openSmallPayloadLog(t)
	before, err := l.Append(ctx, placed("web", "node1", 1))
	if err != nil {
		t.Fatal(err)
	}
	big := bigConfig(t, 200_000, "a")
	want := big.Data.(events.ConfigApplied).Config
	seq, err := l.Append(ctx, big, events.ExpectLastSeq(configSubject, 0))
	if err != nil {
		t.Fatal(err)
	}
	if parts := seq - before; parts < 4 {
		t.Fatalf("a 200 KB event took %d messages, want at least 4 parts", parts)
	}
	after, err := l.Append(ctx, placed("db", "node1", 1))
	if err != nil {
		t.Fatal(err)
	}
	check := func(how string, e events.Event) {
		t.Helper()
		d, ok := e.Data.(events.ConfigApplied)
		if !ok || e.ID != big.ID || e.Seq != seq || !bytes.Equal(d.Config, want) {
			t.Fatalf("%s: %s at %d (%d config bytes), want %s at %d (%d bytes)", how, e.Type(), e.Seq, len(d.Config), big.ID, seq, len(want))
		}
	}

	got := readAll(t, l)
	if len(got) != 3 || got[0].Seq != before || got[2].Seq != after {
		t.Fatalf("replay: %d events, want 3 (the parts as one); skipped %d", len(got), l.Skipped())
	}
	check("replay", got[1])
	if n := l.Skipped(); n != 0 {
		t.Fatalf("replay skipped %d messages", n)
	}

	e, err := l.Get(ctx, seq)
	if err != nil {
		t.Fatal(err)
	}
	check("get", e)
	if _, err := l.Get(ctx, seq-1); !errors.Is(err, events.ErrInvalid) {
		t.Fatalf("get of a part that is not the last: %v, want ErrInvalid", err)
	}

	tail, err := l.Tail(ctx, configSubject)
	if err != nil || !tail.Found || tail.Seq != seq {
		t.Fatalf("tail: found %v at %d, %v; want %d", tail.Found, tail.Seq, err, seq)
	}
	check("tail", tail.Event)

	fctx, fcancel := context.WithCancel(ctx)
	var followed []events.Event
	err = l.Follow(fctx, events.ReadOptions{Subjects: []string{configSubject}}, func(e events.Event) error {
		followed = append(followed, e)
		fcancel()
		return nil
	})
	fcancel()
	if err != nil || len(followed) != 1 {
		t.Fatalf("follow: %d events, %v", len(followed), err)
	}
	check("follow", followed[0])

	// A retry (same id) is stored once and answers with the first copy's
	// sequence.
	last, _ := l.LastSeq(ctx)
	if again, err := l.Append(ctx, big); err != nil || again != seq {
		t.Fatalf("retried append: %d, %v; want %d", again, err, seq)
	}
	// A stale check refuses every part.
	if _, err := l.Append(ctx, bigConfig(t, 100_000, "b"), events.ExpectLastSeq(configSubject, 0)); !errors.Is(err, events.ErrConflict) {
		t.Fatalf("stale large append: %v, want ErrConflict", err)
	}
	if now, _ := l.LastSeq(ctx); now != last {
		t.Fatalf("retry and refused append stored %d messages", now-last)
	}
	// The right check stores it.
	next := bigConfig(t, 100_000, "c")
	s2, err := l.Append(ctx, next, events.ExpectLastSeq(configSubject, seq))
	if err != nil {
		t.Fatal(err)
	}
	if tail, err := l.Tail(ctx, configSubject); err != nil || tail.Seq != s2 || tail.Event.ID != next.ID {
		t.Fatalf("tail after the second config: %d %s, %v; want %d %s", tail.Seq, tail.Event.ID, err, s2, next.ID)
	}

	if _, err := l.AppendAsync(bigConfig(t, 100_000, "d")); !errors.Is(err, events.ErrTooLarge) {
		t.Fatalf("AppendAsync of a large event: %v, want ErrTooLarge", err)
	}
	if _, err := l.AppendBatch(ctx, events.BatchItem{Event: bigConfig(t, 100_000, "e")}, events.BatchItem{Event: placed("api", "node1", 1)}); !errors.Is(err, events.ErrTooLarge) {
		t.Fatalf("AppendBatch with a large event among others: %v, want ErrTooLarge", err)
	}
	if now, _ := l.LastSeq(ctx); now != s2 {
		t.Fatalf("refused appends stored %d messages", now-s2)
	}
}

// TestLargeEventNeedsAtomicStream: on a stream without atomic batches a
// large event (1.2 MB against the default 1 MB messages) is refused whole
// (ErrTooLarge), nothing stored.
func TestLargeEventNeedsAtomicStream(t *testing.T) {
	ctx := context.Background()
	l, _ := oldStreamLog(t)
	if _, err := l.Append(ctx, bigConfig(t, 1_200_000, "a")); !errors.Is(err, events.ErrTooLarge) {
		t.Fatalf("large append on a stream without atomic batches: %v, want ErrTooLarge", err)
	}
	if n, _ := l.LastSeq(ctx); n != 0 {
		t.Fatalf("%d messages stored", n)
	}
}

// TestLargeEventInPartsR3: on a three-server cluster (R3 log) an event in
// parts, appended while another writer appends small events as fast as it
// can, is stored whole and unbroken (nothing between its parts: the batch
// is one raft proposal) and read back whole.
func TestLargeEventInPartsR3(t *testing.T) {
	c := natsd.StartCluster(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	nc := c.Connect(t)
	l := openR3(t, c, nc)
	other := openR3(t, c, c.Connect(t)) // bounded tries: a request to a cluster just formed may go unanswered
	stop := make(chan struct{})
	done := make(chan int)
	started := make(chan struct{})
	go func() {
		n := 0
		defer func() { done <- n }()
		defer func() {
			if n == 0 {
				close(started)
			}
		}()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := other.Append(ctx, placed(fmt.Sprintf("p%d", i%50), "node1", uint64(i+1))); err != nil {
				t.Error(err)
				return
			}
			if n++; n == 1 {
				close(started) // the other writer under way
			}
		}
	}()
	<-started
	big := bigConfig(t, 1_500_000, "r3")
	seq, err := l.Append(ctx, big)
	close(stop)
	small := <-done
	if err != nil {
		t.Fatal(err)
	}
	if last, _ := l.LastSeq(ctx); last <= seq {
		t.Logf("no small event after the large one (%d small events, the large one at %d)", small, seq)
	}
	got := readAll(t, l)
	if len(got) != small+1 || l.Skipped() != 0 {
		t.Fatalf("replay: %d events (skipped %d), want the %d small ones and the large one", len(got), l.Skipped(), small)
	}
	for _, e := range got {
		if e.ID == big.ID {
			d := e.Data.(events.ConfigApplied)
			if e.Seq != seq || !bytes.Equal(d.Config, big.Data.(events.ConfigApplied).Config) {
				t.Fatalf("the large event read at %d with %d config bytes, want %d and the same bytes", e.Seq, len(d.Config), seq)
			}
			return
		}
	}
	t.Fatal("the large event is not in the log")
}
