package lease

import (
	"testing"
	"time"
)

// stepClock is a Clock a test moves by hand.
type stepClock struct{ t time.Time }

func (c *stepClock) Now() time.Time               { return c.t }
func (c *stepClock) step(d time.Duration)         { c.t = c.t.Add(d) }
func (c *stepClock) at(d time.Duration) time.Time { return c.t.Add(d) }

// TestJudgeStoreOutage drives a Judge with an injected clock through a store
// outage longer than the TTL: while the store takes no probe nothing is
// declared; once it takes probes again a missing key is declared a loss
// only a whole TTL later; short blips (failed probes, a pause below Gap) do
// not restart the window, a pause longer than Gap does.
func TestJudgeStoreOutage(t *testing.T) {
	const ttl = 20 * time.Second
	gap := RenewEvery(ttl) // 5s
	c := &stepClock{t: time.Date(2026, 12, 2, 3, 0, 0, 0, time.UTC)}
	j := Judge{TTL: ttl}
	expect := func(what string, want Verdict) {
		t.Helper()
		if got := j.Decide(c.Now()); got != want {
			t.Fatalf("%s (t=%s): verdict %s, want %s", what, c.Now().Format("15:04:05.000"), got, want)
		}
	}
	// probe sends now, is acknowledged after lat.
	probe := func(lat time.Duration, ok bool) {
		sent := c.Now()
		c.step(lat)
		j.Probed(sent, c.Now(), ok)
	}
	// every probes every gap/4 for at most d.
	every := func(d time.Duration) {
		for end := c.at(d); !c.at(gap / 4).After(end); {
			probe(10*time.Millisecond, true)
			c.step(gap/4 - 10*time.Millisecond)
		}
	}

	expect("never probed", Unknown)
	probe(time.Millisecond, false)
	expect("only a failed probe", Unknown)
	probe(5*time.Millisecond, true)
	start := c.Now()
	expect("first success", Young)
	every(ttl - time.Second)
	expect("writable for less than ttl", Young)
	if got := j.WritableSince(c.Now()); !got.Equal(start) {
		t.Fatalf("writable since %s, want %s", got, start)
	}
	every(time.Second + gap/4)
	expect("writable for ttl", Lost)

	// A failed probe and a pause below gap change nothing.
	probe(gap/4, false)
	expect("after one failed probe", Lost)
	c.step(gap / 4)
	probe(10*time.Millisecond, true) // gap - 10ms + 10ms after the last success's send
	expect("success within gap of the last", Lost)

	// The outage: no probe gets through for longer than ttl.
	outage := c.Now()
	for c.Now().Sub(outage) < ttl+gap {
		probe(gap, false) // each attempt times out
		if c.Now().Sub(outage) > gap {
			expect("during the outage", Unknown)
		}
	}
	probe(300*time.Millisecond, true) // the store is back
	back := c.Now()
	expect("store back", Young)
	every(ttl - gap/2)
	expect("back for less than ttl", Young)
	if got := j.WritableSince(c.Now()); !got.Equal(back) {
		t.Fatalf("writable since %s, want %s (when the store came back)", got, back)
	}
	every(gap)
	expect("back for ttl", Lost)

	// The controller's own view: a pause of the prober longer than gap
	// (controller frozen) is an outage too, and so is a verdict asked long
	// after the last success.
	c.step(gap + time.Millisecond)
	expect("no success for more than gap", Unknown)
	probe(10*time.Millisecond, true)
	expect("success after a pause longer than gap", Young)

	// A probe acknowledged late: the window counts from its acknowledgement.
	j = Judge{TTL: ttl}
	probe(3*time.Second, true)
	if got := j.WritableSince(c.Now()); !got.Equal(c.Now()) {
		t.Fatalf("writable since %s, want the acknowledgement at %s", got, c.Now())
	}
	// Done - previous send above gap: a new window even though probes
	// succeeded, since a stretch without any stored write may have passed.
	j = Judge{TTL: ttl}
	probe(10*time.Millisecond, true)
	c.step(gap - time.Second)
	probe(2*time.Second, true) // done - previous sent = gap + 10ms
	if got := j.WritableSince(c.Now()); !got.Equal(c.Now()) {
		t.Fatalf("writable since %s, want a new window at %s", got, c.Now())
	}
}
