package sim

import "time"

// Clock is simulated time: it moves only when the simulation moves it.
type Clock struct{ t time.Time }

// NewClock returns a clock that reads start.
func NewClock(start time.Time) *Clock { return &Clock{t: start} }

// Now returns the simulated time.
func (c *Clock) Now() time.Time { return c.t }

// Advance moves the clock d forward (never back).
func (c *Clock) Advance(d time.Duration) {
	if d > 0 {
		c.t = c.t.Add(d)
	}
}

// Set moves the clock to t if t is later.
func (c *Clock) Set(t time.Time) {
	if t.After(c.t) {
		c.t = t
	}
}
