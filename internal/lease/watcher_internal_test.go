package lease

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
		if got := WrittenAt(tt.stamp, tt.seen, tt.floor); !got.Equal(tt.want) {
			t.Errorf("%s: WrittenAt(%v, %v, %v) = %v, want %v", tt.name, tt.stamp, tt.seen, tt.floor, got, tt.want)
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
		if got := IsDeleteMarker(tt.h); got != tt.want {
			t.Errorf("IsDeleteMarker(%v) = %v, want %v", tt.h, got, tt.want)
		}
	}
}

// TestPollCadence: four polls per renewal interval, each read bounded.
func TestPollCadence(t *testing.T) {
	if got := PollEvery(10 * time.Second); got != 625*time.Millisecond {
		t.Errorf("PollEvery(10s) = %v", got)
	}
	for ttl, want := range map[time.Duration]time.Duration{0: 250 * time.Millisecond, time.Second: 250 * time.Millisecond, 10 * time.Second: 1250 * time.Millisecond, time.Minute: 2 * time.Second} {
		if got := PollTimeout(ttl); got != want {
			t.Errorf("PollTimeout(%v) = %v, want %v", ttl, got, want)
		}
	}
}

// TestNewer: revisions order the key's values; a lower revision stamped
// later comes from a bucket made again.
func TestNewer(t *testing.T) {
	t0 := time.Date(2026, 12, 2, 0, 0, 0, 0, time.UTC)
	later := t0.Add(time.Second)
	for _, tt := range []struct {
		name    string
		rev     uint64
		stamp   time.Time
		lastRev uint64
		last    time.Time
		want    int
	}{
		{"first ever", 1, t0, 0, time.Time{}, 1},
		{"next revision", 8, later, 7, t0, 1},
		{"the same one again (watch, then poll)", 7, t0, 7, t0, 0},
		{"a replica behind", 6, t0.Add(-time.Second), 7, t0, -1},
		{"bucket made again: revisions start over", 1, later, 7, t0, 1},
		{"bucket made again, same revision number", 7, later, 7, t0, 1},
	} {
		if got := Newer(tt.rev, tt.stamp, tt.lastRev, tt.last); got != tt.want {
			t.Errorf("%s: Newer = %d, want %d", tt.name, got, tt.want)
		}
	}
}
