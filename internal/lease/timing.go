package lease

import "time"

// Every number of the lease contract lives here (or, for the fence and the
// guard, in internal/timeline, which these build on); the host manager, the
// guest agent, vmguard host's takeover check and the failover controller's
// liveness check and election take them from here, and TestTiming asserts
// the inequalities between all of them in one place.

// RenewAttempt is how long a holder's renewal waits for its first attempt's
// answer before it sends another (Renew): a fifth of the renewal interval,
// 250 ms to 2 s. An update the cluster drops while it elects the bucket's
// leader gets no answer at all; the first stays open, and the others
// follow every RenewResend.
func RenewAttempt(ttl time.Duration) time.Duration {
	return min(max(RenewEvery(ttl)/5, 250*time.Millisecond), 2*time.Second)
}

// FirstAttempt is RenewAttempt for a renewal after a write whose
// answer took rtt: RenewAttempt(ttl), or twice rtt if that is longer, at
// most RenewEvery(ttl). On a link whose round trip outgrew RenewAttempt
// (270 ms of latency in front of a host made it 1.1 s; docs/bench/
// partitions.md, finding 4) every attempt timed out while doubling from
// RenewAttempt spent the fence's budget; sized to the last round trip, the
// first attempt is answered before another is sent.
func FirstAttempt(ttl, rtt time.Duration) time.Duration {
	return min(max(RenewAttempt(ttl), 2*rtt), RenewEvery(ttl))
}

// RenewRetry is the pause before a renewal is tried again after reading
// the key failed (after a revision mismatch).
func RenewRetry(ttl time.Duration) time.Duration { return ttl/20 + time.Millisecond }

// RenewResend is how often Renew sends another attempt of one renewal
// while none has answered, after the first attempt's FirstAttempt: a tenth
// of the renewal interval, 50 to 500 ms. It bounds how long after the
// bucket's new leader takes writes a renewal is through.
func RenewResend(ttl time.Duration) time.Duration {
	return min(max(RenewEvery(ttl)/10, 50*time.Millisecond), 500*time.Millisecond)
}

// TakeTimeout bounds one attempt to take (put) a lease that is not held: a
// renewal interval, at least 1 s.
func TakeTimeout(ttl time.Duration) time.Duration { return max(RenewEvery(ttl), time.Second) }

// TakeRetry is the pause between two attempts to take a lease: 100 ms, at
// most a renewal interval.
func TakeRetry(ttl time.Duration) time.Duration { return min(100*time.Millisecond, RenewEvery(ttl)) }

// TakeoverWait is how long a starting host manager watches a lease another
// holder wrote before it takes the node without --takeover: if the key was
// not renewed within 1.5 renewal intervals of its last write, its holder is
// gone.
func TakeoverWait(ttl time.Duration) time.Duration { return RenewEvery(ttl) * 3 / 2 }

// PollEvery is how often a watcher reads its key by direct get besides
// watching it: four times per renewal interval.
func PollEvery(ttl time.Duration) time.Duration { return RenewEvery(ttl) / 4 }

// PollTimeout bounds one poll of a watcher: half a renewal interval, 250 ms
// to 2 s. A read the cluster drops costs that much; the next one is sent at
// once.
func PollTimeout(ttl time.Duration) time.Duration {
	return min(max(RenewEvery(ttl)/2, 250*time.Millisecond), 2*time.Second)
}

// FenceHalt bounds the halt of a process a guest agent fences: SIGKILL at
// most ttl/5 after SIGTERM, so that it is dead by 0.8 ttl after the last
// renewal the agent saw, before the key can expire.
func FenceHalt(ttl time.Duration) time.Duration { return ttl / 5 }

// ProbeGap is the Judge's default Gap: the renewal interval.
func ProbeGap(ttl time.Duration) time.Duration { return RenewEvery(ttl) }

// ProbeEvery is how often a Prober writes: four times per ProbeGap, each
// write bounded by ProbeGap.
func ProbeEvery(ttl time.Duration) time.Duration { return ProbeGap(ttl) / 4 }

// ElectionRenewEvery is how often the failover leader renews its leader
// key, whose TTL is the election TTL: a third of it. The leader counts its
// lead valid until the send of its last renewal that succeeded plus the
// election TTL, which is no later than the key's expiry: two leaders never
// decide at once.
func ElectionRenewEvery(ttl time.Duration) time.Duration { return ttl / 3 }

// ElectionPoll is how often a standby looks for an expired leader key:
// a sixth of the election TTL, at most 250 ms (it also watches the key, so
// that a release is taken over at once).
func ElectionPoll(ttl time.Duration) time.Duration { return min(ttl/6, 250*time.Millisecond) }
