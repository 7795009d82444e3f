package failover

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/vmguard/vmguard/events"
)

// snapshotLog returns a log that reaches every corner of the state: the
// fixtures (operator commands, failover, node loss) and a long run of
// restarts and failovers.
func snapshotLog(t testing.TB) []events.Event {
	t.Helper()
	files, err := filepath.Glob("testdata/*.jsonl")
	if err != nil || len(files) == 0 {
		t.Fatalf("fixtures: %v", err)
	}
	var evs []events.Event
	for _, f := range files {
		evs = append(evs, loadFixture(t, f)...)
	}
	evs = append(evs, benchLog(3000, 10)...)
	for i := range evs {
		evs[i].Seq = uint64(i + 1)
		evs[i].ID = events.NewID() // the fixtures share ids; a log holds each once
	}
	return evs
}

// foldRunner folds evs the way a Runner does (what snapshots need
// included), without any I/O.
func foldRunner(evs []events.Event) *Runner {
	r := &Runner{cfg: Config{ID: "t", Now: time.Now}, state: &State{}, pending: map[string]uint64{}}
	for _, e := range evs {
		r.apply(e)
	}
	return r
}

// TestSnapshotRoundTrip: a snapshot taken at any point and read back
// equals a fresh fold of the log up to that point.
func TestSnapshotRoundTrip(t *testing.T) {
	evs := snapshotLog(t)
	for _, n := range []int{0, 1, 5, 40, 90, len(evs) / 2, len(evs)} {
		r := foldRunner(evs[:n])
		b, err := encodeSnapshot(r.takeSnapshot())
		if err != nil {
			t.Fatal(err)
		}
		sn, err := decodeSnapshot(b)
		if err != nil {
			t.Fatalf("after %d events: %v", n, err)
		}
		want := Fold(evs[:n])
		sameState(t, sn.State, want)
		if n > 0 && (sn.LastID != evs[n-1].ID || sn.LastIDSeq != evs[n-1].Seq || sn.Seq != evs[n-1].Seq) {
			t.Fatalf("after %d events: snapshot names %s at %d (seq %d), want %s at %d", n, sn.LastID, sn.LastIDSeq, sn.Seq, evs[n-1].ID, evs[n-1].Seq)
		}
		// The loaded state folds on exactly as the original does.
		if n < len(evs) {
			rest := evs[n:]
			for _, e := range rest {
				sn.State.Apply(e)
			}
			sameState(t, sn.State, Fold(evs))
		}
	}
	if _, err := decodeSnapshot([]byte("not gzip")); err == nil {
		t.Fatal("decoded garbage")
	}
}

// appendAll appends evs to the log asynchronously and waits for all.
func (env *testEnv) appendAll(evs []events.Event) {
	env.t.Helper()
	for _, e := range evs {
		e.Seq = 0
		if _, err := env.log.AppendAsync(e); err != nil {
			env.t.Fatal(err)
		}
	}
	if err := env.log.Flush(env.ctx); err != nil {
		env.t.Fatal(err)
	}
}

// TestColdStartFromSnapshot: a controller that stops cleanly leaves a
// snapshot; the next one starts from it, reads only the rest of the log,
// and ends with the same state as a full fold.
func TestColdStartFromSnapshot(t *testing.T) {
	env := newEnv(t)
	env.holdLeaderKey() // the runners stay standbys: the log is not changed under them
	evs := snapshotLog(t)
	env.appendAll(evs[:len(evs)-100])
	standby := Config{ElectionTTL: time.Minute, SnapshotEvery: 1000}

	a := env.start("a", standby)
	<-a.CaughtUp()
	a.stop(t)
	sa := a.Stats()
	if sa.SnapshotSeq != 0 || sa.Snapshots < 2 || sa.Seq != uint64(len(evs)-100) {
		t.Fatalf("first runner: %+v; want a full replay, snapshots on the way and at exit", sa)
	}

	env.appendAll(evs[len(evs)-100:])
	b := env.start("b", standby)
	<-b.CaughtUp()
	if sb := b.Stats(); sb.SnapshotSeq != sa.Seq || sb.Seq != uint64(len(evs)) {
		t.Fatalf("second runner: %+v; want to start from the snapshot at %d and reach %d", sb, sa.Seq, len(evs))
	}
	got, err := b.State(env.ctx)
	if err != nil {
		t.Fatal(err)
	}
	sameState(t, got, Fold(env.all()))
	t.Logf("full replay of %d events: %s; from the snapshot: %s", sa.Seq, sa.CatchUp.Round(time.Millisecond), b.Stats().CatchUp.Round(time.Millisecond))

	// A runner that does not use snapshots replays everything, to the
	// same state.
	c := env.start("c", Config{ElectionTTL: time.Minute, NoSnapshot: true})
	<-c.CaughtUp()
	gotc, err := c.State(env.ctx)
	if err != nil {
		t.Fatal(err)
	}
	sameState(t, gotc, got)
}

// TestSnapshotOfAnotherLog: a snapshot whose event is not in the log (the
// stream was recreated, or it is garbage) is ignored and the whole log
// replayed.
func TestSnapshotOfAnotherLog(t *testing.T) {
	env := newEnv(t)
	env.holdLeaderKey()
	evs := snapshotLog(t)[:200]
	env.appendAll(evs)
	kv, err := ensureSnapshots(env.ctx, env.js)
	if err != nil {
		t.Fatal(err)
	}
	other := foldRunner(snapshotLog(t)[:150]) // same shape, other ids
	good, err := encodeSnapshot(other.takeSnapshot())
	if err != nil {
		t.Fatal(err)
	}
	ahead := foldRunner(append(snapshotLog(t), snapshotLog(t)...))
	beyond, err := encodeSnapshot(ahead.takeSnapshot())
	if err != nil {
		t.Fatal(err)
	}
	for name, b := range map[string][]byte{"other ids": good, "beyond the log": beyond, "garbage": []byte("{}")} {
		t.Run(name, func(t *testing.T) {
			if _, err := kv.Put(env.ctx, SnapshotKey, b); err != nil {
				t.Fatal(err)
			}
			r := env.start(name, Config{ElectionTTL: time.Minute, SnapshotEvery: 1 << 30})
			<-r.CaughtUp()
			if s := r.Stats(); s.SnapshotSeq != 0 || s.Seq != uint64(len(evs)) {
				t.Fatalf("%+v: want the snapshot ignored and the log replayed", s)
			}
			got, err := r.State(env.ctx)
			if err != nil {
				t.Fatal(err)
			}
			sameState(t, got, Fold(env.all()))
			r.stop(t)
		})
	}
}

// TestSnapshotsDue: the snapshot part is due after every events, or after
// interval once the state moved past the last snapshot; without snapshots
// (nil) it is never due and counting is a no-op.
func TestSnapshotsDue(t *testing.T) {
	var none *snapshots
	none.applied()
	if none.dueByCount() || none.dueByTime(10) || none.moved(10) {
		t.Fatal("no snapshots, yet one is due")
	}
	sn := &snapshots{every: 3, interval: time.Hour, seq: 5, at: time.Now()}
	sn.applied()
	sn.applied()
	if sn.dueByCount() {
		t.Fatal("due by count after 2 of 3 events")
	}
	sn.applied()
	if !sn.dueByCount() {
		t.Fatal("not due by count after 3 events")
	}
	if sn.dueByTime(9) {
		t.Fatal("due by time before the interval passed")
	}
	sn.interval = 0
	if sn.dueByTime(5) || !sn.dueByTime(6) {
		t.Fatal("by time: due only once the state moved past the last snapshot")
	}
	if sn.moved(5) || !sn.moved(6) {
		t.Fatal("moved: only past the last snapshot's sequence")
	}
}
