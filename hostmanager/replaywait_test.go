package hostmanager

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/vmguard/vmguard/events"
	"github.com/vmguard/vmguard/internal/natsd"
	"github.com/vmguard/vmguard/internal/natsd/natstest"
)

// lockedBuffer is a buffer safe for a writer and a reader at once.
type lockedBuffer = natstest.Buffer

// TestReplayWaitsForQuorum: a host manager that starts while its cluster
// has no majority (two of three servers down, as on a host cut off from
// the others) retries its replay for ReplayWait, not for a number of
// attempts: with 2 s it gives up, with a minute it is still there 15 s on
// and goes on once the servers are back. (The partition
// harness saw a host manager restarted on a cut-off host exit with
// "JetStream system temporarily unavailable"; its node never joined again.)
func TestReplayWaitsForQuorum(t *testing.T) {
	if testing.Short() {
		t.Skip("three servers, ~20 s; run without -short")
	}
	c := natsd.StartCluster(t, 3)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// The new cluster may still be electing its meta leader: the open is
	// retried, each attempt bounded (one sent while it elects can wait for
	// an answer that never comes; CI saw "ensure stream VMGUARD: context
	// deadline exceeded" here under load).
	nc := c.Connect(t)
	var l *events.Log
	natstest.WaitFor(t, 30*time.Second, "the R3 log opened", func() bool {
		octx, ocancel := context.WithTimeout(ctx, 5*time.Second)
		defer ocancel()
		var err error
		l, err = events.Open(octx, nc, events.WithReplicas(3))
		return err == nil
	})
	// A new R3 stream may still be electing its leader: the first append
	// is retried (the id stores it once) until it is acknowledged.
	joined := events.Stamp(events.New("/test", "node1", events.NodeJoined{}), time.Now())
	natstest.WaitFor(t, 30*time.Second, "the first append acknowledged", func() bool {
		actx, acancel := context.WithTimeout(ctx, 2*time.Second)
		defer acancel()
		_, err := l.Append(actx, joined)
		return err == nil
	})
	c.Shutdown(1)
	c.Shutdown(2)
	// Until the lone server knows it has no majority, a read may still work.
	for deadline := time.Now().Add(30 * time.Second); ; {
		rctx, rcancel := context.WithTimeout(ctx, time.Second)
		_, err := l.Replay(rctx, events.ReadOptions{}, func(events.Event) error { return nil })
		rcancel()
		if err != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the log still reads 30 s after two of three servers stopped")
		}
		time.Sleep(100 * time.Millisecond) // poll
	}

	// Bounded: with ReplayWait 2 s it gives up after the attempt under way.
	short, err := NewRunner(Config{Node: "node1", Log: l, StateDir: t.TempDir(), ReplayWait: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	begin := time.Now()
	sctx, scancel := context.WithTimeout(ctx, time.Minute) // a Run that does not give up fails the test, not hangs it
	defer scancel()
	if err := short.Run(sctx); err == nil || !strings.Contains(err.Error(), "replay log") || time.Since(begin) > 15*time.Second {
		t.Fatalf("Run with ReplayWait 2s and no majority: %v after %v, want a replay error within 15 s", err, time.Since(begin).Round(time.Millisecond))
	}

	var logs lockedBuffer
	r, err := NewRunner(Config{
		Node: "node1", Log: l, Logger: slog.New(slog.NewTextHandler(&logs, nil)), StateDir: t.TempDir(), ReplayWait: time.Minute,
	})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	begin = time.Now()
	go func() { done <- r.Run(ctx) }()
	// Past the old bound of six attempts, with no majority all along.
	for time.Since(begin) < 15*time.Second {
		select {
		case err := <-done:
			t.Fatalf("Run ended %v after the start, with the cluster short of a majority: %v\n%s", time.Since(begin).Round(time.Millisecond), err, logs.String())
		case <-time.After(100 * time.Millisecond): // poll
		}
	}
	if !strings.Contains(logs.String(), "replay log; resuming") {
		t.Fatalf("no retried replay logged:\n%s", logs.String())
	}
	c.Restart(1)
	c.Restart(2)
	deadline := time.Now().Add(45 * time.Second)
	for !strings.Contains(logs.String(), "host manager state rebuilt") {
		select {
		case err := <-done:
			t.Fatalf("Run ended after the servers came back: %v\n%s", err, logs.String())
		case <-time.After(100 * time.Millisecond): // poll
		}
		if time.Now().After(deadline) {
			t.Fatalf("state not rebuilt 45 s after the servers came back:\n%s", logs.String())
		}
	}
	cancel()
	<-done
}
