package events

import "github.com/nats-io/nats.go/jetstream"

// ConsumerConfigForTest returns the configuration of ro's consumer.
func ConsumerConfigForTest(ro ReadOptions) jetstream.ConsumerConfig {
	return ro.consumer(followInactiveExpiry)
}
