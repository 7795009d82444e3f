package hostmanager

import (
	"context"
	"errors"

	"github.com/vmguard/vmguard/events"
)

// The loop's side of the node's membership: it feeds the lease keeper,
// reacts to what the keeper tells it, and appends what the membership core
// (member.go) decides.

// startLease starts the lease keeper once the config (node_timeout) is
// known, and passes it the node_timeout in force.
func (r *Runner) startLease(ctx context.Context) {
	c := r.st.Config
	if c == nil {
		return
	}
	ttl := c.NodeTimeout.D()
	if ttl <= 0 {
		return
	}
	r.lease.configure(ttl, c.Timeline())
	r.lease.start(ctx, &r.wg)
}

// onLease reacts to the lease keeper.
func (r *Runner) onLease(ctx context.Context, le leaseEvent) {
	switch {
	case le.superseded != "":
		r.member.Observe(Observation{Kind: ObserveSuperseded, At: le.at})
	case !le.held:
		r.member.Observe(Observation{Kind: ObserveLeaseLost, Reason: le.reason, At: le.at})
	default:
		r.member.Observe(Observation{Kind: ObserveLeaseTaken, At: le.at})
		r.nodeWork(ctx)
		if r.active() {
			r.processAll(ctx)
		}
		return
	}
	r.ex.cancelAll()
}

// nodeWork appends what the membership core decides (Member.Decide):
// node.fenced once the lease is back after a self-fence, node.joined when
// the log does not show the node joined (at start, after lost or fenced),
// and processes every package once a fence is recorded or a freeze ended.
func (r *Runner) nodeWork(ctx context.Context) {
	if !r.member.Held {
		return
	}
	if r.lease.stale() {
		// Whatever the log says about this node may be news to a lease
		// keeper that is about to fence it: look again in a second.
		r.retry(ctx, workNode)
		return
	}
	if !r.connected() {
		r.retry(ctx, workNode)
		return
	}
	for range 4 {
		switch r.member.Decide(r.now()) {
		case MemberAppendFenced:
			e := r.stamp(events.Event{Source: r.st.Source(), Subject: r.node,
				Data: events.NodeFenced{Reason: clipReason(r.member.FenceReason), Since: r.member.FenceTime.UTC(), Hold: r.member.FenceHold}})
			actx, cancel := context.WithTimeout(ctx, appendTimeout)
			seq, err := r.log.Append(actx, e)
			cancel()
			if err != nil {
				r.logger.Warn("append node.fenced; retrying", "err", err)
				r.retry(ctx, workNode)
				return
			}
			r.member.Observe(Observation{Kind: ObserveFenceAppended, Seq: seq})
			r.logger.Info("node.fenced appended", "seq", seq)
			return // the rest once it is read back
		case MemberResume:
			r.member.Observe(Observation{Kind: ObserveResumed})
			r.processAll(ctx)
		case MemberAppendJoined, MemberAppendLeaseTaken:
			if !r.recordNode(ctx) {
				return
			}
			// The lease take is on record: act on what the log asks for
			// (the runner acted on nothing since it took the lease).
			if r.active() {
				r.processAll(ctx)
			}
		default:
			return
		}
	}
}

// recordNode appends the node.joined or node.lease_taken the membership
// core decides, guarded by the node's last sequence as the state read it,
// and reports whether it was stored. A conflict means a node event this
// runner has not read is on its way (a node.lost, say): it is read, and
// the core decides again then.
func (r *Runner) recordNode(ctx context.Context) bool {
	join := r.member.Decide(r.now()) == MemberAppendJoined
	var d events.Payload = events.NodeLeaseTaken{Holder: r.lease.holder, Version: r.cfg.Version}
	if join {
		d = events.NodeJoined{Version: r.cfg.Version}
	}
	e := r.stamp(events.Event{Source: r.st.Source(), Subject: r.node, Data: d})
	if r.test.beforeRecord != nil {
		r.test.beforeRecord(e)
	}
	actx, cancel := context.WithTimeout(ctx, appendTimeout)
	seq, err := r.log.Append(actx, e, events.ExpectLastSeq(events.NodeFilter(r.node), r.st.NodeSeqs[r.node]))
	cancel()
	switch {
	case errors.Is(err, events.ErrConflict):
		// Something about the node is on its way; look again then.
		r.logger.Info("node record conflicts with a newer node event; reading it first", "type", e.Type())
		return false
	case err != nil:
		r.logger.Warn("append node record; retrying", "type", e.Type(), "err", err)
		r.retry(ctx, workNode)
		return false
	case join:
		r.member.Observe(Observation{Kind: ObserveJoinAppended, Seq: seq})
		r.logger.Info("node joined", "seq", seq)
	default:
		r.member.Observe(Observation{Kind: ObserveLeaseRecorded, Seq: seq})
		r.logger.Info("node lease take recorded", "seq", seq)
	}
	return true
}
