package failover

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/vmguard/vmguard/events"
)

// TestFollower reads a real log without a runner: catchUp hands every
// message up to the end (a malformed one to skip), resuming where the
// caller says; Run then hands each later message to the loop's channel in
// stream order, a malformed one as a skipped item with its subject, and
// returns nil when its context ends.
func TestFollower(t *testing.T) {
	env := newEnv(t)
	junk := func() uint64 {
		t.Helper()
		ack, err := env.js.Publish(env.ctx, events.PackageSubject("web", "package", "started"), []byte("not json"))
		if err != nil {
			t.Fatal(err)
		}
		return ack.Sequence
	}
	env.add("node1", events.NodeJoined{})
	env.add("node2", events.NodeJoined{})
	junk()
	env.add("node3", events.NodeJoined{})

	f := newFollower(env.log, testLogger(t, "follower"))
	var applied, skipped []uint64
	last := uint64(0)
	err := f.catchUp(env.ctx, func() uint64 { return last + 1 }, func(e events.Event) error {
		applied = append(applied, e.Seq)
		last = e.Seq
		return nil
	}, func(seq uint64, subject string) {
		skipped = append(skipped, seq)
		last = seq
	})
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(applied, skipped) != "[1 2 4] [3]" {
		t.Fatalf("catch up applied %v, skipped %v; want [1 2 4] and [3]", applied, skipped)
	}

	ctx, cancel := context.WithCancel(env.ctx)
	out := make(chan item, 4)
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx, last+1, out) }()
	env.add("node1", events.NodeHalted{})
	bad := junk()
	env.add("node2", events.NodeHalted{})
	var got []string
	for len(got) < 3 {
		select {
		case it := <-out:
			if it.skipped {
				got = append(got, fmt.Sprintf("%d skipped %s", it.e.Seq, it.subject))
			} else {
				got = append(got, fmt.Sprintf("%d %s %s", it.e.Seq, events.ShortType(it.e.Type()), it.e.Subject))
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("follower handed over %v, then nothing for 10s", got)
		}
	}
	want := fmt.Sprintf("[5 node.halted node1 %d skipped %s 7 node.halted node2]", bad, events.PackageSubject("web", "package", "started"))
	if fmt.Sprint(got) != want {
		t.Errorf("followed %v, want %s", got, want)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run after its context ended: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return within 10s of its context's end")
	}
}
