package lease

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Observation is one revision of a node's lease key as a Watcher saw it.
type Observation struct {
	// Node is whose key it is.
	Node string
	// Rev is the key's revision (the stream sequence).
	Rev uint64
	// Stamp is the server's stamp of the revision.
	Stamp time.Time
	// Deleted: a delete or purge marker (a lapse), not a Value.
	Deleted bool
	// Value is the key's value (a Value), unless Deleted.
	Value []byte
	// At is when it was written, as well as the watcher can tell
	// (WrittenAt): the moment a live watch delivered it, or the server's
	// stamp clamped between what the watcher knows.
	At time.Time
}

// Watcher follows one node's lease key, the node given by Node and free to
// change while it runs, and hands each revision it sees to Observe. It is
// what a guest agent fences by (guestagent/fence.go keeps the fence timer
// and state; the Watcher only observes). Two observers feed Observe, which
// must apply each revision once (Newer) and be safe for concurrent use: a
// poll of the key by direct get every PollEvery(TTL()), the one that must
// work, since any replica of the bucket answers it; and a watch, the fast
// path, which sees a renewal or a delete the moment it is written but whose
// consumer lives on one server: if that server goes away, nats.go notices
// only after missed heartbeats (~10 s), and the poll carries on meanwhile.
//
// Usage:
//
//	w := &lease.Watcher{Conn: nc, Node: func() string { return "node1" }, TTL: ttlSeen,
//		Observe: apply, Kick: kick, Clock: lease.SystemClock{}, Logger: log}
//	go w.Run(ctx)
//
// Send on Kick to make it watch afresh: after a lapse (the watch itself may
// be what went stale) or when Node changes. Observe returns whether the
// observation's revision is the newest applied (new now, or seen before):
// the poll then knows that the next revision was written after its send.
type Watcher struct {
	// Conn is the NATS connection (a guest's least-privilege user will do:
	// internal/guestauth).
	Conn *nats.Conn
	// Node returns the node whose key to follow now; "" waits for a Kick.
	Node func() string
	// TTL returns the TTL of the last renewal seen (0: none yet); it sets the
	// poll's cadence.
	TTL func() time.Duration
	// Observe applies an observation (see above).
	Observe func(Observation) bool
	// Kick makes the watch start afresh.
	Kick <-chan struct{}
	// Clock times the observations (default SystemClock).
	Clock Clock
	// Logger receives the watcher's retries and recoveries (default: discard).
	Logger *slog.Logger
}

// Watch bounds.
const (
	watchOpenTimeout = 2 * time.Second
	watchMinRetry    = 50 * time.Millisecond
	watchMaxRetry    = 500 * time.Millisecond
	pollWaiting      = 250 * time.Millisecond // poll interval before a ttl is known
)

// Run watches and polls until ctx ends.
func (w *Watcher) Run(ctx context.Context) {
	if w.Clock == nil {
		w.Clock = SystemClock{}
	}
	if w.Logger == nil {
		w.Logger = slog.New(slog.DiscardHandler)
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		w.watch(ctx)
	}()
	go func() {
		defer wg.Done()
		w.poll(ctx)
	}()
	wg.Wait()
}

// watch follows the node's key until ctx ends, opening the bucket again (it
// may not exist yet) and watching afresh after every reconnect, kick or end
// of the watch.
func (w *Watcher) watch(ctx context.Context) {
	js, err := jetstream.New(w.Conn)
	if err != nil {
		w.Logger.Error("open jetstream; the node lease is not watched", "err", err)
		return
	}
	reconnected := w.Conn.StatusChanged(nats.CONNECTED)
	defer w.Conn.RemoveStatusListener(reconnected)
	var (
		backoff = watchMinRetry
		failing bool
	)
	for ctx.Err() == nil {
		node := w.Node()
		if node == "" {
			// No node named yet: wait for one (a kick).
			select {
			case <-ctx.Done():
			case <-w.Kick:
			}
			continue
		}
		kw, stop, err := w.open(ctx, js, node)
		if err != nil {
			if !failing {
				w.Logger.Warn("watch node lease; retrying", "node", node, "err", err)
				failing = true
			}
			t := time.NewTimer(backoff)
			backoff = min(2*backoff, watchMaxRetry)
			select {
			case <-ctx.Done():
			case <-t.C:
			case <-reconnected:
				backoff = watchMinRetry
			}
			t.Stop()
			continue
		}
		if failing {
			w.Logger.Info("watching node lease", "node", node)
			failing = false
		}
		backoff = watchMinRetry
		w.follow(ctx, kw, reconnected, node)
		stop()
	}
}

// open binds to the lease bucket and watches node's key. The watch lives
// until stop is called or ctx ends.
func (w *Watcher) open(ctx context.Context, js jetstream.JetStream, node string) (jetstream.KeyWatcher, func(), error) {
	octx, cancel := context.WithTimeout(ctx, watchOpenTimeout)
	kv, err := Open(octx, js)
	cancel()
	if err != nil {
		return nil, nil, err
	}
	// The watch's context bounds both its creation and its life, so the
	// creation is bounded by a timer that cancels it.
	wctx, cancelWatch := context.WithCancel(ctx)
	t := time.AfterFunc(watchOpenTimeout, cancelWatch)
	kw, err := kv.Watch(wctx, node)
	if !t.Stop() {
		if err == nil {
			_ = kw.Stop()
		}
		cancelWatch()
		return nil, nil, fmt.Errorf("watch lease %s: no answer in %s", node, watchOpenTimeout)
	}
	if err != nil {
		cancelWatch()
		return nil, nil, fmt.Errorf("watch lease %s: %w", node, err)
	}
	// Stopping deletes the watch's consumer, a request that waits out
	// nats.go's 5 s JetStream timeout when refused, as it is for a guest's
	// least-privilege user (internal/guestauth; the server removes the
	// consumer itself once nobody listens). Waiting for it would leave the
	// lease unwatched that long after every reconnect and fence the guest, so
	// the watch is stopped by cancelling its context: nats.go then
	// unsubscribes and deletes in the background.
	return kw, cancelWatch, nil
}

// follow applies the watch's entries (of node's key) until ctx ends, the
// watch ends, the connection comes back after a loss or a kick comes.
func (w *Watcher) follow(ctx context.Context, kw jetstream.KeyWatcher, reconnected <-chan nats.Status, node string) {
	initial := true // entries before the watch's nil marker are the key's current value
	for {
		select {
		case <-ctx.Done():
			return
		case <-reconnected:
			return
		case <-w.Kick:
			return
		case e, ok := <-kw.Updates():
			if !ok {
				return
			}
			if e == nil {
				initial = false
				continue
			}
			// A live update is timed from now. The value a new watch starts
			// with may be older: it is timed by the server's stamp, so that a
			// lease a dead holder wrote long ago does not pass for a fresh one.
			now := w.Clock.Now()
			at := now
			if initial {
				at = WrittenAt(e.Created(), now, time.Time{})
			}
			op := e.Operation()
			w.Observe(Observation{Node: node, Rev: e.Revision(), Stamp: e.Created(), Deleted: op == jetstream.KeyValueDelete || op == jetstream.KeyValuePurge,
				Value: e.Value(), At: at})
		}
	}
}

// poll reads the node's key every PollEvery(ttl) until ctx ends, each read
// bounded by PollTimeout(ttl), and applies what it finds. It opens the
// bucket's stream again until it exists.
func (w *Watcher) poll(ctx context.Context) {
	js, err := jetstream.New(w.Conn)
	if err != nil {
		w.Logger.Error("open jetstream; the node lease is not polled", "err", err)
		return
	}
	var (
		stream  jetstream.Stream
		floor   time.Time // the next new revision was written after this
		failing bool
		polled  string // the node floor is for
	)
	for {
		ttl := w.TTL()
		node := w.Node()
		if node != polled {
			floor, polled = time.Time{}, node
		}
		sent := w.Clock.Now()
		rctx, cancel := context.WithTimeout(ctx, PollTimeout(ttl))
		err := func() error {
			if node == "" {
				return nil // no node named yet
			}
			if stream == nil {
				s, err := js.Stream(rctx, StreamName)
				if err != nil {
					return fmt.Errorf("open lease bucket: %w", err)
				}
				if !s.CachedInfo().Config.AllowDirect {
					w.Logger.Warn("lease bucket without direct get: the lease is read from its leader only", "bucket", Bucket)
				}
				stream = s
			}
			m, err := stream.GetLastMsgForSubject(rctx, KeySubject(node))
			if errors.Is(err, jetstream.ErrMsgNotFound) {
				// Never written, or expired (MaxAge leaves no marker): nothing
				// to renew with; the fence timer decides.
				floor = sent
				return nil
			}
			if err != nil {
				return fmt.Errorf("read lease %s: %w", node, err)
			}
			seen := w.Clock.Now()
			if w.Observe(Observation{Node: node, Rev: m.Sequence, Stamp: m.Time, Deleted: IsDeleteMarker(m.Header), Value: m.Data, At: WrittenAt(m.Time, seen, floor)}) {
				// The newest the watcher knows of: the next revision comes later.
				floor = sent
			}
			return nil
		}()
		cancel()
		switch {
		case ctx.Err() != nil:
			return
		case err != nil && !failing:
			w.Logger.Warn("poll node lease; retrying", "node", node, "err", err)
			failing = true
		case err == nil && failing:
			w.Logger.Info("polling node lease", "node", node)
			failing = false
		}
		every := pollWaiting
		if ttl > 0 {
			every = PollEvery(ttl)
		}
		t := time.NewTimer(sent.Add(every).Sub(w.Clock.Now()))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// WrittenAt is when a value the server stamped stamp and the watcher
// received at seen was written, as far as the watcher can tell: the
// server's stamp, but never later than seen (a clock behind the server's
// would make the value look fresher than a live one) nor earlier than
// floor, a moment by the watcher's clock that the write is known to have
// followed (a clock ahead of the server's would make it look older than it
// can be; zero: no such moment).
func WrittenAt(stamp, seen, floor time.Time) time.Time {
	at := stamp
	if at.After(seen) {
		at = seen
	}
	if at.Before(floor) {
		at = floor
	}
	return at
}

// IsDeleteMarker reports whether a raw message of a KV bucket marks its key
// deleted or purged (ADR-8's KV-Operation header, or a server marker).
func IsDeleteMarker(h nats.Header) bool {
	switch h.Get(kvOperation) {
	case "DEL", "PURGE":
		return true
	}
	return h.Get(jetstream.MarkerReasonHeader) != ""
}

// kvOperation is the header in which a KV bucket marks deletes and purges.
const kvOperation = "KV-Operation"

// Newer compares a revision of a key and its server stamp with the last one
// applied: 1 if it is newer, 0 if it is the same, -1 if older. A higher
// revision is newer; a lower one is older, unless it was stamped later: the
// bucket was deleted and made again (its revisions start over), and a
// watcher must not ignore its new lease for good.
func Newer(rev uint64, stamp time.Time, lastRev uint64, lastStamp time.Time) int {
	switch {
	case rev == lastRev && stamp.Equal(lastStamp):
		return 0
	case rev > lastRev, stamp.After(lastStamp):
		return 1
	}
	return -1
}
