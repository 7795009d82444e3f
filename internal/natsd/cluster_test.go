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
	c.Retry(30*time.Second, "create stream T", func(ctx context.Context) error {
		_, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "T", Subjects: []string{"t.>"}, Replicas: 3})
		return err
	})
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

// TestStopHandsOver: a member stopped with Stop hands over the streams it
// leads before it goes, so the others have a leader at once rather than
// after their election timers (4-9 s), and a write is acknowledged right
// after; the last member, with no current replica left to take over,
// stops without waiting.
func TestStopHandsOver(t *testing.T) {
	c := StartCluster(t, 3)
	js, err := jetstream.New(c.Connect(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for _, name := range []string{"T", "U"} {
		c.Retry(30*time.Second, "create stream "+name, func(ctx context.Context) error {
			_, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: name, Subjects: []string{name + ".>"}, Replicas: 3})
			return err
		})
	}
	// Every member current: the leader's replicas could take over.
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if _, err := js.Publish(ctx, "T.x", []byte("x")); err == nil {
			if info, err := js.Stream(ctx, "T"); err == nil && allCurrent(info.CachedInfo().Cluster) {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("stream T's replicas not current")
		}
	}
	leader := c.StreamLeader("T")
	if leader < 0 {
		t.Fatal("no leader of stream T")
	}
	begin := time.Now()
	led, moved := c.Stop(leader)
	stopped := time.Now()
	if led < 1 || moved != led {
		t.Errorf("Stop of the leader of T: led %d streams, %d handed over; want at least 1, all handed over", led, moved)
	}
	if l := c.StreamLeader("T"); l < 0 || l == leader {
		t.Errorf("right after Stop: stream T led by %d, want another member at once", l)
	}
	// The hand-over is proven above (a new leader at once); the write
	// shows the stream takes writes. Its bound leaves room for this
	// client to reconnect if it was on the stopped member, on a loaded
	// machine (2 s failed there once); the latency is logged below.
	// One attempt may be lost with the connection to the stopped member
	// (seen once in CI: no ack in 10 s): a client sends again, under the
	// same id, until acknowledged.
	wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
	for {
		pctx, pcancel := context.WithTimeout(wctx, time.Second)
		_, err = js.Publish(pctx, "T.x", []byte("x"), jetstream.WithMsgID("after-stop"))
		pcancel()
		if err == nil || wctx.Err() != nil {
			break
		}
	}
	wcancel()
	if err != nil {
		t.Errorf("write right after Stop: %v", err)
	}
	t.Logf("Stop took %v (%d of %d streams handed over); write acknowledged %v after it",
		stopped.Sub(begin).Round(time.Millisecond), moved, led, time.Since(stopped).Round(time.Millisecond))

	// Down to one: the last has nobody to hand over to.
	others := []int{}
	for i := range 3 {
		if i != leader {
			others = append(others, i)
		}
	}
	c.Stop(others[0])
	begin = time.Now()
	c.Stop(others[1])
	if d := time.Since(begin); d >= HandoverWait {
		t.Errorf("the last member took %v to stop, want no wait for a handover", d)
	}
}

// allCurrent says whether every replica of a stream is current.
func allCurrent(ci *jetstream.ClusterInfo) bool {
	if ci == nil || ci.Leader == "" {
		return false
	}
	for _, r := range ci.Replicas {
		if !r.Current {
			return false
		}
	}
	return true
}
