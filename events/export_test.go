package events

import (
	"context"

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
// nothing for a while, of which it read up to consumer sequence read; unread
// is what the check before found delivered and not read.
func (l *Log) StalledForTest(ctx context.Context, cons jetstream.Consumer, read uint64, unread *uint64) error {
	return l.stalled(ctx, cons, read, unread)
}
