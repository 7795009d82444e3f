package natsd

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// TestStartCluster: three servers form a JetStream cluster; an R3 stream
// keeps taking writes when its leader shuts down, and the member comes
// back as itself.
func TestStartCluster(t *testing.T) {
	c := StartCluster(t, 3)
	js, err := jetstream.New(c.Connect(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "T", Subjects: []string{"t.>"}, Replicas: 3}); err != nil {
		t.Fatal(err)
	}
	publish := func() {
		t.Helper()
		for {
			pctx, pcancel := context.WithTimeout(ctx, time.Second)
			_, err := js.Publish(pctx, "t.x", []byte("x"))
			pcancel()
			if err == nil {
				return
			}
			if ctx.Err() != nil {
				t.Fatalf("publish: %v", err)
			}
		}
	}
	publish()
	leader := c.StreamLeader("T")
	if leader < 0 {
		t.Fatal("no leader of stream T")
	}
	c.Shutdown(leader)
	if c.Server(leader) != nil {
		t.Fatal("a member shut down is still listed")
	}
	publish()
	l := -1
	for deadline := time.Now().Add(10 * time.Second); l < 0 && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		l = c.StreamLeader("T")
	}
	if l < 0 || l == leader {
		t.Errorf("stream leader after the shutdown of %s: %d", c.Name(leader), l)
	}
	c.Restart(leader)
	c.WaitFormed(30 * time.Second)
	if s := c.Server(leader); s == nil || s.Name() != c.Name(leader) {
		t.Errorf("restarted member: %v", s)
	}
	publish()
}
