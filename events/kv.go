package events

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Bucket describes a key-value bucket kept beside the log: the node leases,
// the failover election and the controller's snapshots. Every such bucket is
// set up the same way (EnsureBucket), so that it lives as long as the log
// does.
type Bucket struct {
	// Name is the bucket's name.
	Name string
	// Description says what the bucket holds, for `nats kv ls`.
	Description string
	// TTL, if not zero, is how long a key lives without being written again.
	TTL time.Duration
}

// EnsureBucket creates bucket b or updates it to b: one value a key, file
// storage, and the replica count of the VMGUARD stream (1 without one), so
// that on a cluster whose log is R3 the bucket is R3 too — losing the one
// server that held a node's lease or the leader key must not change what
// the cluster decides while the log survives it.
func EnsureBucket(ctx context.Context, js jetstream.JetStream, b Bucket) (jetstream.KeyValue, error) {
	replicas, err := StreamReplicas(ctx, js)
	if err != nil {
		return nil, fmt.Errorf("ensure bucket %s: %w", b.Name, err)
	}
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      b.Name,
		Description: b.Description,
		History:     1,
		TTL:         b.TTL,
		Storage:     jetstream.FileStorage,
		Replicas:    replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("ensure bucket %s: %w", b.Name, err)
	}
	return kv, nil
}

// EnsureBucket creates bucket b beside the log or updates it to b (see the
// package function EnsureBucket).
func (l *Log) EnsureBucket(ctx context.Context, b Bucket) (jetstream.KeyValue, error) {
	return EnsureBucket(ctx, l.js, b)
}

// OpenBucket binds to the existing bucket name beside the log; the error
// wraps jetstream.ErrBucketNotFound when there is none yet.
func (l *Log) OpenBucket(ctx context.Context, name string) (jetstream.KeyValue, error) {
	kv, err := l.js.KeyValue(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("open bucket %s: %w", name, err)
	}
	return kv, nil
}
