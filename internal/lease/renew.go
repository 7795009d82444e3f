package lease

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Updater is what Renew needs of a key-value bucket (jetstream.KeyValue).
type Updater interface {
	Update(ctx context.Context, key string, value []byte, revision uint64) (uint64, error)
}

// Renewal is a renewal that succeeded.
type Renewal struct {
	// Rev is the key's revision after it.
	Rev uint64
	// Sent is when the attempt that succeeded was sent: the holder's fence
	// is timed from it (the key's TTL started later, when it was stored).
	Sent time.Time
	// RTT is how long that attempt's answer took.
	RTT time.Duration
	// Attempts counts the attempts sent, the one that succeeded included.
	Attempts int
}

// Renew updates key to value() if its revision is still rev, and keeps
// trying until deadline (the holder's fence).
//
// Attempts overlap: the first is sent at once; while none has answered,
// another goes out first after it and then every resend, and each stays
// open until deadline. The first answer decides:
//   - an update that succeeded: its Renewal;
//   - a revision mismatch or a missing key (jetstream.ErrKeyRevisionMismatch,
//     jetstream.ErrKeyNotFound): that error, for the caller to read the key
//     (an attempt that was stored but whose answer was lost looks like this
//     to the next one);
//   - any other error (no responders, the cluster has no quorum): the next
//     attempt is sent on schedule.
//
// Why overlap: while the cluster elects the bucket's leader (2–9 s after the
// old one stopped or crashed) every update is dropped without an answer,
// and only one sent after the new leader took over is answered. An attempt
// cut short and resent later, with a pause between, left a renewal up to
// several seconds behind the store's return (TestClusterSurvivesServerLoss
// saw renewal gaps of 11-12 s after a 4.8 s election, and a fence at 12 s);
// with attempts every resend that are never abandoned early, the renewal
// is through within resend of the store taking writes again, and a slow
// link's answer still counts when it comes (docs/bench/partitions.md,
// finding 4). Each attempt writes a fresh value() (its Renewed time is its
// send time); at most one of them can succeed at rev.
//
// After deadline, or when ctx ends, Renew returns the last attempt's error
// (context.DeadlineExceeded if none answered).
func Renew(ctx context.Context, kv Updater, key string, rev uint64, value func() []byte, first, resend time.Duration, deadline time.Time) (Renewal, error) {
	actx, cancel := context.WithDeadline(ctx, deadline)
	type result struct {
		rev  uint64
		sent time.Time
		rtt  time.Duration
		err  error
	}
	results := make(chan result)
	var wg sync.WaitGroup
	defer func() {
		cancel() // every attempt still open returns at once
		wg.Wait()
	}()
	attempts := 0
	send := func() {
		attempts++
		b := value()
		sent := time.Now()
		wg.Add(1)
		go func() {
			defer wg.Done()
			v, err := kv.Update(actx, key, b, rev)
			select {
			case results <- result{v, sent, time.Since(sent), err}:
			case <-actx.Done():
			}
		}()
	}
	send()
	next := time.NewTimer(first)
	defer next.Stop()
	var lastErr error
	for {
		select {
		case <-actx.Done():
			if lastErr == nil || ctx.Err() != nil {
				lastErr = actx.Err()
			}
			return Renewal{Attempts: attempts}, fmt.Errorf("renew lease %s: %w", key, lastErr)
		case <-next.C:
			send()
			next.Reset(resend)
		case r := <-results:
			switch {
			case r.err == nil:
				return Renewal{Rev: r.rev, Sent: r.sent, RTT: r.rtt, Attempts: attempts}, nil
			case errors.Is(r.err, jetstream.ErrKeyRevisionMismatch), errors.Is(r.err, jetstream.ErrKeyNotFound):
				return Renewal{Attempts: attempts}, fmt.Errorf("renew lease %s: %w", key, r.err)
			case errors.Is(r.err, context.DeadlineExceeded), errors.Is(r.err, context.Canceled):
				// The attempt ran out with Renew's own deadline.
			default:
				lastErr = r.err
			}
		}
	}
}
