package failover

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/vmguard/vmguard/config"
	"github.com/vmguard/vmguard/events"
)

// Snapshots let a controller start without replaying the whole log: its
// State, with the stream sequence it reflects, in a key-value bucket.
const (
	// SnapshotBucket is the key-value bucket of state snapshots.
	SnapshotBucket = "vmguard_snapshots"
	// SnapshotKey is the failover controller's snapshot key.
	SnapshotKey = "failover"
	// snapshotFormat is the version of the snapshot encoding; a snapshot
	// of another format is ignored (the log is replayed instead).
	snapshotFormat = 1
)

// snapshot is the stored form of a State: gzipped JSON.
type snapshot struct {
	Format int `json:"format"`
	// Seq is the stream sequence the state reflects (State.Seq).
	Seq uint64 `json:"seq"`
	// LastID is the id of the last event applied, at stream sequence
	// LastIDSeq (at or below Seq; above it only skipped messages): a
	// loader checks that the log still holds it there, so that a snapshot
	// of another log (a recreated stream) is never used.
	LastID    string `json:"last_id"`
	LastIDSeq uint64 `json:"last_id_seq"`
	// Config is the configuration in force as the log recorded it; the
	// loader decodes it the way State.Apply does, so the loaded state
	// equals a fresh fold.
	Config json.RawMessage `json:"config,omitempty"`
	// State is the state without its Config.
	State   *State    `json:"state"`
	Written time.Time `json:"written"`
	By      string    `json:"by"`
}

// snapshotBucket is the snapshot bucket's set-up.
var snapshotBucket = events.Bucket{
	Name:        SnapshotBucket,
	Description: "vmguard state snapshots for a fast cold start; safe to delete",
}

// ensureSnapshots creates the snapshot bucket if needed.
func ensureSnapshots(ctx context.Context, js jetstream.JetStream) (jetstream.KeyValue, error) {
	return events.EnsureBucket(ctx, js, snapshotBucket)
}

// encodeSnapshot returns the stored form of s.
func encodeSnapshot(sn snapshot) ([]byte, error) {
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestSpeed) // a valid level never fails
	if err := json.NewEncoder(zw).Encode(sn); err != nil {
		return nil, fmt.Errorf("encode snapshot: %w", err)
	}
	if err := zw.Close(); err != nil {
		return nil, fmt.Errorf("encode snapshot: %w", err)
	}
	return buf.Bytes(), nil
}

// decodeSnapshot reads a stored snapshot and rebuilds its State, config
// included.
func decodeSnapshot(b []byte) (snapshot, error) {
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		return snapshot{}, fmt.Errorf("decode snapshot: %w", err)
	}
	raw, err := io.ReadAll(zr)
	if err != nil {
		return snapshot{}, fmt.Errorf("decode snapshot: %w", err)
	}
	var sn snapshot
	if err := json.Unmarshal(raw, &sn); err != nil {
		return snapshot{}, fmt.Errorf("decode snapshot: %w", err)
	}
	switch {
	case sn.Format != snapshotFormat:
		return snapshot{}, fmt.Errorf("decode snapshot: format %d, want %d", sn.Format, snapshotFormat)
	case sn.State == nil:
		return snapshot{}, errors.New("decode snapshot: no state")
	case sn.State.Seq != sn.Seq || sn.LastIDSeq > sn.Seq:
		return snapshot{}, fmt.Errorf("decode snapshot: inconsistent sequences (state %d, snapshot %d, last id %d)", sn.State.Seq, sn.Seq, sn.LastIDSeq)
	}
	if sn.Config != nil {
		c, err := config.FromJSON(sn.Config)
		if err != nil {
			return snapshot{}, fmt.Errorf("decode snapshot: %w", err)
		}
		sn.State.Config = c
	}
	return sn, nil
}

// takeSnapshot captures the runner's state.
func (r *Runner) takeSnapshot() snapshot {
	st := *r.state // shallow: only read while encoding, on the owning goroutine
	st.Config = nil
	return snapshot{
		Format: snapshotFormat, Seq: r.state.Seq, LastID: r.lastID, LastIDSeq: r.lastIDSeq,
		Config: r.configRaw, State: &st, Written: r.cfg.Now().UTC(), By: r.cfg.ID,
	}
}

// snapshots is the runner's part that keeps its state in the snapshot
// bucket: it says when a snapshot is due (Config.SnapshotEvery events
// applied, or Config.SnapshotInterval since the last one with something
// new), writes one, and loads one that belongs to this log. The runner's
// goroutine owns it; intervals are measured on the monotonic clock
// (time.Since), while snapshot contents are stamped by Config.Now.
type snapshots struct {
	kv       jetstream.KeyValue
	every    uint64
	interval time.Duration
	logger   *slog.Logger
	since    uint64    // events applied since the last snapshot
	seq      uint64    // the sequence of the last snapshot written or loaded
	at       time.Time // when it was written or loaded (monotonic)
}

// applied counts one event applied since the last snapshot.
func (sn *snapshots) applied() {
	if sn != nil {
		sn.since++
	}
}

// dueByCount reports whether enough events were applied for a snapshot.
func (sn *snapshots) dueByCount() bool { return sn != nil && sn.since >= sn.every }

// dueByTime reports whether the interval passed with the state, now at
// seq, beyond the last snapshot.
func (sn *snapshots) dueByTime(seq uint64) bool {
	return sn != nil && seq > sn.seq && time.Since(sn.at) >= sn.interval
}

// moved reports whether the state, now at seq, is beyond the last snapshot.
func (sn *snapshots) moved(seq uint64) bool { return sn != nil && seq > sn.seq }

// save writes the snapshot s. A failure is logged and costs only a slower
// cold start; the count starts again either way.
func (sn *snapshots) save(ctx context.Context, s snapshot) bool {
	sn.since, sn.at = 0, time.Now()
	b, err := encodeSnapshot(s)
	if err == nil {
		_, err = sn.kv.Put(ctx, SnapshotKey, b)
	}
	if err != nil {
		if ctx.Err() == nil {
			sn.logger.Warn("write snapshot", "seq", s.Seq, "bytes", len(b), "err", err)
		}
		return false
	}
	sn.seq = s.Seq
	sn.logger.Debug("wrote snapshot", "seq", s.Seq, "bytes", len(b))
	return true
}

// load returns the stored snapshot if there is one that decodes and that
// verify accepts; false (logged) otherwise.
func (sn *snapshots) load(ctx context.Context, verify func(context.Context, snapshot) error) (snapshot, bool) {
	entry, err := sn.kv.Get(ctx, SnapshotKey)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return snapshot{}, false
	}
	if err != nil {
		sn.logger.Warn("read snapshot; replaying the whole log", "err", err)
		return snapshot{}, false
	}
	s, err := decodeSnapshot(entry.Value())
	if err == nil {
		err = verify(ctx, s)
	}
	if err != nil {
		sn.logger.Warn("ignore snapshot; replaying the whole log", "err", err)
		return snapshot{}, false
	}
	sn.seq, sn.at = s.Seq, time.Now()
	sn.logger.Info("loaded snapshot", "seq", s.Seq, "written", s.Written, "by", s.By)
	return s, true
}

// saveSnapshot writes the runner's state to the snapshot bucket.
func (r *Runner) saveSnapshot(ctx context.Context) {
	if r.snaps.save(ctx, r.takeSnapshot()) {
		r.count(func(s *Stats) { s.Snapshots++ })
	}
}

// loadSnapshot starts the state from the stored snapshot if there is one
// that decodes and belongs to this log: the event it names is still at its
// sequence. Otherwise the state stays empty and the whole log is replayed.
func (r *Runner) loadSnapshot(ctx context.Context) {
	sn, ok := r.snaps.load(ctx, r.verifySnapshot)
	if !ok {
		return
	}
	r.state, r.configRaw = sn.State, sn.Config
	r.lastID, r.lastIDSeq = sn.LastID, sn.LastIDSeq
	r.seq.Store(sn.Seq)
	r.count(func(s *Stats) { s.SnapshotSeq = sn.Seq })
}

// verifySnapshot checks that sn was taken from this log.
func (r *Runner) verifySnapshot(ctx context.Context, sn snapshot) error {
	last, err := r.log.LastSeq(ctx)
	if err != nil {
		return err
	}
	if last < sn.Seq {
		return fmt.Errorf("snapshot at seq %d, but the log ends at %d", sn.Seq, last)
	}
	if sn.LastIDSeq == 0 {
		return nil // nothing but skipped messages: nothing to compare
	}
	e, err := r.log.Get(ctx, sn.LastIDSeq)
	if err != nil {
		return fmt.Errorf("snapshot names event %s at seq %d: %w", sn.LastID, sn.LastIDSeq, err)
	}
	if e.ID != sn.LastID {
		return fmt.Errorf("snapshot names event %s at seq %d, the log holds %s there", sn.LastID, sn.LastIDSeq, e.ID)
	}
	return nil
}
