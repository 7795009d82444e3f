package guestagent

import (
	"fmt"
	"time"
)

// DefaultSickAfter is the default of Config.SickAfter.
const DefaultSickAfter = 30 * time.Second

// health tracks whether the agent can record what it does: write its spool
// and deliver the spool to the log. Guarded by Agent.mu.
type health struct {
	spool   failing // spool writes
	deliver failing // deliveries while connected
	logged  bool    // the sickness was logged
}

// failing is a run of failures of one kind: when the first failure since
// the last success was, and the last failure's error.
type failing struct {
	since time.Time // zero: the last outcome was a success
	err   string
}

// note records an outcome: a success ends the run, a failure starts it or
// goes on with it.
func (f *failing) note(err error) {
	if err == nil {
		*f = failing{}
		return
	}
	if f.since.IsZero() {
		f.since = time.Now()
	}
	f.err = err.Error()
}

// longer returns how long the run has lasted at now, and whether that is
// longer than limit.
func (f failing) longer(now time.Time, limit time.Duration) (time.Duration, bool) {
	if f.since.IsZero() {
		return 0, false
	}
	d := now.Sub(f.since)
	return d, d > limit
}

// noteSpool records the outcome of a spool write.
func (a *Agent) noteSpool(err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.health.spool.note(err)
}

// noteDeliver records the outcome of a delivery to the log. A failure
// while disconnected does not count: the spool is for outages, and the
// host manager does not hear heartbeats then either.
func (a *Agent) noteDeliver(err error) {
	connected := a.cfg.Conn.IsConnected()
	a.mu.Lock()
	defer a.mu.Unlock()
	if err != nil && !connected {
		return
	}
	a.health.deliver.note(err)
}

// sickLocked says why the agent cannot record events, if it has not been
// able to for longer than Config.SickAfter: its spool cannot be written
// (state dir full, read-only) or the log refuses its events while it is
// connected (a publish permission withdrawn, the stream gone). A sick agent
// withholds its heartbeats and refuses runs, so its host manager declares
// the guest lost and forces it off (an event), instead of the agent
// retrying in silence forever while processes run unrecorded.
func (a *Agent) sickLocked(now time.Time) (string, bool) {
	h := &a.health
	limit := a.cfg.SickAfter
	if d, over := h.spool.longer(now, limit); over {
		return fmt.Sprintf("spool not writable for %s: %s", d.Round(time.Millisecond), h.spool.err), true
	}
	if d, over := h.deliver.longer(now, limit); over {
		return fmt.Sprintf("event log refuses events for %s: %s", d.Round(time.Millisecond), h.deliver.err), true
	}
	return "", false
}

// sickRefusalLocked returns the error a run gets from a sick agent.
func (a *Agent) sickRefusalLocked() error {
	why, sick := a.sickLocked(time.Now())
	if !sick {
		return nil
	}
	return &RemoteError{CodeUnavailable, "agent cannot record events (" + why + "); runs refused, heartbeats withheld"}
}
