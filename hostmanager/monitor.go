package hostmanager

import (
	"context"
	"time"

	"github.com/vmguard/vmguard/config"
	"github.com/vmguard/vmguard/events"
)

// watch is the guest monitor's view of one package's running guest (the
// successor of Serviceguard's hpvmsg_mon).
type watch struct {
	// startedID is the guest.started the watch is for; a new one restarts it.
	startedID string
	// since is when the watch began: a guest gets guest_timeout from then
	// (or from the host manager's start) to send its first heartbeat.
	since time.Time
	// lost is set once guest.lost is in the log for this start.
	lost bool
}

// checkGuests appends guest.lost, once, for every guest of this node that
// the log shows up and whose agent sent no heartbeat from this node for
// guest_timeout. The observation of time becomes an event; the core
// decides from it (restart the guest or fail the package).
func (r *Runner) checkGuests(ctx context.Context) {
	if !r.active() || r.st.Config == nil {
		return
	}
	timeout := r.st.Config.GuestTimeout.D()
	if timeout <= 0 {
		timeout = config.DefaultGuestTimeout
	}
	now := r.now()
	if !r.nc.IsConnected() {
		// Cut off from NATS the host sees no heartbeat from anyone: that
		// says nothing about the guests. Each gets a full guest_timeout
		// once the connection is back.
		r.blind = now
		return
	}
	for name, p := range r.st.Packages {
		in := p.Inst
		if in == nil || in.Guest.Phase != GuestUp {
			delete(r.watches, name)
			continue
		}
		w := r.watches[name]
		if w == nil || w.startedID != in.Guest.StartedID {
			w = &watch{startedID: in.Guest.StartedID, since: now}
			r.watches[name] = w
		}
		if w.lost {
			continue
		}
		guest := in.Config.Guest.Name
		r.hbMu.Lock()
		beat := r.hb[guest]
		r.hbMu.Unlock()
		last := beat
		for _, t := range []time.Time{w.since, r.blind} {
			if last.Before(t) {
				last = t
			}
		}
		if now.Sub(last) <= timeout {
			continue
		}
		r.logger.Warn("guest lost: no heartbeat", "package", name, "guest", guest, "timeout", timeout)
		d := events.Event{Source: r.st.Source(), Subject: name, CauseID: in.Guest.StartedID,
			Data: events.GuestLost{Guest: guest, Node: r.node, Epoch: in.Epoch, LastHeartbeat: beat.UTC()}}
		if beat.IsZero() {
			d.Data = events.GuestLost{Guest: guest, Node: r.node, Epoch: in.Epoch}
		}
		// With the expected-sequence check: if anything about the package
		// came meanwhile (the guest stopped, a halt), decide again on the
		// next check rather than record a stale loss.
		if r.appendDecision(ctx, name, d) {
			w.lost = true
			r.process(ctx, name)
		}
		if r.test.crashed {
			return
		}
	}
}
