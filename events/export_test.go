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
