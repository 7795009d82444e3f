package events

import (
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// TestFollowHeartbeatBacksOff: a follower whose consumers miss their
// heartbeats soon after they are made asks the next one for heartbeats
// half as often, up to followHeartbeatMax; a consumer that served for
// followHeartbeatCalm brings the interval back; other reasons to replace
// a consumer leave it as it is.
func TestFollowHeartbeatBacksOff(t *testing.T) {
	hb := followHeartbeat
	var seen []time.Duration
	for range 5 {
		hb = nextHeartbeat(hb, jetstream.ErrNoHeartbeat, time.Second)
		seen = append(seen, hb)
	}
	want := []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 4 * time.Second, 4 * time.Second}
	for i := range want {
		if seen[i] != want[i] {
			t.Fatalf("intervals after misses in a row %v, want %v", seen, want)
		}
	}
	if got := nextHeartbeat(hb, errors.New("consumer deleted"), time.Second); got != hb {
		t.Errorf("after another reason: %v, want %v kept", got, hb)
	}
	if got := nextHeartbeat(hb, jetstream.ErrNoHeartbeat, followHeartbeatCalm); got != followHeartbeat {
		t.Errorf("after a consumer that served %v: %v, want %v", followHeartbeatCalm, got, followHeartbeat)
	}
}
