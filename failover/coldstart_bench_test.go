package failover

import (
	"flag"
	"fmt"
	"testing"
	"time"

	"github.com/vmguard/vmguard/events"
)

var coldEvents = flag.Int("coldstart.events", 1_000_000, "events in the log of BenchmarkColdStart")

// coldTail is how many events the log holds after the snapshot of the
// "snapshot" case: what a controller that stopped a little while ago
// finds new when it starts again.
const coldTail = 10_000

// BenchmarkColdStart measures the failover controller's cold start on a
// long log (1,000,000 events by default, -coldstart.events N), from New to
// CaughtUp, over TCP to an embedded server:
//
//   - replay: no snapshot, the whole log is read, decoded, schema-checked
//     and folded;
//   - snapshot: from a snapshot taken coldTail events before the end;
//   - log-replay: events.Log.Replay alone with a no-op handler, what bounds
//     the replay case.
//
// The log is built once, with AppendAsync: benchLog's mix (100 packages on
// 3 nodes, mostly process exits and starts and service restarts, a
// failover every ~300 events).
//
//	go test ./failover/ -run '^$' -bench ColdStart -benchtime 3x -timeout 30m
func BenchmarkColdStart(b *testing.B) {
	n := *coldEvents
	env := newEnv(b)
	env.holdLeaderKey() // the runners stay standbys and decide nothing
	start := time.Now()
	var pending []events.Event
	flush := func() {
		env.appendAll(pending)
		pending = pending[:0]
	}
	genBenchLog(n, 100, func(e events.Event) {
		e.ID = events.NewID()
		pending = append(pending, e)
		if len(pending) == 50_000 || int(e.Seq) == n-coldTail {
			flush()
		}
	})
	// The runner that leaves the snapshot starts before the last coldTail
	// events are appended; genBenchLog may overshoot n by a few events.
	if len(pending) > coldTail+10 {
		b.Fatalf("%d events pending", len(pending))
	}
	built := time.Since(start)
	base := env.lastSeq()
	b.Logf("log of %d events built in %s (%.0f events/s)", base, built.Round(time.Millisecond), float64(base)/built.Seconds())

	w := env.start("snapshot-writer", Config{ElectionTTL: time.Hour, SnapshotEvery: 1 << 40})
	<-w.CaughtUp()
	w.stop(b)
	if s := w.Stats(); s.Seq != base {
		b.Fatalf("snapshot writer at %d, want %d", s.Seq, base)
	}
	snaps, err := ensureSnapshots(env.ctx, env.js)
	if err != nil {
		b.Fatal(err)
	}
	entry, err := snaps.Get(env.ctx, SnapshotKey)
	if err != nil {
		b.Fatal(err)
	}
	snapshotBytes := entry.Value()
	flush()
	last := env.lastSeq()
	b.Logf("snapshot at seq %d (%d bytes), log ends at %d", base, len(snapshotBytes), last)

	coldStart := func(b *testing.B, name string, cfg Config) {
		cfg.ElectionTTL = time.Hour
		for i := 0; b.Loop(); i++ {
			t0 := time.Now()
			r := env.start(fmt.Sprintf("%s-%d", name, i), cfg)
			<-r.CaughtUp()
			took := time.Since(t0)
			b.StopTimer()
			s := r.Stats()
			r.stop(b)
			if s.Seq != last {
				b.Fatalf("caught up at %d, want %d", s.Seq, last)
			}
			b.Logf("%s: caught up with %d events in %s (snapshot at %d, %.0f events/s read)", name, last, took.Round(time.Millisecond), s.SnapshotSeq, float64(last-s.SnapshotSeq)/took.Seconds())
			// Put the snapshot back as it was: the stop wrote a newer one.
			if _, err := snaps.Put(env.ctx, SnapshotKey, snapshotBytes); err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
		}
	}
	b.Run("snapshot", func(b *testing.B) {
		coldStart(b, "snapshot", Config{SnapshotEvery: 1 << 40})
	})
	b.Run("replay", func(b *testing.B) {
		coldStart(b, "replay", Config{NoSnapshot: true})
		b.ReportMetric(float64(last)*float64(b.N)/b.Elapsed().Seconds(), "events/s")
	})
	b.Run("log-replay", func(b *testing.B) {
		for b.Loop() {
			var count uint64
			if _, err := env.log.Replay(env.ctx, events.ReadOptions{}, func(events.Event) error { count++; return nil }); err != nil {
				b.Fatal(err)
			}
			if count != last {
				b.Fatalf("replayed %d, want %d", count, last)
			}
		}
		b.ReportMetric(float64(last)*float64(b.N)/b.Elapsed().Seconds(), "events/s")
	})
}
