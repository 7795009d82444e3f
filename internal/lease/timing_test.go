package lease

import (
	"fmt"
	"testing"
	"time"

	"github.com/vmguard/vmguard/internal/timeline"
)

// minNodeTimeout is config.MinNodeTimeout (not imported: config imports
// this package's users).
const minNodeTimeout = time.Second

// allHoldFrom is the node_timeout from which every inequality below holds;
// the two that need it are marked. Below it (1-3.5 s, for tests) a holder
// whose renewal attempt was dropped may look gone to a starting host
// manager's takeover check, and a take attempt sent during a store outage
// (bounded by TakeTimeout, at least 1 s) may outlast the fresh node_timeout
// the controller gives after the outage.
const allHoldFrom = 3500 * time.Millisecond

// TestTiming asserts every timing inequality of the lease contract in one
// place, for every node_timeout a config may have and the default timeline
// (internal/timeline), and every election TTL. All times are offsets from
// T0, when the holder sent its last renewal that succeeded; the store
// stored it after T0, so its key expires at T0 + node_timeout or later.
func TestTiming(t *testing.T) {
	type check struct {
		what     string
		lhs, rhs time.Duration // lhs < rhs must hold
		from     time.Duration // holds for node_timeout >= from
	}
	for ms := int64(minNodeTimeout / time.Millisecond); ms <= 120_000; ms += 13 {
		nt := time.Duration(ms) * time.Millisecond
		tl := timeline.Default(nt)
		if p := tl.Problems(); len(p) > 0 {
			t.Fatalf("node_timeout %s: timeline %v", nt, p)
		}
		renew := RenewEvery(nt)
		if renew != tl.Renew() || FenceAfter(nt) != tl.SelfFence() {
			t.Fatalf("node_timeout %s: lease and timeline disagree: renew %s/%s, fence %s/%s", nt, renew, tl.Renew(), FenceAfter(nt), tl.SelfFence())
		}
		checks := []check{
			// The host's side and the guard (DESIGN §10).
			{"renew interval < host self-fence (0.6 node_timeout)", renew, tl.SelfFence(), 0},
			{"host self-fence <= guard acts (renew + guard_bound)", tl.SelfFence(), tl.GuardAfter() + 1, 0},
			{"guard acts < guests down (+ guard_stop_time)", tl.GuardAfter(), tl.GuestsDownBy(), 0},
			{"guests down < node_timeout (earliest expiry)", tl.GuestsDownBy(), nt, 0},
			// The holder: one dropped attempt and its retry cost no fence.
			{"renew + attempt + retry < self-fence", renew + RenewAttempt(nt) + RenewRetry(nt), tl.SelfFence(), 0},
			{"longest attempt <= renew interval", RenewAttempt(nt), renew + 1, 0},
			{"renew + longest first attempt (slow link) + retry < self-fence", renew + FirstAttempt(nt, time.Hour) + RenewRetry(nt), tl.SelfFence(), 0},
			{"first attempt on a fast link = RenewAttempt", FirstAttempt(nt, 0), RenewAttempt(nt) + 1, 0},
			// Renew: while the store takes no writes an attempt goes out every
			// RenewResend after the first; one resend after its return the
			// renewal is through, well inside the fence.
			{"resend <= first attempt", RenewResend(nt), RenewAttempt(nt) + 1, 0},
			{"renew + first attempt + resend < self-fence", renew + RenewAttempt(nt) + RenewResend(nt), tl.SelfFence(), 0},
			// The takeover check of a starting host manager.
			{"takeover wait < self-fence (a restarted host manager takes the node before its guests fence)", TakeoverWait(nt), tl.SelfFence(), 0},
			{"renew + attempt + retry <= takeover wait (a live holder with a dropped attempt is not taken for gone)",
				renew + RenewAttempt(nt) + RenewRetry(nt), TakeoverWait(nt) + 1, allHoldFrom},
			// The watcher (guest agent): with its watch gone, the poll sees an
			// on-time renewal before the agent's fence, and a fenced process is
			// dead before the key can expire.
			{"renew + poll interval + poll timeout < agent fence", renew + PollEvery(nt) + PollTimeout(nt), FenceAfter(nt), 0},
			{"agent fence + fence halt < node_timeout", FenceAfter(nt) + FenceHalt(nt), nt, 0},
			// The controller's judgement (Judge): a store outage shorter than
			// ProbeGap cannot make a renewing holder's key expire (it retries
			// and renews before); a probe every ProbeEvery keeps a working
			// store's window unbroken; after an outage a running holder takes
			// its lease again within the fresh node_timeout.
			{"renew + probe gap + retry + longest attempt < node_timeout", renew + ProbeGap(nt) + RenewRetry(nt) + renew, nt, 0},
			{"probe interval < probe gap", ProbeEvery(nt), ProbeGap(nt), 0},
			{"take timeout + take retry + take timeout < node_timeout (fresh window)", 2*TakeTimeout(nt) + TakeRetry(nt), nt, allHoldFrom},
		}
		for _, c := range checks {
			if nt >= c.from && c.lhs >= c.rhs {
				t.Errorf("node_timeout %s: %s: %s, not less than %s", nt, c.what, c.lhs, c.rhs)
			}
		}
		// The controller declares a node lost no earlier than node_timeout
		// after T0 (its margin, the check interval and the read, is >= 0),
		// whatever the store did: with a store writable for long, the key's
		// expiry decides; with a store back at T0, the Judge's window does.
		for _, back := range []time.Duration{-10 * nt, 0, nt / 2} {
			t0 := time.Date(2026, 12, 2, 0, 0, 0, 0, time.UTC)
			j := Judge{TTL: nt}
			for at := t0.Add(back); !at.After(t0.Add(3 * nt)); at = at.Add(ProbeEvery(nt)) {
				j.Probed(at, at.Add(time.Millisecond), true)
				expiry := t0.Add(nt) // the key missing from here on at the earliest
				if at.Before(expiry) {
					continue
				}
				declare := j.Decide(at) == Lost
				if declare && at.Sub(t0) < tl.GuestsDownBy() {
					t.Fatalf("node_timeout %s, store back at T0%+v: declared at T0+%s, before the guests are down (T0+%s)", nt, back, at.Sub(t0), tl.GuestsDownBy())
				}
				// The window starts at the first probe's acknowledgement.
				if want := !at.Before(t0.Add(back + time.Millisecond + nt)); declare != want {
					t.Fatalf("node_timeout %s, store back at T0%+v: at T0+%s declared %v, want %v", nt, back, at.Sub(t0), declare, want)
				}
			}
		}
	}
	// The election: the lead is valid until the send of the last renewal
	// that succeeded plus the TTL (no later than the key's expiry, so two
	// leaders never decide at once); a renewal tick late by a whole interval
	// still renews in time; a standby polls faster than the leader renews.
	for ms := int64(100); ms <= 60_000; ms += 7 {
		ttl := time.Duration(ms) * time.Millisecond
		for _, c := range []check{
			{"2 x election renew interval < election ttl", 2 * ElectionRenewEvery(ttl), ttl, 0},
			{"election poll < election renew interval", ElectionPoll(ttl), ElectionRenewEvery(ttl), 0},
		} {
			if c.lhs >= c.rhs {
				t.Errorf("election ttl %s: %s: %s, not less than %s", ttl, c.what, c.lhs, c.rhs)
			}
		}
	}
}

// TestTimingDefaults prints the default numbers for the README's table.
func TestTimingDefaults(t *testing.T) {
	for _, nt := range []time.Duration{5 * time.Second, 20 * time.Second} {
		t.Log(fmt.Sprintf("node_timeout %s: %s; attempt %s, resend %s, retry %s, takeover wait %s, poll %s/%s, fence halt %s, probe every %s gap %s",
			nt, timeline.Default(nt), RenewAttempt(nt), RenewResend(nt), RenewRetry(nt), TakeoverWait(nt), PollEvery(nt), PollTimeout(nt), FenceHalt(nt), ProbeEvery(nt), ProbeGap(nt)))
	}
}
