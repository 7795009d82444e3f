package failover

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/vmguard/vmguard/config"
	"github.com/vmguard/vmguard/events"
	"github.com/vmguard/vmguard/internal/invariant"
	"github.com/vmguard/vmguard/internal/natsd/natstest"
)

// TestTwoControllersRace runs two controllers that both decide (no leader
// election) on one log while the test plays the host managers: packages
// fail again and again, get reset, and a node's lease lapses. Each
// decision is appended with the expected-sequence check, so from the whole
// log: no package was ever placed twice for one epoch, epochs go up by one,
// a node is lost once, and both controllers tried (the loser of each race
// got a conflict).
func TestTwoControllersRace(t *testing.T) {
	env := newEnv(t)
	nodes := []string{"node1", "node2", "node3"}
	const ttl = 2 * time.Second
	leases := env.holdLeases(ttl, nodes...)
	c := testCluster()
	c.NodeTimeout = config.Duration(ttl)
	const npkg = 8
	for i := range npkg {
		p := testPkg(fmt.Sprintf("p%d", i), "node1", "node2", "node3")
		if i%2 == 1 {
			p.FailoverPolicy = config.MinPackageNode
		}
		c.Packages = append(c.Packages, p)
	}
	env.config(c)
	for _, n := range nodes {
		env.add(n, events.NodeJoined{})
	}
	fast := Config{NoElection: true, CheckInterval: 20 * time.Millisecond, ReconcileInterval: 100 * time.Millisecond, NoSnapshot: true}
	a, b := env.start("a", fast), env.start("b", fast)

	// Each package: run where placed, fail, until it failed on every node,
	// then an operator reset; six failures per package, all packages at once.
	const failures = 6
	var wg sync.WaitGroup
	errs := make(chan error, npkg)
	for i := range npkg {
		wg.Add(1)
		go func() {
			defer wg.Done()
			pkg := fmt.Sprintf("p%d", i)
			var epoch uint64
			since := 0 // failures since the last reset
			for f := 0; ; f++ {
				d, _, err := waitPlacedErr(env, pkg, epoch, 10*time.Second)
				if err != nil {
					errs <- err
					return
				}
				epoch = d.Epoch
				env.add(pkg, events.PackageStarting{Node: d.Node, Epoch: epoch})
				env.add(pkg, events.PackageStarted{Node: d.Node, Epoch: epoch})
				if f == failures {
					return
				}
				env.add(pkg, events.PackageFailed{Node: d.Node, Epoch: epoch, Reason: "service_failed", Service: "app"})
				if since++; since == len(nodes) {
					since = 0
					env.add(pkg, events.PackageReset{By: "op", Reason: "test"})
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}

	// node2 stops renewing: both controllers see its lease gone.
	leases.stop("node2")
	natstest.WaitFor(t, 3*ttl, "node2 lost and its packages placed elsewhere", func() bool {
		if _, ok := env.last(events.NodeSubject("node2", "lost")); !ok {
			return false
		}
		for i := range npkg {
			d, _, _ := env.lastPlaced(fmt.Sprintf("p%d", i))
			if d.Node == "node2" {
				return false
			}
		}
		return true
	})
	// Give both controllers time to try anything else they would.
	settle(t, env, a, b)

	evs := env.all()
	placedBy := map[string][]uint64{}
	var lost, decided int
	for _, e := range evs {
		switch d := e.Data.(type) {
		case events.PackagePlaced:
			placedBy[e.Subject] = append(placedBy[e.Subject], d.Epoch)
			decided++
		case events.NodeLost:
			if e.Subject != "node2" {
				t.Errorf("seq %d: %s lost, though its lease is renewed", e.Seq, e.Subject)
			}
			lost++
			decided++
		}
	}
	for i := range npkg {
		pkg := fmt.Sprintf("p%d", i)
		epochs := placedBy[pkg]
		for j, ep := range epochs {
			if ep != uint64(j+1) {
				t.Fatalf("%s placements by epoch, in log order: %v; want 1, 2, 3, ... each once", pkg, epochs)
			}
		}
		if len(epochs) < failures+1 {
			t.Errorf("%s: %d placements, want at least %d", pkg, len(epochs), failures+1)
		}
	}
	if lost != 1 {
		t.Errorf("node2 lost %d times, want once", lost)
	}
	if problems := invariant.Check(evs); len(problems) > 0 {
		t.Errorf("invariant: %v", problems)
	}
	sa, sb := a.Stats(), b.Stats()
	t.Logf("controller a: %d decisions, %d conflicts; b: %d decisions, %d conflicts", sa.Decisions, sa.Conflicts, sb.Decisions, sb.Conflicts)
	if sa.Decisions+sa.Conflicts == 0 || sb.Decisions+sb.Conflicts == 0 {
		t.Errorf("each controller should have tried to decide")
	}
	if sa.Conflicts+sb.Conflicts == 0 {
		t.Errorf("no conflicts: the controllers never raced")
	}
	if got := sa.Decisions + sb.Decisions; got != uint64(decided) {
		t.Errorf("controllers appended %d decisions, the log holds %d placements and node.lost", got, decided)
	}
}

// waitPlacedErr is waitPlaced for a goroutine other than the test's.
func waitPlacedErr(env *testEnv, pkg string, after uint64, within time.Duration) (events.PackagePlaced, events.Event, error) {
	deadline := time.Now().Add(within)
	for {
		e, ok, err := env.log.Last(env.ctx, events.PackageSubject(pkg, "package", "placed"))
		if err != nil {
			return events.PackagePlaced{}, e, err
		}
		if ok {
			if d := e.Data.(events.PackagePlaced); d.Epoch > after {
				return d, e, nil
			}
		}
		if time.Now().After(deadline) {
			return events.PackagePlaced{}, e, fmt.Errorf("timed out after %s waiting for %s placed with an epoch above %d", within, pkg, after)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// settle waits until every runner has applied and answered the whole log
// and the log stopped growing meanwhile: each decision a runner makes in
// answer to an event is appended before its Stats.Seq reaches that event,
// so once all of them reached the log's last sequence and it is still the
// last, nothing in the log is waiting for an answer. Negative checks after
// it test something on a machine of any speed. (Decisions on a timer, a
// reconcile round or a lease check, are not covered: tests of those wait
// for the time they need.)
func settle(t *testing.T, env *testEnv, rs ...*runningRunner) {
	t.Helper()
	natstest.WaitFor(t, 30*time.Second, "controllers to answer the whole log", func() bool {
		last := env.lastSeq()
		for _, r := range rs {
			if r.Stats().Seq < last {
				return false
			}
		}
		return env.lastSeq() == last
	})
}

// TestLeaderElection runs two controllers with the election: only the
// leader decides; when it stops cleanly the other takes over at once, and
// when it dies without releasing (its connection closed) the other takes
// over once the leader key expired, within the TTL of its last renewal.
func TestLeaderElection(t *testing.T) {
	env := newEnv(t)
	const ttl = time.Second
	env.holdLeases(5*time.Second, "node1", "node2", "node3")
	c := testCluster(testPkg("web", "node1", "node2", "node3"))
	cfg := Config{ElectionTTL: ttl, CheckInterval: 50 * time.Millisecond, NoSnapshot: true}
	a, b := env.start("a", cfg), env.start("b", cfg)
	leader := func() *runningRunner {
		t.Helper()
		var l *runningRunner
		natstest.WaitFor(t, 3*ttl, "one leader", func() bool {
			switch {
			case a.Leader() && b.Leader():
				t.Fatal("two leaders at once")
			case a.Leader():
				l = a
			case b.Leader():
				l = b
			}
			return l != nil
		})
		return l
	}
	first := leader()
	other := b
	if first == b {
		other = a
	}
	if v, ok, err := CurrentLeader(env.ctx, env.js); err != nil || !ok || v.ID != first.cfg.ID {
		t.Fatalf("leader key = %+v, %v, %v; want %s", v, ok, err, first.cfg.ID)
	}

	env.config(c)
	for _, n := range c.Nodes {
		env.add(n, events.NodeJoined{})
	}
	d, _ := env.waitPlaced("web", 0, 30*time.Second)
	env.add("web", events.PackageStarted{Node: d.Node, Epoch: d.Epoch})
	env.add("web", events.PackageFailed{Node: d.Node, Epoch: d.Epoch, Reason: "service_failed"})
	d, _ = env.waitPlaced("web", d.Epoch, 5*time.Second)
	if d.Node != "node2" || d.Reason != ReasonFailover {
		t.Fatalf("after the failure: %+v", d)
	}
	settle(t, env, a, b)
	if s := other.Stats(); s.Decisions != 0 || s.Conflicts != 0 || s.Leader {
		t.Fatalf("standby %s decided: %+v", other.cfg.ID, s)
	}
	if s := first.Stats(); s.Decisions != 2 {
		t.Fatalf("leader %s: %+v, want 2 decisions", first.cfg.ID, s)
	}

	// A clean stop hands over (TestCleanStopHandsOver shows that it is the
	// release, not the key's expiry, that the standby answers).
	stopped := time.Now()
	first.stop(t)
	natstest.WaitFor(t, 10*ttl, "the standby to lead after a clean stop", other.Leader)
	t.Logf("takeover after a clean stop: %s", time.Since(stopped).Round(time.Millisecond))
	env.add("web", events.PackageStarted{Node: d.Node, Epoch: d.Epoch})
	env.add("web", events.PackageFailed{Node: d.Node, Epoch: d.Epoch, Reason: "service_failed"})
	d, _ = env.waitPlaced("web", d.Epoch, 5*time.Second)
	if d.Node != "node3" {
		t.Fatalf("after the second failure: %+v", d)
	}
	natstest.WaitFor(t, 5*time.Second, "the new leader to count its decision", func() bool { return other.Stats().Decisions == 1 })

	// A leader that dies (its connection cut) keeps the key until it
	// expires; a third controller takes over then, not before: in the key's
	// history the third's key follows the dead leader's last renewal with
	// no release between, and was written a TTL or more after it (server
	// times).
	third := env.start("c", cfg)
	<-third.CaughtUp()
	w, err := electionKV(t, env).Watch(env.ctx, LeaderKey, jetstream.IncludeHistory())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = w.Stop() }()
	other.cfg.Conn.Close()
	natstest.WaitFor(t, 5*ttl, "the old leader to stop deciding", func() bool { return !other.Leader() })
	natstest.WaitFor(t, 10*ttl, "the third controller to lead after the leader died", third.Leader)
	hist := keyHistoryUntil(t, w, third, 10*ttl)
	n := len(hist)
	if n < 2 || !other.el.ours(hist[n-2].Value()) || hist[n-2].Operation() != jetstream.KeyValuePut {
		t.Fatalf("the third's key does not follow the dead leader's; history %s", describeKeyHistory(other, third, hist))
	}
	if last, took := hist[n-2].Created(), hist[n-1].Created(); took.Before(last.Add(ttl)) {
		t.Fatalf("the third's key written at %s, before the dead leader's key expired (%s + %s)", took, last, ttl)
	}
	env.add("web", events.PackageStarted{Node: d.Node, Epoch: d.Epoch})
	env.add("web", events.PackageFailed{Node: d.Node, Epoch: d.Epoch, Reason: "service_failed"})
	// web has now failed on every node: nothing to place until a reset.
	natstest.WaitFor(t, 5*time.Second, "the third controller to read the failure", func() bool {
		return third.Stats().Seq >= env.lastSeq()
	})
	env.add("web", events.PackageReset{By: "op"})
	d, _ = env.waitPlaced("web", d.Epoch, 5*time.Second)
	if d.Node != "node1" {
		t.Fatalf("after the reset: %+v", d)
	}
	natstest.WaitFor(t, 5*time.Second, "the third controller to count its decision", func() bool { return third.Stats().Decisions == 1 })
}

// TestCleanStopHandsOver: a leader that stops cleanly deletes its key and
// the standby takes over from that delete, not from the key's expiry. In
// the election bucket's history the standby's key comes right after the
// old leader's delete, and it was written before the old leader's last key
// would have expired. The TTL is long so that a loaded machine cannot make
// an expiry look like a hand-over; all times are the server's.
func TestCleanStopHandsOver(t *testing.T) {
	env := newEnv(t)
	const ttl = 10 * time.Second
	a, b := env.leaderAndStandby(ttl, ttl)

	w, err := electionKV(t, env).Watch(env.ctx, LeaderKey, jetstream.IncludeHistory())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = w.Stop() }()
	if b.Leader() || b.Stats().Leader {
		t.Fatal("the standby leads while a holds the key")
	}

	a.stop(t)
	// The key's history from before the stop until b's first key.
	hist := keyHistoryUntil(t, w, b, 3*ttl)
	// ... a's key, then (a's delete,) b's key. b can create the key before
	// a's would expire only if a deleted it: so b's key written before that
	// expiry proves the hand-over came from the release (with release() a
	// no-op, b waits for the expiry and this fails). The delete marker
	// itself may be missing from what the watch saw: the bucket keeps one
	// entry per key, and b's key can replace the marker before the watch
	// delivers it.
	n := len(hist)
	if n < 2 || hist[n-1].Operation() != jetstream.KeyValuePut || a.el.ours(hist[n-1].Value()) {
		t.Fatalf("the history does not end with b's key; history %s", describeKeyHistory(a, b, hist))
	}
	bKey := hist[n-1]
	var aKey, released jetstream.KeyValueEntry
	for _, e := range hist[:n-1] {
		switch {
		case e.Operation() == jetstream.KeyValuePut && a.el.ours(e.Value()):
			aKey, released = e, nil
		case e.Operation() != jetstream.KeyValuePut && aKey != nil:
			released = e
		case e.Operation() == jetstream.KeyValuePut:
			t.Fatalf("a key of neither a nor b between them; history %s", describeKeyHistory(a, b, hist))
		}
	}
	if aKey == nil {
		t.Fatalf("no key of a before b's; history %s", describeKeyHistory(a, b, hist))
	}
	if expires := aKey.Created().Add(ttl); !bKey.Created().Before(expires) {
		t.Fatalf("b's key written at %s, not before a's key expired (%s): no hand-over", bKey.Created(), expires)
	}
	if released != nil {
		t.Logf("hand-over: released %s after a's last renewal, b's key %s after the release (ttl %s)",
			released.Created().Sub(aKey.Created()).Round(time.Millisecond), bKey.Created().Sub(released.Created()).Round(time.Millisecond), ttl)
	} else {
		t.Logf("hand-over: b's key %s after a's last renewal (ttl %s); the delete marker was replaced before the watch saw it",
			bKey.Created().Sub(aKey.Created()).Round(time.Millisecond), ttl)
	}
	natstest.WaitFor(t, ttl, "b to lead", b.Leader)
}

// electionKV opens the election bucket.
func electionKV(t *testing.T, env *testEnv) jetstream.KeyValue {
	t.Helper()
	kv, err := env.js.KeyValue(env.ctx, ElectionBucket)
	if err != nil {
		t.Fatal(err)
	}
	return kv
}

// keyHistoryUntil collects the leader key's entries from w until one names
// r, failing the test if none does within d.
func keyHistoryUntil(t *testing.T, w jetstream.KeyWatcher, r *runningRunner, d time.Duration) []jetstream.KeyValueEntry {
	t.Helper()
	var hist []jetstream.KeyValueEntry
	deadline := time.After(d)
	for len(hist) == 0 || hist[len(hist)-1].Operation() != jetstream.KeyValuePut || !r.el.ours(hist[len(hist)-1].Value()) {
		select {
		case e := <-w.Updates():
			if e != nil { // nil marks the end of the initial values
				hist = append(hist, e)
			}
		case <-deadline:
			t.Fatalf("%s wrote no leader key within %s; history %v", r.cfg.ID, d, len(hist))
		}
	}
	return hist
}

// describeKeyHistory renders election key entries as "rev op holder".
func describeKeyHistory(a, b *runningRunner, hist []jetstream.KeyValueEntry) string {
	var s []string
	for _, e := range hist {
		who := "?"
		switch {
		case e.Operation() != jetstream.KeyValuePut:
			who = "-"
		case a.el.ours(e.Value()):
			who = "a"
		case b.el.ours(e.Value()):
			who = "b"
		}
		s = append(s, fmt.Sprintf("%d %s %s", e.Revision(), e.Operation(), who))
	}
	return "[" + strings.Join(s, ", ") + "]"
}

// TestNodeLostOnlyAfterLeaseExpiry: a node whose lease keeps being renewed
// is never lost; once its host stops renewing, node.lost appears after the
// TTL has passed since the last renewal, not before, and its package is
// placed elsewhere because of it.
func TestNodeLostOnlyAfterLeaseExpiry(t *testing.T) {
	env := newEnv(t)
	const ttl = time.Second
	leases, c := env.leasedWeb(ttl, []string{"node1", "node2"}, "node1", "node2")
	r := env.start("a", Config{ElectionTTL: ttl, CheckInterval: 50 * time.Millisecond, NoSnapshot: true})
	d, _ := env.waitPlaced("web", 0, 30*time.Second)
	if d.Node != "node1" {
		t.Fatalf("placed %+v", d)
	}
	env.add("web", events.PackageStarted{Node: "node1", Epoch: 1})

	// For 2.5 TTLs of renewals, no node is lost (the controller checks
	// every 50ms all along).
	natstest.WaitFor(t, 5*time.Second, "the controller to lead", r.Leader)
	deadline := time.Now().Add(ttl * 5 / 2)
	for time.Now().Before(deadline) {
		for _, n := range c.Nodes {
			if e, ok := env.last(events.NodeSubject(n, "lost")); ok {
				t.Fatalf("%s lost while its lease is renewed: %+v", n, e)
			}
		}
		time.Sleep(50 * time.Millisecond)
	}

	last := leases.stop("node1")
	lost := env.waitLost("node1", 3*ttl)
	d1 := lost.Data.(events.NodeLost)
	t.Logf("last renewal %s, lost at %s (+%s), ttl %s", last.Format(time.StampMilli), lost.Time.Format(time.StampMilli), lost.Time.Sub(last).Round(time.Millisecond), ttl)
	if lost.Time.Before(last.Add(ttl)) {
		t.Fatalf("node1 lost at %s, before its lease expired (last renewal %s + %s)", lost.Time, last, ttl)
	}
	if !d1.LastSeen.Equal(last) || d1.Reason != ReasonLeaseExpired || lost.Source != Source {
		t.Errorf("node.lost = %+v from %s; want last_seen %s, reason %q", d1, lost.Source, last, ReasonLeaseExpired)
	}
	d, e := env.waitPlaced("web", 1, 5*time.Second)
	if d.Node != "node2" || d.Reason != ReasonNodeLost || e.CauseID != lost.ID {
		t.Fatalf("after node1 lost: %+v cause %s, want node2 (node_lost) caused by %s", d, e.CauseID, lost.ID)
	}
	if _, ok := env.last(events.NodeSubject("node2", "lost")); ok {
		t.Fatal("node2 lost, though its lease is renewed")
	}
	natstest.WaitFor(t, 5*time.Second, "the controller to count node1 lost", func() bool { return r.Stats().NodesLost == 1 })
}

// TestHaltedNodeLostWhenLeaseLapses (sim finding halt_on_halted_node): an
// operator halts node1, where web has nowhere else to go, so the
// controller halts web there; node1's host manager then dies before the
// halt ends. The controller records node.lost for the halted node once its
// lease expires, which ends the halt (web halted, node lost), and node1
// stays halted by the operator.
func TestHaltedNodeLostWhenLeaseLapses(t *testing.T) {
	env := newEnv(t)
	const ttl = time.Second
	leases, _ := env.leasedWeb(ttl, []string{"node1"}, "node1")
	r := env.start("a", Config{ElectionTTL: ttl, CheckInterval: 50 * time.Millisecond, NoSnapshot: true})
	d, _ := env.waitPlaced("web", 0, 30*time.Second)
	env.add("web", events.PackageStarted{Node: "node1", Epoch: d.Epoch})
	env.add("node1", events.NodeHalted{Reason: "maintenance", By: "op"})
	natstest.WaitFor(t, 10*time.Second, "web halting on the halted node", func() bool {
		_, ok := env.last(events.PackageSubject("web", "package", "halting"))
		return ok
	})
	leases.stop("node1")
	lost := env.waitLost("node1", 10*ttl) // node1 is halted by the operator
	if lost.Source != Source {
		t.Errorf("node.lost from %s", lost.Source)
	}
	s := &State{}
	for _, e := range env.all() {
		s.Apply(e)
	}
	if p := s.Package("web"); p == nil || p.Phase != PhaseHalted || !s.Node("node1").HaltedByOperator() {
		t.Errorf("after the loss: web %+v, node1 %+v; want web halted, node1 still halted by the operator", p, s.Node("node1"))
	}
	natstest.WaitFor(t, 5*time.Second, "the controller to count node1 lost", func() bool { return r.Stats().NodesLost == 1 })
}

// TestNewControllerJudgesFromItsOwnProbes: a controller that starts after
// a node's lease already expired has not seen the lease store take writes
// for node_timeout yet (lease.Judge): it records node.lost only once its
// own probes have gone through for node_timeout, never at its first check,
// and then it does.
func TestNewControllerJudgesFromItsOwnProbes(t *testing.T) {
	env := newEnv(t)
	const ttl = time.Second
	leases, _ := env.leasedWeb(ttl, []string{"node1", "node2"}, "node2", "node1")
	last := leases.stop("node1")
	natstest.WaitFor(t, 10*ttl, "node1's lease to expire", func() bool {
		_, err := leases.kv.Get(env.ctx, "node1")
		return errors.Is(err, jetstream.ErrKeyNotFound)
	})
	started := time.Now()
	r := env.start("a", Config{ElectionTTL: ttl, CheckInterval: 50 * time.Millisecond, NoSnapshot: true})
	lost := env.waitLost("node1", 10*ttl)
	t.Logf("lease expired %s after the last renewal; controller started %s later; node.lost %s after its start",
		started.Sub(last).Round(time.Millisecond), started.Sub(last.Add(ttl)).Round(time.Millisecond), lost.Time.Sub(started).Round(time.Millisecond))
	if lost.Time.Sub(started) < ttl {
		t.Errorf("node1 lost %s after the controller started, before its probes had gone through for node_timeout %s", lost.Time.Sub(started), ttl)
	}
	if _, ok := env.last(events.NodeSubject("node2", "lost")); ok {
		t.Error("node2 lost, though its lease is renewed")
	}
	natstest.WaitFor(t, 5*time.Second, "the controller to count node1 lost", func() bool { return r.Stats().NodesLost == 1 })
}

// TestLeaderTakesBackItsKey: a renewal that fails while the key still
// names the leader (here the key is rewritten under it, as when a renewal's
// ack is lost) costs the leader its lead only for a moment: it takes its
// own key back at once instead of waiting for it to expire, and the
// standby does not take over.
func TestLeaderTakesBackItsKey(t *testing.T) {
	env := newEnv(t)
	const ttl = 2 * time.Second
	a, b := env.leaderAndStandby(ttl, 5*ttl)
	kv := electionKV(t, env)
	w, err := kv.Watch(env.ctx, LeaderKey, jetstream.IncludeHistory())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = w.Stop() }()
	e, err := kv.Get(env.ctx, LeaderKey)
	if err != nil {
		t.Fatal(err)
	}
	putRev, err := kv.Put(env.ctx, LeaderKey, e.Value())
	if err != nil {
		t.Fatal(err)
	}
	// a's next renewal (within ttl/3) fails on the revision; it takes the
	// key back before the rewritten key would expire, which the key's
	// history shows by the server's times. The wait only bounds a broken
	// run.
	natstest.WaitFor(t, 10*ttl, "a to lose and take back its key", func() bool {
		cur, err := kv.Get(env.ctx, LeaderKey)
		return err == nil && cur.Revision() > putRev && a.Leader()
	})
	var put, back jetstream.KeyValueEntry
	deadline := time.After(10 * ttl)
	for back == nil {
		select {
		case en := <-w.Updates():
			switch {
			case en == nil: // the end of the initial values
			case en.Revision() == putRev:
				put = en
			case put != nil && en.Revision() > putRev:
				back = en
			}
		case <-deadline:
			t.Fatalf("the key's history has no entry after the rewrite (revision %d)", putRev)
		}
	}
	if back.Operation() != jetstream.KeyValuePut || !a.el.ours(back.Value()) {
		t.Fatalf("after the rewrite the key went to %s, not back to a", describeKeyHistory(a, b, []jetstream.KeyValueEntry{back}))
	}
	if !back.Created().Before(put.Created().Add(ttl)) {
		t.Errorf("a took its key back at %s, not before the rewritten key expired (%s + %s)", back.Created(), put.Created(), ttl)
	}
	if b.Leader() || b.Stats().Leader {
		t.Fatal("the standby leads")
	}
	if v, ok, err := CurrentLeader(env.ctx, env.js); err != nil || !ok || v.ID != "a" || v.Run != a.run {
		t.Fatalf("leader key %+v %v %v", v, ok, err)
	}
}

// TestLeaderOnALongLog: a controller that starts on a long log leads only
// from a state that caught up with it: on a log where everything is
// placed and running it decides nothing and meets no conflict (a decision
// from a state halfway through the log would have placed packages again).
func TestLeaderOnALongLog(t *testing.T) {
	env := newEnv(t)
	env.holdLeases(5*time.Second, "node1", "node2", "node3")
	env.appendAll(benchLog(3000, 10))
	r := env.start("a", Config{ElectionTTL: time.Second, CheckInterval: 50 * time.Millisecond, NoSnapshot: true})
	// Catching up with 3000 events under -race took 1-6 s on a loaded
	// two-core machine; the bound is not what this test is about.
	natstest.WaitFor(t, 30*time.Second, "a to lead", r.Leader)
	settle(t, env, r)
	if s := r.Stats(); s.Decisions != 0 || s.Conflicts != 0 {
		t.Fatalf("%+v: want nothing decided or tried", s)
	}
	// Then it answers what happens next.
	d, _, _ := env.lastPlaced("p3")
	env.add("p3", events.PackageFailed{Node: d.Node, Epoch: d.Epoch, Reason: "service_failed"})
	if nd, _ := env.waitPlaced("p3", d.Epoch, 5*time.Second); nd.Reason != ReasonFailover || nd.Node == d.Node {
		t.Fatalf("after the failure: %+v", nd)
	}
}

// TestFirstPlacementWaitsForPreferredNode: when the cluster starts, a
// package is not placed on its second node just because that node's host
// joined a moment before the first one's: during the start grace the
// controller waits for a node of higher priority that has not joined yet.
// If it never joins, the package starts on the next node after the grace.
func TestFirstPlacementWaitsForPreferredNode(t *testing.T) {
	env := newEnv(t)
	const grace = 2 * time.Second
	env.holdLeases(5*time.Second, "node1", "node2", "node3")
	c := testCluster(testPkg("web", "node1", "node2"), testPkg("db", "node3", "node2"))
	env.config(c)
	started := time.Now()
	r := env.start("a", Config{ElectionTTL: time.Second, StartGrace: grace, ReconcileInterval: 100 * time.Millisecond, NoSnapshot: true})
	natstest.WaitFor(t, 5*time.Second, "a to lead", r.Leader)
	env.add("node2", events.NodeJoined{})
	settle(t, env, r)
	if _, _, ok := env.lastPlaced("web"); ok {
		t.Fatal("web placed on node2 while node1 may still join")
	}
	env.add("node1", events.NodeJoined{})
	if d, _ := env.waitPlaced("web", 0, 30*time.Second); d.Node != "node1" {
		t.Fatalf("web placed %+v, want node1", d)
	}
	// node3 never joins: db goes to node2 once the grace is over.
	d, e := env.waitPlaced("db", 0, 5*time.Second)
	if d.Node != "node2" || e.Time.Before(started.Add(grace)) {
		t.Fatalf("db placed %+v at %s, want node2 after the grace (%s from %s)", d, e.Time, grace, started)
	}
}
