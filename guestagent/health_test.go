package guestagent_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/vmguard/vmguard/events"
	"github.com/vmguard/vmguard/guestagent"
)

// beats records when the heartbeats of a guest arrive.
type beats struct {
	mu   sync.Mutex
	last time.Time
	n    int
}

func watchBeats(t *testing.T, nc *nats.Conn, guest string) *beats {
	t.Helper()
	b := &beats{}
	sub, err := nc.Subscribe(guestagent.HeartbeatSubject(guest), func(*nats.Msg) {
		b.mu.Lock()
		b.last, b.n = time.Now(), b.n+1
		b.mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	return b
}

func (b *beats) count() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.n
}

// An agent whose events the log refuses while it is connected (here: the
// stream is gone; likewise a publish permission withdrawn) does not retry
// in silence forever: after SickAfter it withholds its heartbeats (its host
// manager then declares the guest lost, an event) and refuses runs. Once
// the log takes its events again it delivers the spool and beats again.
func TestAgentSickWhenLogRefusesEvents(t *testing.T) {
	t.Parallel()
	s := startServer(t, t.TempDir(), 0)
	url := s.ClientURL()
	const sickAfter = 300 * time.Millisecond
	ta := startAgent(t, url, func(c *guestagent.Config) { c.SickAfter = sickAfter })
	admin := connect(t, url)
	b := watchBeats(t, admin, "g1")
	waitFor(t, 5*time.Second, "heartbeats", func() bool { return b.count() > 0 })

	l := openLog(t, url)
	if err := l.JetStream().DeleteStream(context.Background(), events.StreamName); err != nil {
		t.Fatal(err)
	}
	run(t, ta.client, sh("web", "svc", "r1", "sleep 1000"))

	// Beats stop: none for several heartbeat intervals, within SickAfter
	// plus the append timeout of one failed delivery and slack.
	waitFor(t, sickAfter+15*time.Second, "heartbeats withheld", func() bool {
		n := b.count()
		time.Sleep(500 * time.Millisecond) // 10 heartbeat intervals of 50ms
		return b.count() == n
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := ta.client.Run(ctx, sh("web", "other", "r2", "sleep 1000"))
	if !errors.Is(err, guestagent.ErrUnavailable) {
		t.Fatalf("run on a sick agent: %v, want unavailable", err)
	}

	// The log is back: the spool is delivered and the beats resume.
	l2 := openLog(t, url)
	waitFor(t, 20*time.Second, "process.started delivered", func() bool { return len(procEvents(t, l2, "web")) > 0 })
	n := b.count()
	waitFor(t, 5*time.Second, "heartbeats again", func() bool { return b.count() > n+2 })
}
