package guestagent_test

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/vmguard/vmguard/events"
	"github.com/vmguard/vmguard/guestagent"
	"github.com/vmguard/vmguard/internal/natsd/natstest"
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
	natstest.WaitFor(t, 5*time.Second, "heartbeats", func() bool { return b.count() > 0 })

	l := openLog(t, url)
	if err := l.JetStream().DeleteStream(context.Background(), events.StreamName); err != nil {
		t.Fatal(err)
	}
	run(t, ta.client, sh("web", "svc", "r1", "sleep 1000"))

	// Beats stop: none for several heartbeat intervals, within SickAfter
	// plus the append timeout of one failed delivery and slack.
	natstest.WaitFor(t, sickAfter+15*time.Second, "heartbeats withheld", func() bool {
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
	natstest.WaitFor(t, 20*time.Second, "process.started delivered", func() bool { return len(procEvents(t, l2, "web")) > 0 })
	n := b.count()
	natstest.WaitFor(t, 5*time.Second, "heartbeats again", func() bool { return b.count() > n+2 })
}

// An agent whose state dir is full cannot spool a process's exit: it does
// not retry in silence forever — after SickAfter it withholds heartbeats
// (its host manager then declares the guest lost) — and once space is
// freed it spools and delivers the exit and beats again. Needs root to
// mount a small tmpfs.
func TestAgentSickWhenSpoolFull(t *testing.T) {
	t.Parallel()
	state := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", state).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs for a full state dir (needs root): %v: %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("umount", "-l", state).Run() })
	s := startServer(t, t.TempDir(), 0)
	url := s.ClientURL()
	const sickAfter = 300 * time.Millisecond
	ta := startAgent(t, url, func(c *guestagent.Config) { c.SickAfter = sickAfter; c.StateDir = state })
	b := watchBeats(t, connect(t, url), "g1")
	l := openLog(t, url)
	flag := filepath.Join(t.TempDir(), "go")
	// Its exit record carries 4 KB of output: more than the room left in
	// the spool file's last page.
	run(t, ta.client, sh("web", "svc", "r1", "while [ ! -f "+flag+" ]; do sleep 0.05; done; "+
		"i=0; while [ $i -lt 30 ]; do printf '%0200d\\n' 0; i=$((i+1)); done"))
	natstest.WaitFor(t, 10*time.Second, "process.started delivered", func() bool { return len(procEvents(t, l, "web")) == 1 })

	// Fill the state dir, then let the process end.
	filler := filepath.Join(state, "filler")
	f, err := os.Create(filler)
	if err != nil {
		t.Fatal(err)
	}
	chunk := make([]byte, 64<<10)
	for {
		if _, err := f.Write(chunk); err != nil {
			break
		}
	}
	f.Close()
	if err := os.WriteFile(flag, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	natstest.WaitFor(t, sickAfter+15*time.Second, "heartbeats withheld", func() bool {
		n := b.count()
		time.Sleep(500 * time.Millisecond) // 10 heartbeat intervals of 50ms
		return b.count() == n
	})
	if len(exitsOf(procEvents(t, l, "web"))) != 0 {
		t.Fatal("an exit was delivered from a full spool")
	}

	// Space again: the exit is spooled and delivered, the beats resume.
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	waitExit(t, l, "web", "r1")
	n := b.count()
	natstest.WaitFor(t, 5*time.Second, "heartbeats again", func() bool { return b.count() > n+2 })
}
