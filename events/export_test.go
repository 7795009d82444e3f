package events

import (
	"context"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// ConsumerConfigForTest returns the configuration of ro's consumer.
func ConsumerConfigForTest(ro ReadOptions) jetstream.ConsumerConfig {
	return ro.consumer(followInactiveExpiry)
}

// CreatedNotForTest is what follows a failed create of cfg's consumer.
func (l *Log) CreatedNotForTest(ctx context.Context, cfg *jetstream.ConsumerConfig) {
	l.createdNot(ctx, cfg)
}

// StalledForTest is a follower's check of a consumer that delivered
// nothing for a while, with recheck as the pause before it asks again
// about a consumer that held no pull request.
func (l *Log) StalledForTest(ctx context.Context, cons jetstream.Consumer, recheck time.Duration) error {
	return l.stalledAfter(ctx, cons, recheck)
}
