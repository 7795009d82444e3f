package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// untilCluster calls attempt until it succeeds, fails for a reason that
// waiting cannot cure (a usage error, an error from JetStream that is not
// about the cluster forming), ctx ends, or wait has passed; it says once
// per new reason that it waits, and once that it may go on. attempt gets a
// context that ends 5 s on, for its requests: one that the forming cluster
// drops costs one attempt, not the whole wait.
func untilCluster(ctx context.Context, logger *slog.Logger, wait time.Duration, what string, attempt func(context.Context) error) error {
	deadline := time.Now().Add(wait)
	said := ""
	for {
		actx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := attempt(actx)
		cancel()
		if err == nil {
			if said != "" {
				logger.Info("JetStream cluster ready", "what", what)
			}
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("%s: %w", what, ctx.Err())
		}
		if errors.Is(err, errUsage) || !transient(err) {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%w: waited --cluster-wait %v for the JetStream cluster (a majority of its servers up and routed to each other, every stream and bucket with a leader); check the servers' output", err, wait)
		}
		waitAgain(ctx, err, &said, func(reason string) {
			logger.Warn("waiting for the JetStream cluster", "what", what, "reason", reason, "up_to", time.Until(deadline).Round(time.Second))
		})
	}
}

// waitAgain is the pause between two attempts of a wait for the JetStream
// cluster (untilCluster, provision): it calls say with what err says the
// wait is for when that differs from *said, the reason said last, then
// waits 500 ms or until ctx ends.
func waitAgain(ctx context.Context, err error, said *string, say func(reason string)) {
	if msg := waitReason(err); msg != *said {
		say(msg)
		*said = msg
	}
	t := time.NewTimer(500 * time.Millisecond)
	select {
	case <-ctx.Done():
	case <-t.C:
	}
	t.Stop()
}
