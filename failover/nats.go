package failover

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/vmguard/vmguard/events"
	"github.com/vmguard/vmguard/internal/lease"
)

// The controller's node liveness over NATS: the leases it reads
// (leaseStore, liveness.go) and the prober that writes probe keys into
// their bucket (StoreProber). Both are JetStream requests the Log does not
// model; Run builds them here (newNATSLiveness), and no other file of the
// runner reaches into the Log's JetStream context.

// newNATSLiveness returns the lease store and prober of the lease bucket
// beside log; the prober writes its probe keys under id.
func newNATSLiveness(log *events.Log, id string, logger *slog.Logger) (*bucketLeases, *lease.Prober) {
	js := log.JetStream()
	return &bucketLeases{log: log, js: js}, lease.NewProber(js, id, lease.SystemClock{}, logger)
}

// bucketLeases is the leaseStore of the lease bucket beside the log. The
// read at the leader is a JetStream API request the Log does not model
// (lease.ReadFromLeader).
type bucketLeases struct {
	log *events.Log
	js  jetstream.JetStream // the log's
	kv  jetstream.KeyValue  // opened by open
}

// open opens the lease bucket, creating it with node_timeout ttl if it does
// not exist yet (no ttl yet: no one holds a lease, nothing to read).
func (b *bucketLeases) open(ctx context.Context, ttl time.Duration) (bool, error) {
	if b.kv != nil {
		return true, nil
	}
	kv, err := b.log.OpenBucket(ctx, lease.Bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		if ttl <= 0 {
			return false, nil
		}
		kv, err = b.log.EnsureBucket(ctx, lease.Spec(ttl))
	}
	if err != nil {
		return false, err
	}
	b.kv = kv
	return true, nil
}

func (b *bucketLeases) get(ctx context.Context, node string) ([]byte, bool, error) {
	entry, err := b.kv.Get(ctx, node)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		return nil, false, nil
	case err != nil:
		return nil, false, err
	}
	return entry.Value(), true, nil
}

func (b *bucketLeases) getAtLeader(ctx context.Context, node string) (lease.Value, bool, error) {
	return lease.ReadFromLeader(ctx, b.js, node)
}
