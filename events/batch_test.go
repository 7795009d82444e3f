package events_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/vmguard/vmguard/events"
	"github.com/vmguard/vmguard/internal/natsd"
	"github.com/vmguard/vmguard/internal/natsd/natstest"
)

// openDurableLog opens a log on a server in the durable default (fsync
// before ack), where atomic batches coalesce their fsyncs.
func openDurableLog(t *testing.T) (*events.Log, *nats.Conn) {
	t.Helper()
	s, err := natsd.Start(natsd.Config{StoreDir: t.TempDir(), Port: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Shutdown)
	nc := natsd.Connect(t, s)
	l, err := events.Open(context.Background(), nc)
	if err != nil {
		t.Fatal(err)
	}
	return l, nc
}

func placed(pkg, node string, epoch uint64) events.Event {
	return events.New("/vmguard/failover", pkg, events.PackagePlaced{Node: node, Epoch: epoch, Reason: "node_lost"})
}

// readAll returns every event in the log, in order.
func readAll(t *testing.T, l *events.Log) []events.Event {
	t.Helper()
	var out []events.Event
	if _, err := l.Replay(context.Background(), events.ReadOptions{}, func(e events.Event) error {
		out = append(out, e)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestAppendBatchAllOrNothing: a batch is stored in order at consecutive
// sequences; one stale expected sequence in it stores none of it; a
// retried batch (same ids) stores nothing twice and returns the first
// copies' sequences; each package's check names the log as it was before
// the batch, so two events about one package can both carry it.
func TestAppendBatchAllOrNothing(t *testing.T) {
	ctx := context.Background()
	l, _ := openDurableLog(t)
	seed, err := l.Append(ctx, placed("db", "node1", 1))
	if err != nil {
		t.Fatal(err)
	}
	batch := []events.BatchItem{
		{Event: placed("web", "node2", 1), Opts: []events.AppendOption{events.ExpectPackageSeq("web", 0)}},
		{Event: events.New("/vmguard/nodes/node2/host", "web", events.PackageStarting{Node: "node2", Epoch: 1}), Opts: []events.AppendOption{events.ExpectPackageSeq("web", 0)}},
		{Event: placed("db", "node2", 2), Opts: []events.AppendOption{events.ExpectPackageSeq("db", seed)}},
	}
	seqs, err := l.AppendBatch(ctx, batch...)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(seqs) != fmt.Sprint([]uint64{seed + 1, seed + 2, seed + 3}) {
		t.Fatalf("sequences %v, want %d..%d", seqs, seed+1, seed+3)
	}
	got := readAll(t, l)
	if len(got) != 4 || got[1].ID != batch[0].Event.ID || got[2].ID != batch[1].Event.ID || got[3].ID != batch[2].Event.ID {
		t.Fatalf("log after the batch: %d events %+v", len(got), got)
	}

	// A retry of the same batch (same ids): the server refuses a batch
	// holding stored ids as a whole, and Log appends it one by one, each
	// deduplicated; as with a retried Append, an expectation the first copy
	// made stale is a conflict. Either way nothing is stored twice.
	last, _ := l.LastSeq(ctx)
	if _, err := l.AppendBatch(ctx, batch...); !errors.Is(err, events.ErrConflict) {
		t.Fatalf("retry of a guarded batch: %v, want ErrConflict (as a retried Append)", err)
	}
	plain := []events.BatchItem{{Event: placed("api", "node1", 1)}, {Event: placed("api2", "node1", 1)}}
	first, err := l.AppendBatch(ctx, plain...)
	if err != nil {
		t.Fatal(err)
	}
	again, err := l.AppendBatch(ctx, plain...)
	if err != nil || fmt.Sprint(again) != fmt.Sprint(first) {
		t.Fatalf("retry of an unguarded batch: %v %v, want the first copies' %v", again, err, first)
	}
	if now, _ := l.LastSeq(ctx); now != last+2 {
		t.Fatalf("retries stored %d events, want only the 2 of the unguarded batch", now-last)
	}

	// db's expectation is stale now: nothing of the batch is stored.
	last, _ = l.LastSeq(ctx)
	stale := []events.BatchItem{
		{Event: placed("web", "node1", 2), Opts: []events.AppendOption{events.ExpectPackageSeq("web", seqs[1])}},
		{Event: placed("db", "node1", 3), Opts: []events.AppendOption{events.ExpectPackageSeq("db", seed)}},
	}
	if _, err := l.AppendBatch(ctx, stale...); !errors.Is(err, events.ErrConflict) {
		t.Fatalf("stale batch: %v, want ErrConflict", err)
	}
	if now, _ := l.LastSeq(ctx); now != last {
		t.Fatalf("a refused batch stored %d events", now-last)
	}
	// The same with the right sequence goes in.
	stale[1].Opts = []events.AppendOption{events.ExpectPackageSeq("db", seqs[2])}
	stale[1].Event = placed("db", "node1", 3)
	if _, err := l.AppendBatch(ctx, stale...); err != nil {
		t.Fatalf("fixed batch: %v", err)
	}
}

// TestAppendAsyncBatchKeepsEachOutcome: a burst of AppendAsync goes out in
// atomic batches, yet an event whose expected sequence is stale fails alone
// (its batch is refused and sent again one by one) and every other event is
// stored once, in the order appended.
func TestAppendAsyncBatchKeepsEachOutcome(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	l, _ := openDurableLog(t)
	seed, err := l.Append(ctx, placed("db", "node1", 1))
	if err != nil {
		t.Fatal(err)
	}
	const n = 3000
	const bad = 1234
	futures := make([]*events.Appending, n)
	ids := make([]string, n)
	for i := range n {
		e := events.New("/vmguard/guests/webvm/agent", "web", events.ProcessStarted{Guest: "webvm", Service: "httpd", PID: 1000 + i, RequestID: fmt.Sprintf("r%d", i), Epoch: 1})
		var opts []events.AppendOption
		if i == bad {
			opts = append(opts, events.ExpectPackageSeq("db", seed+1)) // stale: db's last is seed
		}
		ids[i] = e.ID
		if futures[i], err = l.AppendAsync(e, opts...); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if b := l.Batches(); b == 0 || b > n/2 {
		t.Errorf("%d events went out in %d batches: not grouped", n, b)
	}
	var prev uint64
	for i, f := range futures {
		seq, err := f.Result()
		switch {
		case errors.Is(err, events.ErrPending):
			t.Fatalf("event %d: no outcome after Flush", i)
		case err != nil:
			if i != bad || !errors.Is(err, events.ErrConflict) {
				t.Fatalf("event %d: %v", i, err)
			}
		case i == bad:
			t.Fatalf("event %d with a stale expected sequence stored at %d", i, seq)
		case seq <= prev:
			t.Fatalf("event %d at %d, after %d: out of order", i, seq, prev)
		default:
			prev = seq
		}
	}
	got := readAll(t, l)
	if len(got) != n { // the seed plus n-1
		t.Fatalf("log holds %d events, want %d", len(got), n)
	}
	j := 1
	for i := range n {
		if i == bad {
			continue
		}
		if got[j].ID != ids[i] {
			t.Fatalf("log position %d holds %s, want event %d (%s)", j, got[j].ID, i, ids[i])
		}
		j++
	}
}

// TestAppendBatchOnOldStream: on a stream created without atomic batches
// (before vmguard asked for them; Open does not change it) AppendBatch and
// AppendAsync still work, one event at a time.
func TestAppendBatchOnOldStream(t *testing.T) {
	ctx := context.Background()
	l, _ := oldStreamLog(t)
	seqs, err := l.AppendBatch(ctx, events.BatchItem{Event: placed("web", "node1", 1)}, events.BatchItem{Event: placed("db", "node1", 1)})
	if err != nil || fmt.Sprint(seqs) != "[1 2]" {
		t.Fatalf("AppendBatch on an old stream: %v %v", seqs, err)
	}
	f, err := l.AppendAsync(placed("web", "node2", 2))
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if seq, err := f.Wait(ctx); err != nil || seq != 3 {
		t.Fatalf("AppendAsync on an old stream: sequence %d, %v", seq, err)
	}
}

// TestEnsureStreamMigratesToAtomic: EnsureStream (vmguard server's
// provisioning) turns allow_atomic on in a stream created before it,
// keeping its events; a Log opened afterwards stores its batches
// atomically.
func TestEnsureStreamMigratesToAtomic(t *testing.T) {
	ctx := context.Background()
	old, nc := oldStreamLog(t)
	if _, err := old.Append(ctx, placed("web", "node1", 1)); err != nil {
		t.Fatal(err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	st, err := events.EnsureStream(ctx, js, 1)
	if err != nil {
		t.Fatal(err)
	}
	if !st.CachedInfo().Config.AllowAtomicPublish {
		t.Fatal("EnsureStream left allow_atomic off")
	}
	l, err := events.Open(ctx, nc)
	if err != nil {
		t.Fatal(err)
	}
	seqs, err := l.AppendBatch(ctx, events.BatchItem{Event: placed("db", "node1", 1)}, events.BatchItem{Event: placed("api", "node1", 1)})
	if err != nil || fmt.Sprint(seqs) != "[2 3]" {
		t.Fatalf("AppendBatch after the migration: %v %v", seqs, err)
	}
	if l.Batches() != 1 {
		t.Fatalf("%d atomic batches after the migration, want 1", l.Batches())
	}
	if got := readAll(t, l); len(got) != 3 {
		t.Fatalf("log holds %d events after the migration, want 3", len(got))
	}
}

// oldStreamLog starts a new server whose stream is created as before
// vmguard asked for atomic batches (allow_atomic off) and opens the log on
// it; it returns the log and its connection.
func oldStreamLog(t *testing.T) (*events.Log, *nats.Conn) {
	t.Helper()
	nc := natsd.Connect(t, natsd.StartTest(t))
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	cfg := events.StreamConfig(1)
	cfg.AllowAtomicPublish = false
	if _, err := js.CreateStream(context.Background(), cfg); err != nil {
		t.Fatal(err)
	}
	l, err := events.Open(context.Background(), nc)
	if err != nil {
		t.Fatal(err)
	}
	return l, nc
}

// TestAppendBatchWaitsForRoom: a batch the server refuses because its 50
// open batches a stream are taken (a cluster's host managers' group
// commits) is not appended one event at a time, which would store a
// decision's markers without the decision they guard: it is sent again,
// whole, until its context ends, and then nothing of it is stored; once
// there is room it goes in, all of it at consecutive sequences.
func TestAppendBatchWaitsForRoom(t *testing.T) {
	ctx := context.Background()
	var logs natstest.Buffer
	nc := natsd.Connect(t, natsd.StartTest(t))
	l, err := events.Open(ctx, nc, events.WithLogger(slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))))
	if err != nil {
		t.Fatal(err)
	}
	seed, err := l.Append(ctx, placed("db", "node1", 1))
	if err != nil {
		t.Fatal(err)
	}
	// 50 batches opened and left open (their first message, no commit),
	// on the log's own connection: the server has them before the batch.
	const open = 50
	for i := range open {
		m := nats.NewMsg(events.PlacementSubject("node9"))
		m.Data = []byte("{}")
		m.Header.Set("Nats-Batch-Id", fmt.Sprintf("held-%d", i))
		m.Header.Set("Nats-Batch-Sequence", "1")
		if err := nc.PublishMsg(m); err != nil {
			t.Fatal(err)
		}
	}
	batch := func() []events.BatchItem {
		return []events.BatchItem{
			{Event: placed("web", "node2", 1)},
			{Event: placed("db", "node2", 2), Opts: []events.AppendOption{events.ExpectPackageSeq("db", seed)}},
		}
	}
	short, cancel := context.WithTimeout(ctx, time.Second)
	_, err = l.AppendBatch(short, batch()...)
	cancel()
	if err == nil || errors.Is(err, events.ErrConflict) {
		t.Fatalf("batch with no room for it: %v, want the context's end", err)
	}
	if last, _ := l.LastSeq(ctx); last != seed {
		t.Fatalf("a batch with no room stored %d events one by one", last-seed)
	}
	if n := strings.Count(logs.String(), "refused for now"); n < 2 {
		t.Fatalf("batch sent %d times while there was no room, want it sent again", n)
	}

	// Room comes while the batch waits: the held batches are committed.
	done := make(chan error, 1)
	var seqs []uint64
	go func() {
		var err error
		seqs, err = l.AppendBatch(ctx, batch()...)
		done <- err
	}()
	before := strings.Count(logs.String(), "refused for now")
	natstest.WaitFor(t, 5*time.Second, "the batch refused again", func() bool {
		return strings.Count(logs.String(), "refused for now") > before
	})
	for i := range open {
		m := nats.NewMsg(events.PlacementSubject("node9"))
		m.Data = []byte("{}")
		m.Header.Set("Nats-Batch-Id", fmt.Sprintf("held-%d", i))
		m.Header.Set("Nats-Batch-Sequence", "2")
		m.Header.Set("Nats-Batch-Commit", "1")
		if err := nc.PublishMsg(m); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("batch once there was room: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("batch still waiting 10 s after room came")
	}
	if len(seqs) != 2 || seqs[1] != seqs[0]+1 {
		t.Fatalf("batch stored at %v, want two consecutive sequences", seqs)
	}
}
