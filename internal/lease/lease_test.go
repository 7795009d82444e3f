package lease_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/vmguard/vmguard/events"
	"github.com/vmguard/vmguard/internal/lease"
	"github.com/vmguard/vmguard/internal/natsd"
)

func bucketReplicas(t *testing.T, js jetstream.JetStream, bucket string) int {
	t.Helper()
	kv, err := js.KeyValue(context.Background(), bucket)
	if err != nil {
		t.Fatal(err)
	}
	st, err := kv.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return st.(*jetstream.KeyValueBucketStatus).StreamInfo().Config.Replicas
}

// TestEnsureSingleServer: one server, with or without the stream: R1.
func TestEnsureSingleServer(t *testing.T) {
	ctx := context.Background()
	nc := natsd.Connect(t, natsd.StartTest(t))
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lease.Ensure(ctx, js, 2*time.Second); err != nil {
		t.Fatal(err)
	}
	if n := bucketReplicas(t, js, lease.Bucket); n != 1 {
		t.Errorf("lease bucket without a stream: R%d, want R1", n)
	}
	if _, err := events.EnsureStream(ctx, js, 1); err != nil {
		t.Fatal(err)
	}
	if _, err := lease.Ensure(ctx, js, 3*time.Second); err != nil {
		t.Fatal(err)
	}
	if n := bucketReplicas(t, js, lease.Bucket); n != 1 {
		t.Errorf("lease bucket beside an R1 stream: R%d, want R1", n)
	}
}

// TestEnsureFollowsStreamReplicas: on a three-server cluster the lease
// bucket gets the stream's replica count, and an R1 bucket made before the
// stream was scaled up is scaled up by the next Ensure.
func TestEnsureFollowsStreamReplicas(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := natsd.StartCluster(t, 3)
	js, err := jetstream.New(c.Connect(t))
	if err != nil {
		t.Fatal(err)
	}
	c.Retry(30*time.Second, "lease bucket", func(ctx context.Context) error { _, err := lease.Ensure(ctx, js, 4*time.Second); return err })
	if n := bucketReplicas(t, js, lease.Bucket); n != 1 {
		t.Errorf("lease bucket without a stream: R%d, want R1", n)
	}
	c.Retry(30*time.Second, "stream R3", func(ctx context.Context) error { _, err := events.EnsureStream(ctx, js, 3); return err })
	if n, err := events.StreamReplicas(ctx, js); err != nil || n != 3 {
		t.Fatalf("stream replicas: %d, %v; want 3", n, err)
	}
	kv, err := lease.Ensure(ctx, js, 4*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if n := bucketReplicas(t, js, lease.Bucket); n != 3 {
		t.Errorf("lease bucket beside an R3 stream: R%d, want R3", n)
	}
	// A write sent while the bucket changes its peers may go unanswered:
	// holders retry with short timeouts, as here.
	for {
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		_, err := kv.Put(pctx, "node1", lease.Value{Node: "node1", TTLMS: 4000}.Encode())
		cancel()
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("put a lease into the scaled-up bucket: %v", err)
		}
	}
}

// TestRelease: a holder deletes only its own key; someone else's, or a
// missing one, is ErrNotHeld and stays as it is.
func TestRelease(t *testing.T) {
	ctx := context.Background()
	nc := natsd.Connect(t, natsd.StartTest(t))
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	kv, err := lease.Ensure(ctx, js, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	ours := func(b []byte) bool { v, err := lease.Decode(b); return err == nil && v.Holder == "a" }
	if err := lease.Release(ctx, kv, "node1", ours); !errors.Is(err, lease.ErrNotHeld) {
		t.Fatalf("release a missing key: %v, want ErrNotHeld", err)
	}
	if _, err := kv.Put(ctx, "node1", lease.Value{Node: "node1", Holder: "b", TTLMS: 10000}.Encode()); err != nil {
		t.Fatal(err)
	}
	if err := lease.Release(ctx, kv, "node1", ours); !errors.Is(err, lease.ErrNotHeld) {
		t.Fatalf("release another holder's key: %v, want ErrNotHeld", err)
	}
	if _, err := kv.Get(ctx, "node1"); err != nil {
		t.Fatalf("another holder's key after a release: %v", err)
	}
	if _, err := kv.Put(ctx, "node1", lease.Value{Node: "node1", Holder: "a", TTLMS: 10000}.Encode()); err != nil {
		t.Fatal(err)
	}
	if err := lease.Release(ctx, kv, "node1", ours); err != nil {
		t.Fatalf("release our key: %v", err)
	}
	if _, err := kv.Get(ctx, "node1"); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Fatalf("our key after a release: %v, want gone", err)
	}
}
