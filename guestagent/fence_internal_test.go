package guestagent

import (
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// TestWritten: a polled value is timed by the server's stamp, never later
// than it arrived (a guest clock behind the server's) nor earlier than the
// poll before it (a guest clock ahead).
func TestWritten(t *testing.T) {
	t0 := time.Date(2026, 12, 2, 0, 0, 0, 0, time.UTC)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	for _, tt := range []struct {
		name               string
		stamp, seen, floor time.Time
		want               time.Time
	}{
		{"clocks agree", at(900), at(1000), at(500), at(900)},
		{"guest clock behind: the stamp is in the future", at(1500), at(1000), at(500), at(1000)},
		{"guest clock ahead: the stamp is before the last poll", at(100), at(1000), at(500), at(500)},
		{"no poll before: the stamp", at(100), at(1000), time.Time{}, at(100)},
		{"no poll before, stamp in the future: arrival", at(2000), at(1000), time.Time{}, at(1000)},
	} {
		if got := written(tt.stamp, tt.seen, tt.floor); !got.Equal(tt.want) {
			t.Errorf("%s: written(%v, %v, %v) = %v, want %v", tt.name, tt.stamp, tt.seen, tt.floor, got, tt.want)
		}
	}
}

// TestIsDeleteMarker: deletes and purges of a KV key, by the client's
// header or a server marker, are lapses; a put is not.
func TestIsDeleteMarker(t *testing.T) {
	for _, tt := range []struct {
		h    nats.Header
		want bool
	}{
		{nil, false},
		{nats.Header{}, false},
		{nats.Header{kvOperation: []string{"DEL"}}, true},
		{nats.Header{kvOperation: []string{"PURGE"}}, true},
		{nats.Header{jetstream.MarkerReasonHeader: []string{"MaxAge"}}, true},
		{nats.Header{"Nats-Msg-Id": []string{"x"}}, false},
	} {
		if got := isDeleteMarker(tt.h); got != tt.want {
			t.Errorf("isDeleteMarker(%v) = %v, want %v", tt.h, got, tt.want)
		}
	}
}

// TestPollCadence: four polls per renewal interval, each read bounded.
func TestPollCadence(t *testing.T) {
	if got := pollEvery(10 * time.Second); got != 625*time.Millisecond {
		t.Errorf("pollEvery(10s) = %v", got)
	}
	if got := pollEvery(0); got != pollWaiting {
		t.Errorf("pollEvery(0) = %v", got)
	}
	for ttl, want := range map[time.Duration]time.Duration{0: pollMinTimeout, time.Second: pollMinTimeout, 10 * time.Second: 1250 * time.Millisecond, time.Minute: pollMaxTimeout} {
		if got := pollTimeout(ttl); got != want {
			t.Errorf("pollTimeout(%v) = %v, want %v", ttl, got, want)
		}
	}
}
