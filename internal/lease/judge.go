package lease

import "time"

// Clock is where the lease code reads the time. Its logic takes every time
// from a Clock or from its caller, never from time.Now, so that tests can
// step it.
type Clock interface {
	// Now returns the current time (with a monotonic reading, for real clocks).
	Now() time.Time
}

// SystemClock is the Clock of the machine.
type SystemClock struct{}

// Now returns time.Now().
func (SystemClock) Now() time.Time { return time.Now() }

// Judge is the expiry judgement of the failover controller: whether a node
// whose lease key is gone may be declared lost now. A key expires when the
// store took no renewal of it for node_timeout; that means the node is dead
// only if the store was able to take renewals meanwhile. When the lease
// bucket has no leader (an R3 cluster without quorum, a server restarting)
// every renewal fails, and when it comes back every key has expired: the
// store's outage reads as every node's death. So the controller probes the
// store itself with a write of its own (Prober), and the Judge declares a
// missing key a loss only once the store has been writable without a break
// for a whole TTL (a fresh node_timeout from the moment it is writable
// again, as etcd's lessor extends every lease on a leader change).
//
// Precisely: probe i was sent at Sent_i and its write acknowledged at
// Done_i; the store stored it somewhere in between. Two probes that
// succeeded, i-1 and i, belong to one writable window when Done_i -
// Sent_{i-1} <= Gap (no stretch longer than Gap can have passed without a
// write the store took); otherwise a window starts at Done_i. Failed probes
// do not end a window by themselves: only Gap passing without a success
// does. A missing key at time now may be declared a loss iff
//
//	the last probe that succeeded was sent at or after now - Gap, and
//	now - (start of its window) >= TTL.
//
// Gap is the renewal interval (TTL/4): a running holder retries its renewal
// for 0.6 TTL and then takes the lease again at once, so a store outage
// shorter than a renewal interval cannot make its key expire, and one that
// is longer restarts the window. The controller's own view counts the same
// way: a controller cut off from the store (partitioned, paused) gets no
// probe through and declares nothing, and once it gets through again it
// waits a TTL. The price is that a node that dies during or just before an
// outage is declared lost up to one TTL later than it would have been.
//
// A Judge is a pure value: no clock, no I/O; Prober feeds it.
type Judge struct {
	// TTL is the lease TTL (node_timeout).
	TTL time.Duration
	// Gap is the longest stretch without a probe the store took that still
	// counts as writable throughout (default RenewEvery(TTL)).
	Gap time.Duration

	since    time.Time // start of the current writable window; zero: none
	lastSent time.Time // send time of the last probe that succeeded
}

// Verdict is what a Judge says about a missing key.
type Verdict int

// The verdicts of Judge.Decide.
const (
	// Unknown: the store has not taken a probe within Gap (never, or not
	// lately: it is down, or the controller cannot reach it); a missing key
	// says nothing.
	Unknown Verdict = iota
	// Young: the store is writable, but not yet for a whole TTL since it
	// came back; a missing key may be the outage's doing.
	Young
	// Lost: the store has been writable for a TTL; a missing key means its
	// holder failed to renew while it could.
	Lost
)

func (v Verdict) String() string {
	switch v {
	case Young:
		return "young"
	case Lost:
		return "lost"
	}
	return "unknown"
}

func (j *Judge) gap() time.Duration {
	if j.Gap > 0 {
		return j.Gap
	}
	return ProbeGap(j.TTL)
}

// Probed records a probe write sent at sent that the store acknowledged at
// done (ok) or that failed (!ok; done is ignored).
func (j *Judge) Probed(sent, done time.Time, ok bool) {
	if !ok {
		return // only Gap passing without a success ends a window
	}
	if j.since.IsZero() || done.Sub(j.lastSent) > j.gap() {
		j.since = done
	}
	if sent.After(j.lastSent) {
		j.lastSent = sent
	}
}

// Decide says whether a lease key found missing at now may be declared a
// loss. Every outcome:
//   - Unknown: no probe succeeded yet, or the last one that did was sent
//     more than Gap before now.
//   - Young: the window started less than TTL before now.
//   - Lost: otherwise.
func (j *Judge) Decide(now time.Time) Verdict {
	switch {
	case j.since.IsZero() || now.Sub(j.lastSent) > j.gap():
		return Unknown
	case now.Sub(j.since) < j.TTL:
		return Young
	}
	return Lost
}

// WritableSince returns the start of the current writable window (zero if
// the store is not known writable at now).
func (j *Judge) WritableSince(now time.Time) time.Time {
	if j.Decide(now) == Unknown {
		return time.Time{}
	}
	return j.since
}
