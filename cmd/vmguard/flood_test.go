package main

import (
	"context"
	"crypto/rand"
	"flag"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vmguard/vmguard/events"
	"github.com/vmguard/vmguard/internal/guestauth"
	"github.com/vmguard/vmguard/internal/natsd/natstest"
)

// streamBytes is the log's size in bytes.
func streamBytes(t *testing.T, l *events.Log) uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := l.JetStream().Stream(ctx, events.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	return s.CachedInfo().State.Bytes
}

var floodFor = flag.Duration("flood", 10*time.Second, "how long TestGuestFlood floods (10s in CI, 60s in the long run)")

// floodConfig has one package whose service exits every second and is
// restarted at once, so that restart latency can be measured all along.
// Its guest "runs in a VM": the test starts its agent as guest-webvm, in
// the guest's own account; the exec driver's commands do nothing.
// node_timeout is 10 s (TestGuestAccount's 3 s, less than the 14 s
// Serviceguard default): a flood still costs the server CPU (TLS, the
// gate), and on a machine whose two cores other builds keep busy a 3 s
// node_timeout (a fence after 1.8 s without a renewal) fenced a node at
// the flood's start in one run of five, the server itself starved (the
// flood then reached 4 MB/s, not 25-78).
var floodConfig = strings.Replace(strings.Replace(guestAccountConfig, "node_timeout: 3s", "node_timeout: 10s", 1), "guest_timeout: 3s", "guest_timeout: 10s", 1)

// restartLatency is one restart: the exit, and how long until the next
// start of the same service, both by the agent's clock.
type restartLatency struct {
	exited time.Time
	took   time.Duration
}

// restarts lists the restarts of service svc of package pkg in evs.
func restarts(evs []events.Event, svc string) []restartLatency {
	var out []restartLatency
	var exited time.Time
	for _, e := range evs {
		switch d := e.Data.(type) {
		case events.ProcessExited:
			if d.Service == svc {
				exited = e.Time
			}
		case events.ProcessStarted:
			if d.Service == svc && !exited.IsZero() {
				out = append(out, restartLatency{exited: exited, took: e.Time.Sub(exited)})
				exited = time.Time{}
			}
		}
	}
	return out
}

func median(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

// TestGuestFlood: in a `vmguard init` set-up (durable server, the
// controller and two host managers with their own identities, guest
// webvm's agent in its own account), guest webvm's identity publishes
// maximum-size junk (its account's max_payload) on the one subject it may
// write, vmguard.events.pkg.web.process.exited, as fast as it can for
// -flood (10 s; 60 s in the long run). Meanwhile no node is fenced or
// lost and no guest is lost; nothing of the junk is stored (the gate
// refuses it; the log grows by the agent's own events only); within a few
// seconds of the flood's end the service's restarts take as long as
// before it. It logs the flood's rate and what the gate refused.
func TestGuestFlood(t *testing.T) {
	if testing.Short() || *floodFor <= 0 {
		t.Skip("end-to-end test with OS processes; run without -short")
	}
	ctx := context.Background()
	e := newSecureEnv(t, floodConfig)
	if o, err := e.cli("operator-admin", "apply", "-f", e.cfg); err != nil {
		t.Fatalf("apply as operator-admin: %v\n%s", err, o)
	}
	c := &cluster{t: t, url: e.url, dir: e.dir, procs: map[string]*exec.Cmd{}, logs: map[string]*syncBuffer{}, env: map[string][]string{
		"failover": e.env("controller"), "node1": e.env("host-node1"), "node2": e.env("host-node2"),
	}}
	defer c.stopAll()
	e.startGuestAgent(c, "node1")
	c.start("failover", "failover")
	for _, n := range []string{"node1", "node2"} {
		c.start(n, "host", "--node", n, "--state", filepath.Join(e.dir, n), "--no-guard")
	}
	admin := dialLogFlags(t, e.flags("operator-admin"))
	natstest.WaitFor(t, 60*time.Second, "5 restarts of web's tick before the flood", func() bool { return len(restarts(readLog(t, admin), "tick")) >= 5 })
	startSeq, err := admin.LastSeq(ctx)
	if err != nil {
		t.Fatal(err)
	}
	startBytes := streamBytes(t, admin)

	// The flood: as fast as the guest's connection lets it, no acks.
	guest := e.connectGuest("webvm")
	junk := make([]byte, guestauth.DefaultLimits.MaxPayload-1024) // room for the subject and headers
	_, _ = rand.Read(junk)
	subj := events.PackageSubject("web", "process", "exited")
	var sent atomic.Int64
	began := time.Now()
	for time.Since(began) < *floodFor {
		if err := guest.Publish(subj, junk); err != nil {
			t.Fatalf("flood: %v", err)
		}
		sent.Add(1)
	}
	if err := guest.Flush(); err != nil {
		t.Logf("flood: flush: %v", err)
	}
	ended := time.Now()
	floodTook := ended.Sub(began)
	endSeq, err := admin.LastSeq(ctx)
	if err != nil {
		t.Fatal(err)
	}
	grew := streamBytes(t, admin) - startBytes
	t.Logf("flood: %d messages of %d KiB sent in %v (%.0f MB/s offered); the stream grew by %d messages, %d bytes",
		sent.Load(), len(junk)>>10, floodTook.Round(time.Millisecond), float64(sent.Load())*float64(len(junk))/floodTook.Seconds()/1e6, endSeq-startSeq, grew)
	// The agent writes two events a restart, about one restart a second;
	// each is well under 4 KiB. Junk would be 63 KiB a message.
	if limit := uint64(floodTook.Seconds()+10) * 4 * 4096; grew > limit {
		t.Errorf("the stream grew by %d bytes during the flood: want at most %d (the agent's own events)", grew, limit)
	}

	// Restarts after the flood: the first that began 3 s after its end on.
	settle := ended.Add(3 * time.Second)
	natstest.WaitFor(t, 120*time.Second, "5 restarts of tick after the flood", func() bool {
		n := 0
		for _, r := range restarts(readLog(t, admin), "tick") {
			if r.exited.After(settle) {
				n++
			}
		}
		return n >= 5
	})
	evs := readLog(t, admin)
	var before, during, after []time.Duration
	for _, r := range restarts(evs, "tick") {
		switch {
		case r.exited.Before(began):
			before = append(before, r.took)
		case r.exited.Before(ended):
			during = append(during, r.took)
		case r.exited.After(settle):
			after = append(after, r.took)
		}
	}
	t.Logf("restart latency (median): before %v (%d), during the flood %v (%d), from 3 s after it %v (%d); skipped by the reader: %d",
		median(before), len(before), median(during), len(during), median(after), len(after), admin.Skipped())
	for line := range strings.Lines(e.server.String()) {
		if strings.Contains(line, "guest gate") {
			t.Log(strings.TrimSpace(line))
		}
	}
	if n := admin.Skipped(); n != 0 {
		t.Errorf("%d malformed messages stored: the junk reached the log", n)
	}
	for _, x := range evs {
		if x.Type() == events.TypeNodeFenced || x.Type() == events.TypeNodeLost || x.Type() == events.TypeGuestLost {
			t.Errorf("%s %s at seq %d during a guest's flood: %+v", x.Type(), x.Subject, x.Seq, x.Data)
		}
	}
	if limit := max(3*median(before), median(before)+time.Second); median(after) > limit {
		t.Errorf("restarts after the flood take %v (median), before it %v: want at most %v", median(after), median(before), limit)
	}
}
