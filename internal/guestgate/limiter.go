package guestgate

import "time"

// Limiter is a token bucket a guest: each guest may append Rate events a
// second on average and Burst at once. It is a pure core: the caller
// passes the time, and one goroutine owns it.
type Limiter struct {
	rate    float64
	burst   float64
	buckets map[string]*bucket
}

type bucket struct {
	tokens float64
	last   time.Time
}

// NewLimiter returns a Limiter of rate events a second and burst at once
// for each guest.
func NewLimiter(rate float64, burst int) *Limiter {
	return &Limiter{rate: rate, burst: float64(burst), buckets: map[string]*bucket{}}
}

// Allow takes one token of guest's bucket at now and reports whether there
// was one. A guest's first event finds its bucket full; a clock that went
// back refills nothing.
func (l *Limiter) Allow(guest string, now time.Time) bool {
	b := l.buckets[guest]
	if b == nil {
		b = &bucket{tokens: l.burst, last: now}
		l.buckets[guest] = b
	}
	if d := now.Sub(b.last); d > 0 {
		b.tokens = min(l.burst, b.tokens+d.Seconds()*l.rate)
		b.last = now
	}
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}
