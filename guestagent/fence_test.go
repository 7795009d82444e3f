package guestagent_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/vmguard/vmguard/events"
	"github.com/vmguard/vmguard/guestagent"
	"github.com/vmguard/vmguard/internal/duration"
	"github.com/vmguard/vmguard/internal/lease"
	"github.com/vmguard/vmguard/internal/natsd"
	"github.com/vmguard/vmguard/internal/natsd/natstest"
)

// fencingSetUp starts a server, opens the log and creates the lease bucket
// with ttl; it returns the server's URL, the log and the bucket.
func fencingSetUp(t testing.TB, ttl time.Duration) (string, *events.Log, jetstream.KeyValue) {
	t.Helper()
	url := startServer(t, t.TempDir(), 0).ClientURL()
	return url, openLog(t, url), leaseBucket(t, url, ttl)
}

// leaseBucket creates the lease bucket with ttl on its own connection.
func leaseBucket(t testing.TB, url string, ttl time.Duration) jetstream.KeyValue {
	t.Helper()
	js, err := jetstream.New(connect(t, url))
	if err != nil {
		t.Fatal(err)
	}
	// A bound of its own: without one JetStream calls give up after 5 s,
	// which a loaded machine's new three-server cluster can exceed.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	kv, err := lease.Ensure(ctx, js, ttl)
	if err != nil {
		t.Fatal(err)
	}
	return kv
}

// renew writes one renewal of node's lease and returns when it began.
func renew(t *testing.T, kv jetstream.KeyValue, node string, ttl time.Duration) time.Time {
	t.Helper()
	at := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := kv.Put(ctx, node, lease.Value{Node: node, Holder: "test", Renewed: at.UTC(), TTLMS: ttl.Milliseconds()}.Encode()); err != nil {
		t.Fatalf("renew lease: %v", err)
	}
	return at
}

// renewing is a renewer running: it renews a lease as a host manager does.
type renewing struct {
	stop   func()
	mu     sync.Mutex
	last   time.Time     // end of the last successful renewal
	maxGap time.Duration // longest time between two successful renewals
}

// Stop stops renewing and returns the end of the last successful renewal.
func (r *renewing) Stop() time.Time {
	r.stop()
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.last
}

// MaxGap is the longest time so far between two successful renewals.
func (r *renewing) MaxGap() time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.maxGap
}

// renewer renews node's lease every lease.RenewEvery(ttl), as a host
// manager does, until it is stopped.
func renewer(t testing.TB, kv jetstream.KeyValue, node string, ttl time.Duration) *renewing {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &renewing{}
	var wg sync.WaitGroup
	put := func() {
		pctx, c := context.WithTimeout(ctx, time.Second)
		defer c()
		if _, err := kv.Put(pctx, node, lease.Value{Node: node, Holder: "test", Renewed: time.Now().UTC(), TTLMS: ttl.Milliseconds()}.Encode()); err == nil {
			now := time.Now()
			r.mu.Lock()
			if !r.last.IsZero() {
				r.maxGap = max(r.maxGap, now.Sub(r.last))
			}
			r.last = now
			r.mu.Unlock()
		}
	}
	put()
	wg.Add(1)
	go func() {
		defer wg.Done()
		tk := time.NewTicker(lease.RenewEvery(ttl))
		defer tk.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tk.C:
				put()
			}
		}
	}()
	var once sync.Once
	r.stop = func() { once.Do(func() { cancel(); wg.Wait() }) }
	t.Cleanup(r.stop)
	return r
}

// tryRun sends one run request.
func tryRun(c *guestagent.Client, req guestagent.RunRequest) (guestagent.RunReply, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return c.Run(ctx, req)
}

// runWhenHeld polls req until the agent accepts it (a refused run changes
// nothing, so the same request may be repeated).
func runWhenHeld(t *testing.T, c *guestagent.Client, req guestagent.RunRequest) guestagent.RunReply {
	t.Helper()
	var reply guestagent.RunReply
	natstest.WaitFor(t, 10*time.Second, "run "+req.RequestID+" accepted", func() bool {
		r, err := tryRun(c, req)
		if err != nil && !errors.Is(err, guestagent.ErrUnavailable) && !errors.Is(err, nats.ErrNoResponders) {
			t.Fatalf("run %s: %v", req.RequestID, err)
		}
		reply = r
		return err == nil
	})
	return reply
}

// wantRefused checks that a run is refused with 503 and a message holding want.
func wantRefused(t *testing.T, c *guestagent.Client, want string) {
	t.Helper()
	_, err := tryRun(c, sh("web", "late", "late", "sleep 100"))
	if !errors.Is(err, guestagent.ErrUnavailable) || !strings.Contains(err.Error(), want) {
		t.Fatalf("run while the lease is not held: %v, want unavailable: %q", err, want)
	}
}

// wantNotServing checks that a fenced agent answers no requests: the
// package's guest may run again on another node under the same name.
func wantNotServing(t *testing.T, c *guestagent.Client) {
	t.Helper()
	natstest.WaitFor(t, 5*time.Second, "the fenced agent to stop serving", func() bool {
		_, err := tryRun(c, sh("web", "late", "late", "sleep 100"))
		return errors.Is(err, nats.ErrNoResponders)
	})
}

func wantLease(t *testing.T, c *guestagent.Client, want string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	p, err := c.Ping(ctx)
	if err != nil || p.Lease != want || p.Node != "node1" {
		t.Fatalf("ping: %+v, %v; want lease %q on node1", p, err, want)
	}
}

func withNode(cfg *guestagent.Config) { cfg.Node = "node1" }

// TestFenceLapse: runs wait for the first renewal; renewals keep processes
// running; when they stop, every process is stopped (reason fenced) before
// the ttl has passed since the last one, even one that ignores SIGTERM under
// a long halt timeout, and runs are refused until the next renewal.
//
// The deadline is the property (nobody may find the lease expired while a
// process runs), so the ttl is long enough that its slack is several times
// the scheduling noise of a loaded machine under -race: the stubborn process
// is killed at 0.8 ttl (4 s), 1 s before the deadline.
func TestFenceLapse(t *testing.T) {
	const ttl = 5 * time.Second
	s := startServer(t, t.TempDir(), 0)
	url := s.ClientURL()
	l := openLog(t, url)
	ta := startAgent(t, url, withNode) // the lease bucket does not exist yet

	wantRefused(t, ta.client, "node lease of node1 not seen yet")
	wantLease(t, ta.client, guestagent.LeaseWaiting)

	kv := leaseBucket(t, url, ttl)
	rn := renewer(t, kv, "node1", ttl)
	runWhenHeld(t, ta.client, sh("web", "a", "a", "exec sleep 1000"))
	stubborn := sh("web", "b", "b", "trap '' TERM; while :; do sleep 0.05; done")
	stubborn.HaltTimeout = duration.Duration(time.Hour) // the fence must not wait for it
	run(t, ta.client, stubborn)
	wantLease(t, ta.client, guestagent.LeaseHeld)

	// Renewals keep coming: the processes outlive two ttls.
	for start := time.Now(); time.Since(start) < 2*ttl; time.Sleep(50 * time.Millisecond) {
		ps := ta.Processes()
		if len(ps) != 2 || ps[0].State != guestagent.StateRunning || ps[1].State != guestagent.StateRunning {
			t.Fatalf("processes while the lease is renewed: %+v", ps)
		}
	}

	// Renewals stop.
	last := rn.Stop()
	evs := map[string]events.Event{}
	for _, id := range []string{"a", "b"} {
		e, x := waitExit(t, l, "web", id)
		evs[id] = e
		if x.Reason != guestagent.ReasonFenced || x.Signal == "" {
			t.Errorf("exit of %s: %+v, want reason fenced by a signal", id, x)
		}
		if e.Time.After(last.Add(ttl)) {
			t.Errorf("%s exited %s after the last renewal, not before the ttl %s", id, e.Time.Sub(last), ttl)
		}
		if e.Time.Before(last.Add(lease.FenceAfter(ttl) - lease.RenewEvery(ttl))) {
			t.Errorf("%s exited %s after the last renewal: fenced too early", id, e.Time.Sub(last))
		}
	}
	if x := evs["b"].Data.(events.ProcessExited); x.Signal != "SIGKILL" {
		t.Errorf("process ignoring SIGTERM ended by %q, want SIGKILL", x.Signal)
	}
	t.Logf("fenced exits after the last renewal: a %s, b %s (ttl %s)", evs["a"].Time.Sub(last), evs["b"].Time.Sub(last), ttl)
	wantNotServing(t, ta.client)

	// A fresh renewal: it serves and accepts runs again.
	renew(t, kv, "node1", ttl)
	runWhenHeld(t, ta.client, sh("web", "a", "a2", "exec sleep 1000"))
	wantLease(t, ta.client, guestagent.LeaseHeld)

	// A repeat of the fenced run answers from memory and starts nothing.
	if r, err := tryRun(ta.client, sh("web", "a", "a", "exec sleep 1000")); err != nil || !r.Duplicate || r.Process.Exit == nil {
		t.Errorf("repeat of a fenced run: %+v, %v", r, err)
	}
}

// TestFenceLeaseDeleted: a deleted or purged lease fences at once, long
// before FenceAfter(ttl).
func TestFenceLeaseDeleted(t *testing.T) {
	const ttl = 20 * time.Second
	url, l, kv := fencingSetUp(t, ttl)
	renewed := renew(t, kv, "node1", ttl) // before the agent starts: its watch begins with it
	ta := startAgent(t, url, withNode)
	runWhenHeld(t, ta.client, sh("web", "a", "a", "exec sleep 1000"))

	if err := kv.Delete(context.Background(), "node1"); err != nil {
		t.Fatal(err)
	}
	e, x := waitExit(t, l, "web", "a")
	if x.Reason != guestagent.ReasonFenced {
		t.Errorf("exit after delete: %+v, want reason fenced", x)
	}
	if e.Time.After(renewed.Add(lease.FenceAfter(ttl) / 2)) {
		t.Errorf("fenced %s after the renewal: not at the delete", e.Time.Sub(renewed))
	}
	wantNotServing(t, ta.client)

	renewed = renew(t, kv, "node1", ttl)
	runWhenHeld(t, ta.client, sh("web", "a", "a2", "exec sleep 1000"))
	if err := kv.Purge(context.Background(), "node1"); err != nil {
		t.Fatal(err)
	}
	e, x = waitExit(t, l, "web", "a2")
	if x.Reason != guestagent.ReasonFenced || e.Time.After(renewed.Add(lease.FenceAfter(ttl)/2)) {
		t.Errorf("exit after purge: %+v %s after the renewal, want reason fenced at once", x, e.Time.Sub(renewed))
	}
	wantNotServing(t, ta.client)
}

// TestFenceNATSDown: an agent that cannot reach NATS fences within
// FenceAfter(ttl) of the last renewal it saw, before the ttl has passed
// (1.6 s of slack at this ttl); the fenced exits reach the log once the
// server is back, each once.
func TestFenceNATSDown(t *testing.T) {
	const ttl = 4 * time.Second
	srv, url, l := startOutageServer(t)
	kv := leaseBucket(t, url, ttl)
	rn := renewer(t, kv, "node1", ttl)
	ta := startAgent(t, url, withNode)
	runWhenHeld(t, ta.client, sh("web", "a", "a", "exec sleep 1000"))
	natstest.WaitFor(t, 10*time.Second, "start in the log", func() bool { return len(procEvents(t, l, "web")) == 1 })

	last := rn.Stop()
	srv.stop()
	var exit *guestagent.ExitInfo
	natstest.WaitFor(t, 3*ttl, "the agent to fence without NATS", func() bool {
		p := ta.Processes()
		if len(p) == 1 && p[0].Exit != nil {
			exit = p[0].Exit
		}
		return exit != nil
	})
	if exit.Reason != guestagent.ReasonFenced {
		t.Errorf("exit without NATS: %+v, want reason fenced", exit)
	}
	if exit.At.After(last.Add(ttl)) {
		t.Errorf("fenced %s after the last renewal, not before the ttl %s", exit.At.Sub(last), ttl)
	}
	t.Logf("fenced %s after the last renewal (ttl %s)", exit.At.Sub(last), ttl)

	srv.start()
	xs := waitExits(t, l, "web", 1)
	if len(xs) != 1 || xs[0].Reason != guestagent.ReasonFenced || xs[0].RequestID != "a" {
		t.Fatalf("exits in the log: %+v", xs)
	}
	natstest.WaitFor(t, 10*time.Second, "spool delivered", func() bool { return ta.Undelivered() == 0 })
	if n := countEvents(procEvents(t, l, "web")); n["a exited"] != 1 || n["a started"] != 1 {
		t.Errorf("events in the log: %v, want one start and one exit", n)
	}
	wantNotServing(t, ta.client)

	renew(t, kv, "node1", ttl)
	runWhenHeld(t, ta.client, sh("web", "a", "a2", "exec sleep 1000"))
	ta.stop(t) // while the server that came back still runs
}

// TestFenceSurvivesServerLoss: on a three-server cluster with an R3 lease
// bucket, the server that holds the agent's lease watch (its consumer) and
// leads the bucket stops, cleanly, as in a rolling restart. The renewals go
// on through the other two; the agent keeps seeing them (its poll reads any
// replica) and keeps its process running for well past FenceAfter(ttl) of
// the last renewal before the loss: no false fence.
func TestFenceSurvivesServerLoss(t *testing.T) {
	if testing.Short() {
		t.Skip("three-server cluster")
	}
	const ttl = 10 * time.Second // as the cluster test's node_timeout
	c := natsd.StartCluster(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c.Retry(30*time.Second, "open the R3 log", func(ctx context.Context) error {
		_, err := events.Open(ctx, c.Connect(t), events.WithReplicas(3))
		return err
	})
	url := c.URLs()
	admin, err := jetstream.New(c.Connect(t))
	if err != nil {
		t.Fatal(err)
	}
	// Bounded tries: a request to the cluster just formed can go
	// unanswered (one try waited a minute for "read replicas of stream").
	var kv jetstream.KeyValue
	c.Retry(time.Minute, "create the R3 lease bucket", func(ctx context.Context) error {
		var err error
		kv, err = lease.Ensure(ctx, admin, ttl)
		return err
	})
	if st, err := kv.Status(ctx); err != nil || st.(*jetstream.KeyValueBucketStatus).StreamInfo().Config.Replicas != 3 ||
		!st.(*jetstream.KeyValueBucketStatus).StreamInfo().Config.AllowDirect {
		t.Fatalf("lease bucket: %+v, %v; want R3 with direct get", st, err)
	}
	rn := renewer(t, kv, "node1", ttl)
	ta := startAgent(t, url, withNode)
	runWhenHeld(t, ta.client, sh("web", "a", "a", "exec sleep 1000"))

	// The watch's consumer lives on one server: make that server the
	// bucket's leader too, then stop it.
	var host string
	natstest.WaitFor(t, 10*time.Second, "the lease watch's consumer", func() bool {
		hosts := consumerHosts(ctx, admin, lease.StreamName)
		if len(hosts) == 1 {
			host = hosts[0]
		}
		return host != ""
	})
	victim := slices.IndexFunc([]int{0, 1, 2}, func(i int) bool { return c.Name(i) == host })
	if victim < 0 {
		t.Fatalf("watch on %q, not a member", host)
	}
	natstest.WaitFor(t, 20*time.Second, "the bucket led by "+host, func() bool {
		if c.StreamLeader(lease.StreamName) == victim {
			return true
		}
		req := fmt.Sprintf(`{"placement":{"preferred":%q}}`, host)
		rctx, rcancel := context.WithTimeout(ctx, 2*time.Second)
		defer rcancel()
		_, _ = c.Connect(t).RequestWithContext(rctx, "$JS.API.STREAM.LEADER.STEPDOWN."+lease.StreamName, []byte(req))
		return false
	})
	stopped := time.Now()
	c.Shutdown(victim)
	t.Logf("stopped %s (lease watch and bucket leader) in %v", host, time.Since(stopped).Round(time.Millisecond))

	// Past FenceAfter of the last renewal before the loss, and a renewal
	// interval more: the process runs and the lease is held throughout.
	for time.Since(stopped) < lease.FenceAfter(ttl)+lease.RenewEvery(ttl) {
		ps := ta.Processes()
		if len(ps) != 1 || ps[0].State != guestagent.StateRunning {
			t.Fatalf("%v after the loss (renewals at most %v apart): processes %+v", time.Since(stopped).Round(time.Millisecond), rn.MaxGap(), ps)
		}
		time.Sleep(50 * time.Millisecond)
	}
	wantLease(t, ta.client, guestagent.LeaseHeld)
	if g := rn.MaxGap(); g >= lease.FenceAfter(ttl) {
		t.Fatalf("renewals %v apart: the cluster took no writes for longer than FenceAfter", g)
	}
	t.Logf("renewals at most %v apart across the loss; no fence", rn.MaxGap().Round(time.Millisecond))

	// A real lapse still fences, through the two servers left.
	last := rn.Stop()
	var exit *guestagent.ExitInfo
	natstest.WaitFor(t, 3*ttl, "the agent to fence", func() bool {
		if p := ta.Processes(); len(p) == 1 && p[0].Exit != nil {
			exit = p[0].Exit
		}
		return exit != nil
	})
	if exit.Reason != guestagent.ReasonFenced || exit.At.After(last.Add(ttl)) {
		t.Errorf("exit after the renewals stopped: %+v %v after the last, want fenced before the ttl %v", exit, exit.At.Sub(last), ttl)
	}
}

// consumerHosts returns the server of each consumer of stream.
func consumerHosts(ctx context.Context, js jetstream.JetStream, stream string) []string {
	ictx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	s, err := js.Stream(ictx, stream)
	if err != nil {
		return nil
	}
	var hosts []string
	for ci := range s.ListConsumers(ictx).Info() {
		if ci.Cluster != nil && ci.Cluster.Leader != "" {
			hosts = append(hosts, ci.Cluster.Leader)
		}
	}
	return hosts
}

// TestFenceBucketMadeAgain: the lease bucket is deleted and made again (an
// operator's rebuild), so the key's revisions start over, lower than the
// agent saw: once fenced by the old lease's lapse, the agent takes the new
// lease; it does not wait for the old revision numbers to come back.
func TestFenceBucketMadeAgain(t *testing.T) {
	const ttl = 4 * time.Second
	s := startServer(t, t.TempDir(), 0)
	url := s.ClientURL()
	kv := leaseBucket(t, url, ttl)
	for range 20 { // revisions well above what the new bucket will reach
		renew(t, kv, "node1", ttl)
	}
	old := renewer(t, kv, "node1", ttl) // an agent slow to start still finds a fresh one
	ta := startAgent(t, url, withNode)
	runWhenHeld(t, ta.client, sh("web", "a", "a", "exec sleep 1000"))
	old.Stop()

	js, err := jetstream.New(connect(t, url))
	if err != nil {
		t.Fatal(err)
	}
	if err := js.DeleteKeyValue(context.Background(), lease.Bucket); err != nil {
		t.Fatal(err)
	}
	wantNotServing(t, ta.client) // fenced: the lease it held lapsed
	kv = leaseBucket(t, url, ttl)
	renewer(t, kv, "node1", ttl)
	runWhenHeld(t, ta.client, sh("web", "b", "b", "exec sleep 1000"))
	wantLease(t, ta.client, guestagent.LeaseHeld)
}
