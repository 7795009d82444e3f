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
// guest_timeout (heartbeats.silent). The observation of time becomes an
// event; the core decides from it (restart the guest or fail the package).
func (r *Runner) checkGuests(ctx context.Context) {
	if !r.active() || r.st.Config == nil {
		return
	}
	timeout := r.st.Config.GuestTimeout.D()
	if timeout <= 0 {
		timeout = config.DefaultGuestTimeout
	}
	for _, g := range r.hb.silent(r.st, r.connected(), timeout) {
		guest := g.inst.Config.Guest.Name
		r.logger.Warn("guest lost: no heartbeat", "package", g.pkg, "guest", guest, "timeout", timeout)
		d := events.Event{Source: r.st.Source(), Subject: g.pkg, CauseID: g.inst.Guest.StartedID,
			Data: events.GuestLost{Guest: guest, Node: r.node, Epoch: g.inst.Epoch, LastHeartbeat: g.beat.UTC()}}
		if g.beat.IsZero() {
			d.Data = events.GuestLost{Guest: guest, Node: r.node, Epoch: g.inst.Epoch}
		}
		// With the expected-sequence check: if anything about the package
		// came meanwhile (the guest stopped, a halt), decide again on the
		// next check rather than record a stale loss.
		if r.appendDecision(ctx, g.pkg, d) {
			g.watch.lost = true
			r.process(ctx, g.pkg)
		}
		if r.test.crashed {
			return
		}
	}
}

// monitorEvery is how often guest heartbeats are checked.
func (r *Runner) monitorEvery() time.Duration {
	t := config.DefaultGuestTimeout
	if c := r.st.Config; c != nil && c.GuestTimeout > 0 {
		t = c.GuestTimeout.D()
	}
	return min(max(t/10, 20*time.Millisecond), time.Second)
}
