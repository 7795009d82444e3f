package failover

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/vmguard/vmguard/events"
	"github.com/vmguard/vmguard/internal/lease"
)

// The leader election: one key in a key-value bucket whose TTL is the
// election TTL. Whoever creates the key leads until it fails to renew it.
const (
	// ElectionBucket is the key-value bucket of the leader lease.
	ElectionBucket = "vmguard_failover"
	// LeaderKey is the key the leader holds.
	LeaderKey = "leader"
)

// LeaderValue is what the leader key holds.
type LeaderValue struct {
	// ID is the leading instance (Config.ID).
	ID string `json:"id"`
	// Run is unique to one Runner: a leader that lost its key only for a
	// moment (a renewal that failed while the key stayed) takes it back
	// when the key still names its Run, and never one of another
	// instance that shares its ID.
	Run string `json:"run"`
	// Since is when it became leader, by its clock.
	Since time.Time `json:"since"`
	// TTLMS is the election TTL in milliseconds.
	TTLMS int64 `json:"ttl_ms"`
}

// electionBucket is the election bucket's set-up with key TTL ttl.
func electionBucket(ttl time.Duration) events.Bucket {
	return events.Bucket{
		Name:        ElectionBucket,
		Description: "vmguard failover controller leader; the key expires when the leader stops renewing it",
		TTL:         ttl,
	}
}

// ensureElection creates the election bucket or sets its TTL to ttl.
func ensureElection(ctx context.Context, js jetstream.JetStream, ttl time.Duration) (jetstream.KeyValue, error) {
	return events.EnsureBucket(ctx, js, electionBucket(ttl))
}

// CurrentLeader returns who holds the leader key, and false if no one does.
func CurrentLeader(ctx context.Context, js jetstream.JetStream) (LeaderValue, bool, error) {
	kv, err := js.KeyValue(ctx, ElectionBucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return LeaderValue{}, false, nil
	}
	if err != nil {
		return LeaderValue{}, false, fmt.Errorf("open election bucket: %w", err)
	}
	e, err := kv.Get(ctx, LeaderKey)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return LeaderValue{}, false, nil
	}
	if err != nil {
		return LeaderValue{}, false, fmt.Errorf("get leader: %w", err)
	}
	var v LeaderValue
	if err := json.Unmarshal(e.Value(), &v); err != nil {
		return LeaderValue{}, false, fmt.Errorf("decode leader: %w", err)
	}
	return v, true, nil
}

// elector is the runner's part that campaigns for the leader key and holds
// it (Run, on its own goroutine), telling the main loop each change of
// leadership. Leading may be called from any goroutine: it reports whether
// the lease still holds by the monotonic clock, which a wall-clock step
// cannot stretch; the injected clock (now) only stamps LeaderValue.Since.
type elector struct {
	kv     jetstream.KeyValue // set before Run
	ttl    time.Duration
	id     string // Config.ID
	run    string // unique to one Runner
	now    func() time.Time
	logger *slog.Logger
	base   time.Time // monotonic reference of validUntil
	// validUntil is when leadership ends, in nanoseconds since base
	// (monotonic); 0 when not leading.
	validUntil atomic.Int64
}

// newElector returns the elector of the runner run (Config.ID id).
func newElector(id, run string, ttl time.Duration, now func() time.Time, logger *slog.Logger) *elector {
	return &elector{ttl: ttl, id: id, run: run, now: now, logger: logger, base: time.Now()}
}

// leading reports whether leadership holds now.
func (r *elector) leading() bool { return r.mono() < r.validUntil.Load() }

// always makes this instance lead for good, without a key (NoElection).
func (r *elector) always() { r.validUntil.Store(math.MaxInt64) }

// resign ends leadership at once (the runner stops).
func (r *elector) resign() { r.validUntil.Store(0) }

func (r *elector) mono() int64 { return int64(time.Since(r.base)) }

// Run campaigns for the leader key and holds it while it can, telling
// the main loop each change on lead, until ctx ends; then it deletes the key
// if it still holds it, so that a standby takes over at once.
func (r *elector) Run(ctx context.Context, lead chan<- bool) {
	kv := r.kv
	tell := func(v bool) bool {
		select {
		case lead <- v:
			return true
		case <-ctx.Done():
			return false
		}
	}
	for {
		rev, ok := r.campaign(ctx, kv)
		if !ok {
			return
		}
		if !tell(true) {
			r.release(ctx, kv, rev)
			return
		}
		rev = r.hold(ctx, kv, rev)
		r.validUntil.Store(0)
		if ctx.Err() != nil {
			r.release(ctx, kv, rev)
			return
		}
		if !tell(false) {
			return
		}
	}
}

// campaign creates the leader key as soon as it is absent (expired or
// released) and returns its revision; false when ctx ended first. It polls
// every TTL/6 (at most 250ms) for a key that expired, and watches the key
// so that a leader's release is taken over at once.
func (r *elector) campaign(ctx context.Context, kv jetstream.KeyValue) (uint64, bool) {
	ttl := r.ttl
	poll := lease.ElectionPoll(ttl)
	val := r.leaderValue()
	var released <-chan jetstream.KeyValueEntry
	if w, err := kv.Watch(ctx, LeaderKey, jetstream.UpdatesOnly()); err == nil {
		defer func() { _ = w.Stop() }()
		released = w.Updates()
	}
	var lastErr string
	for {
		e, err := kv.Get(ctx, LeaderKey)
		var prev uint64 // the revision to replace; 0: create
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
			err = nil
		case err == nil && r.ours(e.Value()):
			prev = e.Revision()
		case err == nil:
			prev = math.MaxUint64 // someone else leads
		}
		if err == nil && prev != math.MaxUint64 {
			start := r.mono()
			cctx, cancel := context.WithTimeout(ctx, ttl)
			var rev uint64
			if prev == 0 {
				rev, err = kv.Create(cctx, LeaderKey, val)
			} else {
				rev, err = kv.Update(cctx, LeaderKey, val, prev)
			}
			cancel()
			if err == nil {
				r.validUntil.Store(start + int64(ttl))
				return rev, true
			}
			if errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
				err = nil // another instance was faster
			}
		}
		if err != nil && ctx.Err() == nil && err.Error() != lastErr {
			lastErr = err.Error()
			r.logger.Warn("campaign for leadership", "err", err)
		}
		t := time.NewTimer(poll)
		select {
		case <-ctx.Done():
			t.Stop()
			return 0, false
		case <-t.C:
		case _, ok := <-released: // any change, a release included: look again now
			t.Stop()
			if !ok {
				released = nil // the watcher ended; poll only
			}
		}
	}
}

// leaderValue is what this runner writes in the leader key.
func (r *elector) leaderValue() []byte {
	b, _ := json.Marshal(LeaderValue{ID: r.id, Run: r.run, Since: r.now().UTC(), TTLMS: r.ttl.Milliseconds()})
	return b
}

// ours reports whether a leader key's value names this runner.
func (r *elector) ours(b []byte) bool {
	var v LeaderValue
	return json.Unmarshal(b, &v) == nil && v.Run == r.run
}

// hold renews the leader key every TTL/3 with the revision it last wrote,
// and returns when a renewal fails or ctx ends, with the last revision it
// holds. A renewal that fails means another instance may lead: the main
// loop stops deciding at once (validUntil is cleared by the caller; until
// then it has already run out if the TTL passed without a renewal).
func (r *elector) hold(ctx context.Context, kv jetstream.KeyValue, rev uint64) uint64 {
	ttl := r.ttl
	val := r.leaderValue()
	t := time.NewTicker(lease.ElectionRenewEvery(ttl))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return rev
		case <-t.C:
		}
		start := r.mono()
		left := time.Duration(r.validUntil.Load() - start)
		if left <= 0 {
			r.logger.Warn("leadership expired before it could be renewed", "id", r.id)
			return 0
		}
		cctx, cancel := context.WithTimeout(ctx, left)
		next, err := kv.Update(cctx, LeaderKey, val, rev)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return rev
			}
			r.logger.Warn("renew leadership", "id", r.id, "err", err)
			return 0
		}
		rev = next
		r.validUntil.Store(start + int64(ttl))
	}
}

// release deletes the leader key if this instance still holds it. It reads
// the key rather than trusting the last revision it knows: a renewal cut
// short by the stop may have been stored without its ack arriving.
func (r *elector) release(ctx context.Context, kv jetstream.KeyValue, rev uint64) {
	r.validUntil.Store(0)
	if rev == 0 {
		return
	}
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	err := lease.Release(dctx, kv, LeaderKey, r.ours)
	if errors.Is(err, lease.ErrNotHeld) {
		return // expired, or someone else leads already
	}
	if err != nil {
		r.logger.Warn("release leadership; the key expires by itself", "err", err)
		return
	}
	r.logger.Info("released leadership", "id", r.id)
}
