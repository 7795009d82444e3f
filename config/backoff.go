package config

import (
	"math"
	"time"
)

// DelayFor returns how long to wait before restart attempt number attempt
// (1 for the first restart): Delay * Factor^(attempt-1), at most Max. A nil
// Backoff restarts at once.
func (b *Backoff) DelayFor(attempt int) time.Duration {
	if b == nil || b.Delay <= 0 || attempt < 1 {
		return 0
	}
	d := float64(b.Delay) * math.Pow(max(b.Factor, 1), float64(attempt-1))
	if b.Max > 0 && d >= float64(b.Max) {
		return b.Max.D()
	}
	if d >= math.MaxInt64 {
		return time.Duration(math.MaxInt64)
	}
	return time.Duration(d)
}
