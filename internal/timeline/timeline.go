// Package timeline owns the fencing timeline of a node (DESIGN §10) in one
// place: when the host manager renews the node's lease, when it fences
// itself, when the node guard stops the node's guests if the host manager
// stops petting it, how long that stop may take, and when the lease key
// expires so that the failover controller may record node.lost and place the
// node's packages elsewhere. Every other package takes these numbers from
// here. It is pure arithmetic: no clock, no I/O, no imports beyond time.
//
// All times are measured from T0, when the host manager sent its last lease
// renewal that succeeded. The server stored that renewal after T0, so the
// lease key expires at T0 + NodeTimeout or later, and the controller records
// node.lost only once it sees the key gone: later still, by the controller's
// margin (its watch or poll, >= 0), which the inequality does not count on.
//
//	T0                          host manager sends a renewal; it succeeds; it pets the guard
//	T0 + Renew()                next renewal (node_timeout/4)
//	T0 + SelfFence()            host manager stops its guests if no renewal succeeded since (0.6 × node_timeout)
//	T0 + GuardAfter()           guard stops the guests if not petted since (Renew + GuardBound)
//	T0 + GuestsDownBy()         ... and they are down (GuardAfter + GuestStop), else it escalates
//	T0 + NodeTimeout            the lease key expires at the earliest; node.lost may follow
//
// The inequality Renew + GuardBound + GuestStop < NodeTimeout makes "node
// lost" imply "its guests are stopped"; GuardAfter >= SelfFence keeps the
// guard from acting before the host manager's own fence would (a slow
// renewal on a loaded machine must not reset a healthy node).
package timeline

import (
	"fmt"
	"time"
)

// Timeline is one node's fencing timeline.
type Timeline struct {
	// NodeTimeout is the lease's time to live (config node_timeout).
	NodeTimeout time.Duration
	// GuardBound is how long past a missed renewal the guard waits for a
	// pet before it stops the guests (config guard_bound).
	GuardBound time.Duration
	// GuestStop bounds the guard's forced stop of all guests (config
	// guard_stop_time); past it, the guard escalates.
	GuestStop time.Duration
}

// Default returns the timeline the defaults give for nodeTimeout: the guard
// acts at 0.65 and the guests are down by 0.9 of nodeTimeout.
func Default(nodeTimeout time.Duration) Timeline {
	return Timeline{NodeTimeout: nodeTimeout, GuardBound: DefaultGuardBound(nodeTimeout), GuestStop: DefaultGuestStop(nodeTimeout)}
}

// DefaultGuardBound is guard_bound's default: 0.4 × node_timeout.
func DefaultGuardBound(nodeTimeout time.Duration) time.Duration { return nodeTimeout * 2 / 5 }

// DefaultGuestStop is guard_stop_time's default: 0.25 × node_timeout.
func DefaultGuestStop(nodeTimeout time.Duration) time.Duration { return nodeTimeout / 4 }

// Renew is how often the holder renews the lease: NodeTimeout/4.
func (t Timeline) Renew() time.Duration { return RenewEvery(t.NodeTimeout) }

// RenewEvery is how often a holder renews a lease of the given TTL.
func RenewEvery(ttl time.Duration) time.Duration { return ttl / 4 }

// SelfFence is when, after T0, a host manager that has not renewed since
// stops its guests itself, and when a guest agent that has seen no renewal
// stops its processes: 0.6 × NodeTimeout.
func (t Timeline) SelfFence() time.Duration { return FenceAfter(t.NodeTimeout) }

// FenceAfter is SelfFence for a lease of the given TTL.
func FenceAfter(ttl time.Duration) time.Duration { return ttl * 6 / 10 }

// GuardAfter is when, after T0, the guard stops the guests unless petted
// again: Renew + GuardBound.
func (t Timeline) GuardAfter() time.Duration { return t.Renew() + t.GuardBound }

// GuestsDownBy is when, after T0, the guard's stop has ended (or it
// escalates): GuardAfter + GuestStop.
func (t Timeline) GuestsDownBy() time.Duration { return t.GuardAfter() + t.GuestStop }

// Slack is what is left between GuestsDownBy and the earliest expiry of the
// lease key; it must be more than 0.
func (t Timeline) Slack() time.Duration { return t.NodeTimeout - t.GuestsDownBy() }

// Problems returns what is wrong with t, each naming the numbers and the
// config keys (none if it holds).
func (t Timeline) Problems() []string {
	var p []string
	if t.GuardBound <= 0 {
		p = append(p, fmt.Sprintf("guard_bound: %s: must be more than 0", t.GuardBound))
	}
	if t.GuestStop <= 0 {
		p = append(p, fmt.Sprintf("guard_stop_time: %s: must be more than 0", t.GuestStop))
	}
	if len(p) > 0 {
		return p
	}
	if t.Slack() <= 0 {
		p = append(p, fmt.Sprintf("renew interval %s (node_timeout/4) + guard_bound %s + guard_stop_time %s = %s, not less than node_timeout %s: "+
			"a node could be declared lost while its guests still run; shorten guard_bound or guard_stop_time, or raise node_timeout",
			t.Renew(), t.GuardBound, t.GuestStop, t.GuestsDownBy(), t.NodeTimeout))
	}
	if t.GuardAfter() < t.SelfFence() {
		p = append(p, fmt.Sprintf("renew interval %s (node_timeout/4) + guard_bound %s = %s, before the host manager's own fence at %s (0.6 × node_timeout %s): "+
			"a slow renewal would make the guard stop the guests of a healthy node; raise guard_bound to at least %s",
			t.Renew(), t.GuardBound, t.GuardAfter(), t.SelfFence(), t.NodeTimeout, t.SelfFence()-t.Renew()))
	}
	return p
}

// String shows the timeline as offsets from T0.
func (t Timeline) String() string {
	return fmt.Sprintf("renew every %s, host fences itself at %s, guard at %s, guests down by %s, lease expires at %s (slack %s)",
		t.Renew(), t.SelfFence(), t.GuardAfter(), t.GuestsDownBy(), t.NodeTimeout, t.Slack())
}
