package failover

import (
	"context"
	"errors"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/vmguard/vmguard/events"
	"github.com/vmguard/vmguard/internal/lease"
)

// ReasonLeaseExpired is the reason of a node.lost the controller appends.
const ReasonLeaseExpired = "lease expired"

// checkLeases appends node.lost for every node the state shows joined (or
// halted by an operator: NodeState.LeaseWatched) whose lease key is gone
// from the lease bucket, once the store has been able to
// take renewals for a whole node_timeout (lease.Judge): the server removes a
// key only once its TTL (node_timeout) has passed since its last renewal,
// and a holder deletes its own key only when it leaves, so a node is never
// declared lost before its lease expired; and a key that expired while the
// store took no writes (no quorum, a server restarting, this controller cut
// off from it) is the store's outage, not the node's death: every node gets
// a fresh node_timeout from the moment the store is writable again. A key
// found missing is read once more from the bucket's leader before the node
// is declared lost (a direct get may be answered by a replica still catching
// up). Any other error reading a lease (timeout, no server) declares
// nothing: it is checked again next time.
func (r *Runner) checkLeases(ctx context.Context) {
	if len(r.state.Nodes) == 0 {
		return
	}
	kv := r.leaseBucket(ctx)
	if kv == nil {
		return
	}
	var ttl time.Duration
	if r.state.Config != nil {
		ttl = r.state.Config.NodeTimeout.D()
	}
	now := r.cfg.Now()
	names := make([]string, 0, len(r.state.Nodes))
	for name, n := range r.state.Nodes {
		if n.LeaseWatched() {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	var lost []events.Event
	for _, name := range names {
		gctx, cancel := context.WithTimeout(ctx, r.cfg.CheckInterval*4)
		entry, err := kv.Get(gctx, name)
		cancel()
		switch {
		case err == nil:
			r.recovered("lease " + name)
			r.recovered("lease store young " + name)
			if v, err := lease.Decode(entry.Value()); err == nil {
				r.lastSeen[name] = v.Renewed
				if v.FrozenUntil.IsZero() {
					if t := r.state.Nodes[name].ThawedAt; !t.IsZero() && !r.armed[name].After(t) && v.Renewed.After(t) {
						r.logger.Info("node re-armed after its thaw: a lapse of its lease counts as a loss again", "node", name, "renewed", v.Renewed)
					}
					r.armed[name] = v.Renewed
				}
			}
			continue
		case !errors.Is(err, jetstream.ErrKeyNotFound):
			if ctx.Err() == nil {
				r.warnOnce("lease "+name, "read node lease; not deciding about the node until it can", "node", name, "err", err)
			}
			continue
		}
		// Frozen, or thawed while its guard and agents may still be
		// disarmed: a lapsed lease does not mean its guests stopped.
		if !r.state.Nodes[name].MayDeclareLost(now, ttl, r.armed[name]) || !r.mayDeclareLost(ctx, name) {
			continue
		}
		// No causeid: the cause is the passing of time, which the event
		// itself records (last_seen).
		lost = append(lost, events.Event{
			Source:  Source,
			Subject: name,
			Data:    events.NodeLost{Reason: ReasonLeaseExpired, LastSeen: r.lastSeen[name]},
		})
	}
	r.emit(ctx, lost)
}

// mayDeclareLost decides about a node whose lease key a read found
// missing: true if the store has taken writes for node_timeout (the
// prober's judgement) and the bucket's leader has no lease for it either.
func (r *Runner) mayDeclareLost(ctx context.Context, name string) bool {
	verdict, since := r.prober.Decide(time.Now())
	switch verdict {
	case lease.Unknown:
		r.warnOnce("lease store", "node lease missing, but the lease store has not taken this controller's probe lately: not declaring any node lost until it has taken writes for node_timeout",
			"node", name)
		return false
	case lease.Young:
		r.warnOnce("lease store young "+name, "node lease missing while the lease store takes writes again for less than node_timeout: the node has until then to renew it",
			"node", name, "writable_since", since.Format(time.RFC3339Nano))
		return false
	}
	r.recovered("lease store")
	r.recovered("lease store young " + name)
	rctx, cancel := context.WithTimeout(ctx, r.cfg.CheckInterval*4)
	v, found, err := lease.ReadFromLeader(rctx, r.log.JetStream(), name)
	cancel()
	switch {
	case err != nil:
		if ctx.Err() == nil {
			r.warnOnce("lease "+name, "read node lease from the bucket's leader; not deciding about the node until it can", "node", name, "err", err)
		}
		return false
	case found:
		r.logger.Info("node lease missing from a replica but held at the leader; not lost", "node", name)
		if !v.Renewed.IsZero() {
			r.lastSeen[name] = v.Renewed
		}
		return false
	}
	return true
}

// leaseBucket opens the lease bucket, creating it with the configured
// node_timeout if it does not exist yet; nil (and it tries again next
// time) when it cannot.
func (r *Runner) leaseBucket(ctx context.Context) jetstream.KeyValue {
	if r.leases != nil {
		return r.leases
	}
	kv, err := r.log.OpenBucket(ctx, lease.Bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		var ttl time.Duration
		if r.state.Config != nil {
			ttl = r.state.Config.NodeTimeout.D()
		}
		if ttl <= 0 {
			return nil // no node_timeout to create it with: no one holds a lease yet
		}
		kv, err = r.log.EnsureBucket(ctx, lease.Spec(ttl))
	}
	if err != nil {
		if ctx.Err() == nil {
			r.warnOnce("lease bucket", "open lease bucket", "err", err)
		}
		return nil
	}
	r.recovered("lease bucket")
	r.leases = kv
	return kv
}

// setLeaseTTL passes the configured node_timeout to the lease prober.
func (r *Runner) setLeaseTTL() {
	if r.prober != nil && r.state.Config != nil {
		r.prober.SetTTL(r.state.Config.NodeTimeout.D())
	}
}
