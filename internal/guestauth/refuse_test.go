package guestauth_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/vmguard/vmguard/events"
	"github.com/vmguard/vmguard/guestagent"
	"github.com/vmguard/vmguard/internal/guestauth"
	"github.com/vmguard/vmguard/internal/lease"
	"github.com/vmguard/vmguard/internal/natsd/natstest"
)

// refusedWait bounds a JetStream request the server drops as a violation:
// no answer ever comes.
const refusedWait = 300 * time.Millisecond

// asyncErrors collects a connection's asynchronous errors (permission
// violations).
type asyncErrors struct {
	mu   sync.Mutex
	errs []string
}

func (a *asyncErrors) handler(_ *nats.Conn, _ *nats.Subscription, err error) {
	a.mu.Lock()
	a.errs = append(a.errs, err.Error())
	a.mu.Unlock()
}

// has reports whether an error mentions s.
func (a *asyncErrors) has(s string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, e := range a.errs {
		if strings.Contains(e, s) {
			return true
		}
	}
	return false
}

// guestConn connects as guest webvm (packages web, node node1) next to guest
// dbvm (package db, node node2), with its async errors collected.
func guestSetup(t *testing.T) (*testServer, *nats.Conn, *asyncErrors) {
	t.Helper()
	web := guestUser(t, guestauth.Guest{Name: "webvm", Packages: []string{"web"}, Nodes: []string{"node1"}})
	db := guestUser(t, guestauth.Guest{Name: "dbvm", Packages: []string{"db"}, Nodes: []string{"node2"}})
	ts := startServer(t, web, db)
	ts.keepRenewing(t, "node1")
	ts.keepRenewing(t, "node2")
	errs := &asyncErrors{}
	nc := connect(t, ts.Server, web.Name, web.Password, nats.ErrorHandler(errs.handler), nats.PermissionErrOnSubscribe(true))
	return ts, nc, errs
}

// TestGuestCannotSpeakForOthers appends, as guest webvm, every kind of
// event it must not write; each is refused by the server (no ack) and
// nothing lands in the log, while its own process events are stored.
func TestGuestCannotSpeakForOthers(t *testing.T) {
	ts, nc, errs := guestSetup(t)
	ctx := context.Background()
	octx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	gl, err := events.Open(octx, nc, events.WithoutCreate())
	if err != nil {
		t.Fatalf("open the log as a guest: %v", err)
	}
	src := guestagent.Source("webvm")
	exited := events.ProcessExited{Guest: "webvm", Service: "httpd", PID: 1, ExitCode: 0, RequestID: "r", Epoch: 1}

	// Its own package's process events are accepted.
	for _, e := range []events.Event{
		events.New(src, "web", events.ProcessStarted{Guest: "webvm", Service: "httpd", PID: 1, RequestID: "r", Epoch: 1}),
		events.New(src, "web", exited),
	} {
		actx, cancel := context.WithTimeout(ctx, 5*time.Second)
		if _, err := gl.Append(actx, e); err != nil {
			t.Fatalf("append %s for its own package: %v", e.Type(), err)
		}
		cancel()
	}
	before := ts.lastSeq(t)

	cfg, _ := json.Marshal(map[string]any{"cluster": "evil"})
	refused := map[string]events.Event{
		"process.exited of another package": events.New(src, "db", exited),
		"process.started of another package": events.New(src, "db",
			events.ProcessStarted{Guest: "webvm", Service: "x", PID: 1, RequestID: "r", Epoch: 1}),
		"node.lost":              events.New(src, "node2", events.NodeLost{Reason: "lease expired"}),
		"node.joined":            events.New(src, "node1", events.NodeJoined{Version: "1"}),
		"cluster.config_applied": events.New(src, "", events.ConfigApplied{Config: cfg, Hash: "x"}),
		"package.placed of its own package": events.New(src, "web",
			events.PackagePlaced{Node: "node1", Epoch: 9, Reason: "operator_move"}),
		"package.failed of its own package": events.New(src, "web",
			events.PackageFailed{Node: "node1", Epoch: 1, Reason: "x"}),
		"service.restarting of its own package": events.New(src, "web",
			events.ServiceRestarting{Service: "httpd", Node: "node1", Epoch: 1, Attempt: 1, RestartsLeft: 1}),
		"guest.lost of its own package": events.New(src, "web",
			events.GuestLost{Guest: "webvm", Node: "node1", Epoch: 1}),
	}
	// Each refused append waits out refusedWait: they run at once.
	var wg sync.WaitGroup
	for what, e := range refused {
		wg.Go(func() {
			actx, cancel := context.WithTimeout(ctx, refusedWait)
			_, err := gl.Append(actx, e)
			cancel()
			if err == nil {
				t.Errorf("%s: appended", what)
				return
			}
			if errors.Is(err, events.ErrInvalid) {
				t.Errorf("%s: the test's event is invalid: %v", what, err)
			}
		})
	}
	wg.Wait()
	for what, e := range refused {
		subj, _ := events.SubjectOf(e)
		natstest.WaitFor(t, 5*time.Second, "violation for "+what, func() bool { return errs.has(subj) })
	}
	if after := ts.lastSeq(t); after != before {
		t.Errorf("log grew from %d to %d with refused events", before, after)
	}
}

// TestGuestCannotFakeHeartbeats publishes a heartbeat for another guest;
// the server drops it.
func TestGuestCannotFakeHeartbeats(t *testing.T) {
	ts, nc, errs := guestSetup(t)
	other, err := ts.admin.SubscribeSync(guestagent.HeartbeatSubject("dbvm"))
	if err != nil {
		t.Fatal(err)
	}
	own, err := ts.admin.SubscribeSync(guestagent.HeartbeatSubject("webvm"))
	if err != nil {
		t.Fatal(err)
	}
	if err := ts.admin.Flush(); err != nil {
		t.Fatal(err)
	}
	beat := []byte(`{"guest":"dbvm","running":1,"version":"1","time":"2030-01-01T00:00:00Z"}`)
	if err := nc.Publish(guestagent.HeartbeatSubject("dbvm"), beat); err != nil {
		t.Fatal(err)
	}
	// The server handles one connection's messages in order: once the
	// heartbeat on its own subject arrived, the forged one would have too.
	if err := nc.Publish(guestagent.HeartbeatSubject("webvm"), beat); err != nil {
		t.Fatal(err)
	}
	if _, err := own.NextMsg(5 * time.Second); err != nil {
		t.Fatalf("own heartbeat: %v", err)
	}
	if m, err := other.NextMsg(time.Millisecond); err == nil {
		t.Errorf("forged heartbeat for dbvm delivered: %s", m.Data)
	}
	natstest.WaitFor(t, 5*time.Second, "violation", func() bool { return errs.has(guestagent.HeartbeatSubject("dbvm")) })
}

// TestGuestCannotTouchStreamsOrOtherLeases tries, as guest webvm, what only
// hosts and operators may do with the log and the lease bucket.
func TestGuestCannotTouchStreamsOrOtherLeases(t *testing.T) {
	ts, nc, errs := guestSetup(t)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	// Each refused request waits out refusedWait: they run at once.
	var wg sync.WaitGroup
	try := func(what string, op func(ctx context.Context) error) {
		wg.Go(func() {
			rctx, cancel := context.WithTimeout(ctx, refusedWait)
			defer cancel()
			if err := op(rctx); err == nil {
				t.Errorf("%s: allowed", what)
			}
		})
	}
	try("delete the log", func(ctx context.Context) error { return js.DeleteStream(ctx, events.StreamName) })
	try("delete the lease bucket", func(ctx context.Context) error { return js.DeleteKeyValue(ctx, lease.Bucket) })
	try("purge the log", func(ctx context.Context) error {
		_, err := nc.RequestWithContext(ctx, "$JS.API.STREAM.PURGE."+events.StreamName, nil)
		return err
	})
	try("update the log", func(ctx context.Context) error {
		_, err := js.UpdateStream(ctx, events.StreamConfig(1))
		return err
	})
	try("read the log", func(ctx context.Context) error {
		_, err := js.CreateConsumer(ctx, events.StreamName, jetstream.ConsumerConfig{AckPolicy: jetstream.AckNonePolicy})
		return err
	})
	try("get an event", func(ctx context.Context) error {
		_, err := nc.RequestWithContext(ctx, "$JS.API.DIRECT.GET."+events.StreamName, []byte(`{"seq":1}`))
		return err
	})
	try("list streams", func(ctx context.Context) error {
		_, err := nc.RequestWithContext(ctx, "$JS.API.STREAM.NAMES", nil)
		return err
	})

	// The lease bucket opens (the agent needs its info), but no key can be
	// written or deleted, its own node's included: a guest cannot keep a
	// node alive. Only its own node's key can be read.
	kv, err := lease.Open(ctx, js)
	if err != nil {
		t.Fatalf("open the lease bucket as a guest: %v", err)
	}
	v := lease.Value{Node: "node2", Holder: "evil", Renewed: time.Now(), TTLMS: 1000}.Encode()
	for _, node := range []string{"node1", "node2"} {
		try("put lease "+node, func(ctx context.Context) error { _, err := kv.Put(ctx, node, v); return err })
		try("delete lease "+node, func(ctx context.Context) error { return kv.Delete(ctx, node) })
	}
	try("get lease node2", func(ctx context.Context) error { _, err := kv.Get(ctx, "node2"); return err })
	try("watch another node's lease", func(ctx context.Context) error {
		w, err := kv.Watch(ctx, "node2")
		if err == nil {
			_ = w.Stop()
		}
		return err
	})
	try("watch every lease", func(ctx context.Context) error {
		w, err := kv.WatchAll(ctx)
		if err == nil {
			_ = w.Stop()
		}
		return err
	})
	// Its own node's key with another key as the consumer's filter: the
	// server holds the request to the filter in its subject.
	try("watch another node's lease through its own node's subject", func(ctx context.Context) error {
		req, _ := json.Marshal(map[string]any{"stream_name": "KV_" + lease.Bucket, "config": map[string]any{
			"name": "sneak", "deliver_subject": nc.NewInbox(), "filter_subject": guestauth.LeaseKeySubject("node2"),
			"deliver_policy": "last_per_subject", "ack_policy": "none"}})
		m, err := nc.RequestWithContext(ctx, "$JS.API.CONSUMER.CREATE.KV_"+lease.Bucket+".sneak."+guestauth.LeaseKeySubject("node1"), req)
		if err != nil {
			return err
		}
		var resp struct {
			Error *struct{ Description string } `json:"error"`
		}
		if err := json.Unmarshal(m.Data, &resp); err != nil {
			return err
		}
		if resp.Error != nil {
			return errors.New(resp.Error.Description)
		}
		return nil
	})
	wg.Wait()
	// Each was a permissions violation (not a slow answer).
	for _, subj := range []string{
		"$JS.API.STREAM.DELETE.VMGUARD", "$JS.API.STREAM.DELETE.KV_vmguard_leases",
		"$JS.API.STREAM.PURGE.VMGUARD", "$JS.API.STREAM.UPDATE.VMGUARD", "$JS.API.STREAM.NAMES",
		"$JS.API.CONSUMER.CREATE.VMGUARD", "$JS.API.DIRECT.GET.VMGUARD",
		"$KV.vmguard_leases.node1", "$KV.vmguard_leases.node2",
		"$JS.API.DIRECT.GET.KV_vmguard_leases.$KV.vmguard_leases.node2",
		"$JS.API.CONSUMER.CREATE.KV_vmguard_leases.",
	} {
		natstest.WaitFor(t, 5*time.Second, "violation for "+subj, func() bool {
			return errs.has(`Permissions Violation for Publish to "` + subj)
		})
	}

	// Its own node's lease can be watched, and read by direct get.
	wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if e, err := kv.Get(wctx, "node1"); err != nil || e.Key() != "node1" {
		t.Errorf("get its own node's lease: %v, %v", e, err)
	}
	w, err := kv.Watch(wctx, "node1")
	if err != nil {
		t.Fatalf("watch its own node's lease: %v", err)
	}
	select {
	case e := <-w.Updates():
		if e == nil || e.Key() != "node1" {
			t.Errorf("watch node1: %v", e)
		}
	case <-wctx.Done():
		t.Error("watch node1: nothing")
	}

	// Subscriptions that would read other guests' requests, the log or
	// other heartbeats are refused.
	for _, subj := range []string{
		guestagent.Subject("dbvm", "run"), "vmguard.agent.>", "vmguard.events.>", "vmguard.hb.guest.>",
		"$KV." + lease.Bucket + ".>", "$JS.EVENT.>", ">",
	} {
		sub, err := nc.SubscribeSync(subj)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := sub.NextMsg(5 * time.Second); !errors.Is(err, nats.ErrPermissionViolation) {
			t.Errorf("subscribe %s: %v, want a permissions violation", subj, err)
		}
	}

	// Nothing changed.
	if _, err := ts.log.LastSeq(ctx); err != nil {
		t.Errorf("the log: %v", err)
	}
	for _, node := range []string{"node1", "node2"} {
		e, err := ts.kv.Get(ctx, node)
		if err != nil {
			t.Errorf("lease %s: %v", node, err)
		} else if val, _ := lease.Decode(e.Value()); val.Holder != "test" {
			t.Errorf("lease %s: %+v", node, val)
		}
	}
	if !errs.has("Permissions Violation for Publish") {
		t.Error("no publish violation reported to the guest")
	}
}

// TestForgedBodyKeepsGuestSubject publishes, on guest webvm's own
// process.exited subject, a body that claims to be a package.placed of
// another package. The server checks subjects, not bodies: the message is
// stored, but under webvm's subject; the log's readers check that an event
// is stored where its type and subject say, and refuse it.
func TestForgedBodyKeepsGuestSubject(t *testing.T) {
	ts, nc, _ := guestSetup(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	forged := events.New(guestagent.Source("webvm"), "db", events.PackagePlaced{Node: "node1", Epoch: 7, Reason: "operator_move"})
	m, err := ts.log.Codec().Encode(forged)
	if err != nil {
		t.Fatal(err)
	}
	own := events.PackageSubject("web", "process", "exited")
	m.Subject = own
	ack, err := js.PublishMsg(ctx, m)
	if err != nil {
		t.Fatalf("publish on its own subject: %v", err)
	}
	st, err := ts.log.JetStream().Stream(ctx, events.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := st.GetMsg(ctx, ack.Sequence)
	if err != nil {
		t.Fatal(err)
	}
	if raw.Subject != own {
		t.Errorf("stored under %s, want %s", raw.Subject, own)
	}
	if _, err := ts.log.Get(ctx, ack.Sequence); !errors.Is(err, events.ErrInvalid) {
		t.Errorf("reading the forged placement: %v, want it refused", err)
	}
	before := ts.log.Skipped()
	if _, err := ts.log.Replay(ctx, events.ReadOptions{StartSeq: ack.Sequence}, func(e events.Event) error {
		t.Errorf("replay read the forged event: %s about %s", e.Type(), e.Subject)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if ts.log.Skipped() != before+1 {
		t.Errorf("skipped %d, want %d", ts.log.Skipped(), before+1)
	}
}
