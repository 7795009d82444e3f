package lease_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/vmguard/vmguard/internal/lease"
)

// store is a key-value store of one key behind a link that the test
// shapes (lease.Updater is our own interface: a fake of it is allowed).
// An update sent before back is dropped (never answered), as while the
// cluster elects the bucket's leader, or refused with refuse if set;
// later ones are applied after delay, in the order they arrive, and
// answered.
type store struct {
	mu     sync.Mutex
	rev    uint64
	back   time.Time
	refuse error
	delay  time.Duration
	sent   []time.Time
}

func (s *store) Update(ctx context.Context, key string, value []byte, revision uint64) (uint64, error) {
	s.mu.Lock()
	s.sent = append(s.sent, time.Now())
	dropped := time.Now().Before(s.back)
	s.mu.Unlock()
	if dropped && s.refuse != nil {
		return 0, s.refuse
	}
	if dropped {
		<-ctx.Done()
		return 0, ctx.Err()
	}
	select {
	case <-time.After(s.delay):
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if revision != s.rev {
		return 0, jetstream.ErrKeyRevisionMismatch
	}
	s.rev++
	return s.rev, nil
}

// TestRenew: one renewal in overlapping attempts (lease.Renew) is through
// soon after the store takes writes again, keeps a slow link's first
// answer, returns a revision mismatch at once, and gives up at its
// deadline.
func TestRenew(t *testing.T) {
	const (
		first  = 200 * time.Millisecond
		resend = 50 * time.Millisecond
		slack  = 150 * time.Millisecond // scheduling on a loaded machine
	)
	value := func() []byte { return []byte("v") }
	t.Run("healthy: one attempt", func(t *testing.T) {
		s := &store{rev: 7}
		r, err := lease.Renew(context.Background(), s, "n", 7, value, first, resend, time.Now().Add(5*time.Second))
		if err != nil || r.Rev != 8 || r.Attempts != 1 {
			t.Fatalf("got %+v, %v; want rev 8 in one attempt", r, err)
		}
	})
	t.Run("election: through within resend of the store's return", func(t *testing.T) {
		// The old way (an attempt cut short after its bound, a pause, a
		// doubled bound) was through up to a bound and a pause after the
		// store came back.
		for _, after := range []time.Duration{100 * time.Millisecond, 700 * time.Millisecond, 1300 * time.Millisecond} {
			start := time.Now()
			s := &store{rev: 1, back: start.Add(after)}
			r, err := lease.Renew(context.Background(), s, "n", 1, value, first, resend, start.Add(5*time.Second))
			if err != nil {
				t.Fatalf("store back after %v: %v", after, err)
			}
			if r.Sent.Before(s.back) {
				t.Fatalf("store back after %v: renewal sent %v before it", after, s.back.Sub(r.Sent))
			}
			if late := r.Sent.Sub(s.back); late > max(first-after, resend)+slack {
				t.Errorf("store back after %v: renewal sent %v after it, want within %v", after, late, max(first-after, resend))
			}
			t.Logf("store back after %v: renewed %v after it, %d attempts", after, r.Sent.Sub(s.back).Round(time.Millisecond), r.Attempts)
		}
	})
	t.Run("refused until back: retried on schedule", func(t *testing.T) {
		start := time.Now()
		s := &store{rev: 1, back: start.Add(400 * time.Millisecond), refuse: jetstream.ErrNoStreamResponse}
		r, err := lease.Renew(context.Background(), s, "n", 1, value, first, resend, start.Add(5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		if late := r.Sent.Sub(s.back); late < 0 || late > resend+slack {
			t.Errorf("renewal sent %v after the store's return, want within %v", late, resend)
		}
		s.mu.Lock()
		n := len(s.sent)
		s.mu.Unlock()
		if want := int(400*time.Millisecond/resend) + 2; n > want {
			t.Errorf("%d attempts in 400 ms, want at most %d (one per resend, not a busy loop)", n, want)
		}
	})
	t.Run("slow link: the first answer counts", func(t *testing.T) {
		start := time.Now()
		s := &store{rev: 1, delay: 3 * first}
		r, err := lease.Renew(context.Background(), s, "n", 1, value, first, resend, start.Add(5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		if r.Attempts < 2 || r.Sent.Sub(start) > slack {
			t.Errorf("got %d attempts, sent %v after the start; want the first attempt's answer, with others sent meanwhile", r.Attempts, r.Sent.Sub(start))
		}
		if r.RTT < s.delay {
			t.Errorf("rtt %v, want at least the link's %v", r.RTT, s.delay)
		}
	})
	t.Run("revision mismatch: at once", func(t *testing.T) {
		s := &store{rev: 5}
		start := time.Now()
		_, err := lease.Renew(context.Background(), s, "n", 4, value, first, resend, start.Add(5*time.Second))
		if !errors.Is(err, jetstream.ErrKeyRevisionMismatch) || time.Since(start) > first {
			t.Errorf("got %v after %v, want a revision mismatch at once", err, time.Since(start))
		}
	})
	t.Run("never answered: gives up at the deadline", func(t *testing.T) {
		start := time.Now()
		s := &store{rev: 1, back: start.Add(time.Hour)}
		_, err := lease.Renew(context.Background(), s, "n", 1, value, first, resend, start.Add(600*time.Millisecond))
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("got %v, want the deadline exceeded", err)
		}
		if d := time.Since(start); d < 600*time.Millisecond || d > 600*time.Millisecond+slack {
			t.Errorf("returned after %v, want at the deadline (600ms)", d)
		}
	})
}
