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
	spoolFail   time.Time // first failed spool write since the last good one
	spoolErr    string
	deliverFail time.Time // first failed delivery while connected since the last good one
	deliverErr  string
	logged      bool // the sickness was logged
}

// noteSpool records the outcome of a spool write.
func (a *Agent) noteSpool(err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	h := &a.health
	if err == nil {
		h.spoolFail, h.spoolErr = time.Time{}, ""
		return
	}
	if h.spoolFail.IsZero() {
		h.spoolFail = time.Now()
	}
	h.spoolErr = err.Error()
}

// noteDeliver records the outcome of a delivery to the log. A failure
// while disconnected does not count: the spool is for outages, and the
// host manager does not hear heartbeats then either.
func (a *Agent) noteDeliver(err error) {
	connected := a.cfg.Conn.IsConnected()
	a.mu.Lock()
	defer a.mu.Unlock()
	h := &a.health
	if err == nil {
		h.deliverFail, h.deliverErr = time.Time{}, ""
		return
	}
	if !connected {
		return
	}
	if h.deliverFail.IsZero() {
		h.deliverFail = time.Now()
	}
	h.deliverErr = err.Error()
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
	switch {
	case !h.spoolFail.IsZero() && now.Sub(h.spoolFail) > limit:
		return fmt.Sprintf("spool not writable for %s: %s", now.Sub(h.spoolFail).Round(time.Millisecond), h.spoolErr), true
	case !h.deliverFail.IsZero() && now.Sub(h.deliverFail) > limit:
		return fmt.Sprintf("event log refuses events for %s: %s", now.Sub(h.deliverFail).Round(time.Millisecond), h.deliverErr), true
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
