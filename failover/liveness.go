package failover

import (
	"context"
	"log/slog"
	"slices"
	"time"

	"github.com/vmguard/vmguard/events"
	"github.com/vmguard/vmguard/internal/lease"
)

// ReasonLeaseExpired is the reason of a node.lost the controller appends.
const ReasonLeaseExpired = "lease expired"

// leaseStore is where liveness reads the node leases: the lease bucket
// (bucketLeases), or a simulated one.
type leaseStore interface {
	// open makes the store ready to read, creating it with node_timeout
	// ttl if it does not exist yet: false when there is nothing to read
	// yet (no error) or it cannot be opened (the error); it is tried again
	// at the next check.
	open(ctx context.Context, ttl time.Duration) (bool, error)
	// get reads node's lease as any replica has it: found false when the
	// key is missing, deleted or expired.
	get(ctx context.Context, node string) (raw []byte, found bool, err error)
	// getAtLeader reads node's lease from the store's leader.
	getAtLeader(ctx context.Context, node string) (v lease.Value, found bool, err error)
}

// liveness is the runner's part that watches the node leases: each check
// interval the loop asks it (lost) which nodes to declare lost, and appends
// what it returns. It remembers per node the last renewal it saw (lastSeen,
// the node.lost's last_seen) and the last one without frozen_until (armed,
// for NodeState.MayDeclareLost); Run runs its prober. Only lost and setTTL
// are called by the loop's goroutine; the prober is safe for any.
type liveness struct {
	leases leaseStore
	prober StoreProber
	// now is Config.Now, the clock a node's freeze times are judged by;
	// clock is the prober's (monotonic use: lease.SystemClock in
	// production), the clock its verdicts are asked at.
	now   func() time.Time
	clock lease.Clock
	// timeout bounds each lease read (4 check intervals).
	timeout time.Duration
	logger  *slog.Logger
	warn    warner

	lastSeen map[string]time.Time
	armed    map[string]time.Time // node -> renewal time of its last lease seen without frozen_until
	// raw is, per node, the lease value seen last time, as read: the same
	// bytes again change nothing, and are not decoded again (every check
	// interval reads every lease, which is renewed far less often).
	raw map[string]string
}

func newLiveness(leases leaseStore, prober StoreProber, now func() time.Time, clock lease.Clock, timeout time.Duration, logger *slog.Logger) *liveness {
	return &liveness{
		leases: leases, prober: prober, now: now, clock: clock, timeout: timeout,
		logger: logger, warn: newWarner(logger),
		lastSeen: map[string]time.Time{}, armed: map[string]time.Time{}, raw: map[string]string{},
	}
}

// Run runs the prober until ctx ends.
func (lv *liveness) Run(ctx context.Context) { lv.prober.Run(ctx) }

// setTTL passes the configured node_timeout to the prober.
func (lv *liveness) setTTL(s *State) {
	if s.Config != nil {
		lv.prober.SetTTL(s.Config.NodeTimeout.D())
	}
}

// lost returns a node.lost for every node s shows joined (or halted by an
// operator: NodeState.LeaseWatched) whose lease key is gone from the lease
// bucket, once the store has been able to take renewals for a whole
// node_timeout (lease.Judge): the server removes a key only once its TTL
// (node_timeout) has passed since its last renewal, and a holder deletes
// its own key only when it leaves, so a node is never declared lost before
// its lease expired; and a key that expired while the store took no writes
// (no quorum, a server restarting, this controller cut off from it) is the
// store's outage, not the node's death: every node gets a fresh
// node_timeout from the moment the store is writable again. A key found
// missing is read once more from the bucket's leader before the node is
// declared lost (a direct get may be answered by a replica still catching
// up). Any other error reading a lease (timeout, no server) declares
// nothing: it is checked again next time.
func (lv *liveness) lost(ctx context.Context, s *State) []events.Event {
	if len(s.Nodes) == 0 {
		return nil
	}
	var ttl time.Duration
	if s.Config != nil {
		ttl = s.Config.NodeTimeout.D()
	}
	ok, err := lv.leases.open(ctx, ttl)
	if err != nil {
		if ctx.Err() == nil {
			lv.warn.once("lease bucket", "open lease bucket", "err", err)
		}
		return nil
	}
	if !ok {
		return nil
	}
	lv.warn.recovered("lease bucket")
	now := lv.now()
	names := make([]string, 0, len(s.Nodes))
	for name, n := range s.Nodes {
		if n.LeaseWatched() {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	var lost []events.Event
	for _, name := range names {
		gctx, cancel := context.WithTimeout(ctx, lv.timeout)
		raw, found, err := lv.leases.get(gctx, name)
		cancel()
		switch {
		case err != nil:
			if ctx.Err() == nil {
				lv.warn.once("lease "+name, "read node lease; not deciding about the node until it can", "node", name, "err", err)
			}
			continue
		case found:
			lv.seen(s, name, raw)
			continue
		}
		// Frozen, or thawed while its guard and agents may still be
		// disarmed: a lapsed lease does not mean its guests stopped.
		if !s.Nodes[name].MayDeclareLost(now, ttl, lv.armed[name]) || !lv.mayDeclareLost(ctx, name) {
			continue
		}
		// No causeid: the cause is the passing of time, which the event
		// itself records (last_seen).
		lost = append(lost, events.Event{
			Source:  Source,
			Subject: name,
			Data:    events.NodeLost{Reason: ReasonLeaseExpired, LastSeen: lv.lastSeen[name]},
		})
	}
	return lost
}

// seen notes node's lease value raw, read from the store.
func (lv *liveness) seen(s *State, name string, raw []byte) {
	lv.warn.recovered("lease " + name)
	lv.warn.recovered("lease store young " + name)
	if lv.raw[name] == string(raw) {
		return
	}
	v, err := lease.Decode(raw)
	if err != nil {
		return
	}
	lv.raw[name] = string(raw)
	lv.lastSeen[name] = v.Renewed
	if v.FrozenUntil.IsZero() {
		if t := s.Nodes[name].ThawedAt; !t.IsZero() && !lv.armed[name].After(t) && v.Renewed.After(t) {
			lv.logger.Info("node re-armed after its thaw: a lapse of its lease counts as a loss again", "node", name, "renewed", v.Renewed)
		}
		lv.armed[name] = v.Renewed
	}
}

// mayDeclareLost decides about a node whose lease key a read found
// missing: true if the store has taken writes for node_timeout (the
// prober's judgement) and the bucket's leader has no lease for it either.
func (lv *liveness) mayDeclareLost(ctx context.Context, name string) bool {
	verdict, since := lv.prober.Decide(lv.clock.Now())
	switch verdict {
	case lease.Unknown:
		lv.warn.once("lease store", "node lease missing, but the lease store has not taken this controller's probe lately: not declaring any node lost until it has taken writes for node_timeout",
			"node", name)
		return false
	case lease.Young:
		lv.warn.once("lease store young "+name, "node lease missing while the lease store takes writes again for less than node_timeout: the node has until then to renew it",
			"node", name, "writable_since", since.Format(time.RFC3339Nano))
		return false
	}
	lv.warn.recovered("lease store")
	lv.warn.recovered("lease store young " + name)
	rctx, cancel := context.WithTimeout(ctx, lv.timeout)
	v, found, err := lv.leases.getAtLeader(rctx, name)
	cancel()
	switch {
	case err != nil:
		if ctx.Err() == nil {
			lv.warn.once("lease "+name, "read node lease from the bucket's leader; not deciding about the node until it can", "node", name, "err", err)
		}
		return false
	case found:
		lv.logger.Info("node lease missing from a replica but held at the leader; not lost", "node", name)
		if !v.Renewed.IsZero() {
			lv.lastSeen[name] = v.Renewed
			delete(lv.raw, name) // the next value read sets lastSeen again
		}
		return false
	}
	return true
}
