package events_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/vmguard/vmguard/events"
	"github.com/vmguard/vmguard/events/eventstest"
	"github.com/vmguard/vmguard/internal/natsd"
)

func samplePayloads() map[string]events.Payload {
	t0 := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
	return map[string]events.Payload{
		events.TypeConfigApplied:           events.ConfigApplied{Config: json.RawMessage(`{"cluster":"demo"}`), Hash: "abc", File: "cluster.yaml", By: "alice"},
		events.TypeNodeJoined:              events.NodeJoined{Version: "0.1.0"},
		events.TypeNodeLost:                events.NodeLost{Reason: "lease expired", LastSeen: t0},
		events.TypeNodeHalted:              events.NodeHalted{Reason: "maintenance", By: "alice"},
		events.TypeNodeFenced:              events.NodeFenced{Reason: "lease not renewed", Since: t0},
		events.TypeNodeTakenOver:           events.NodeTakenOver{Holder: "alpha/4242/x", NewHolder: "alpha/4343/y", By: "alice", Reason: "hung host manager"},
		events.TypeNodeLeaseTaken:          events.NodeLeaseTaken{Holder: "alpha/4343/y", Version: "0.1.0"},
		events.TypeNodeDrained:             events.NodeDrained{Reason: "firmware", By: "alice"},
		events.TypeNodeResumed:             events.NodeResumed{Reason: "done", By: "alice"},
		events.TypeNodeResourceSet:         events.NodeResourceSet{Name: "sfm_disk", Status: events.ResourceUp, Value: "42", By: "monitor"},
		events.TypeNodeFrozen:              events.NodeFrozen{Until: t0.Add(time.Hour), Reason: "upgrade", By: "alice"},
		events.TypeNodeThawed:              events.NodeThawed{Reason: "expired"},
		events.TypePackagePlaced:           events.PackagePlaced{Node: "node1", Epoch: 3, Reason: "failover", PreviousNode: "node2", By: "failover"},
		events.TypePackageStarting:         events.PackageStarting{Node: "node1", Epoch: 3},
		events.TypePackageStarted:          events.PackageStarted{Node: "node1", Epoch: 3},
		events.TypePackageHalting:          events.PackageHalting{Node: "node1", Epoch: 3, Reason: "operator", By: "alice"},
		events.TypePackageHalted:           events.PackageHalted{Node: "node1", Epoch: 3, Reason: "operator"},
		events.TypePackageFailed:           events.PackageFailed{Node: "node1", Epoch: 3, Reason: "service failed", Service: "httpd"},
		events.TypePackageSwitchingChanged: events.PackageSwitchingChanged{Node: "node2", Enabled: false, Reason: "repair", By: "alice"},
		events.TypePackageReset:            events.PackageReset{Service: "httpd", Reason: "fixed", By: "alice"},
		events.TypePackageChecked:          events.PackageChecked{For: "db", Seq: 41},
		events.TypePlacementNoted:          events.PlacementNoted{Package: "web", Epoch: 3},
		events.TypeGuestStarted:            events.GuestStarted{Guest: "webvm", Node: "node1", Epoch: 3},
		events.TypeGuestLost:               events.GuestLost{Guest: "webvm", Node: "node1", Epoch: 3, LastHeartbeat: t0},
		events.TypeGuestStopped:            events.GuestStopped{Guest: "webvm", Node: "node1", Epoch: 3, Reason: "halt"},
		events.TypeGuestMigrating:          events.GuestMigrating{Guest: "webvm", Node: "node1", Epoch: 3, TargetNode: "node2", TargetEpoch: 4},
		events.TypeGuestMigrated: events.GuestMigrated{Guest: "webvm", Node: "node1", Epoch: 3, TargetNode: "node2", TargetEpoch: 4,
			Processes: []events.MigratedProcess{{Service: "httpd", RequestID: "req-1", PID: 4242, StartedID: "ev-1"}}},
		events.TypeGuestMigrationFailed: events.GuestMigrationFailed{Guest: "webvm", Node: "node1", Epoch: 3, TargetNode: "node2", TargetEpoch: 4, Reason: "refused"},
		events.TypeServiceRestarting:    events.ServiceRestarting{Service: "httpd", Node: "node1", Epoch: 3, Attempt: 2, RestartsLeft: 1, DelayMS: 0},
		events.TypeServiceFailed:        events.ServiceFailed{Service: "httpd", Node: "node1", Epoch: 3, Restarts: 3, Reason: "restarts used up"},
		events.TypeProcessStarted:       events.ProcessStarted{Guest: "webvm", Service: "httpd", PID: 4242, RequestID: "req-1", Epoch: 3},
		events.TypeProcessExited:        events.ProcessExited{Guest: "webvm", Service: "httpd", PID: 4242, ExitCode: 3, RuntimeMS: 1500, RequestID: "req-1", Epoch: 3, Output: []string{"line 1", "line 2"}},
	}
}

func subjectFor(typ string) string {
	sc, _ := events.ScopeOf(typ)
	switch sc {
	case events.ScopeCluster:
		return "demo"
	case events.ScopeNode, events.ScopePlacement:
		return "node1"
	}
	return "web"
}

func openLog(t *testing.T) (*events.Log, *nats.Conn) {
	t.Helper()
	s := natsd.StartTest(t)
	nc := natsd.Connect(t, s)
	l, err := events.Open(context.Background(), nc)
	if err != nil {
		t.Fatal(err)
	}
	return l, nc
}

func TestRoundTripEveryType(t *testing.T) {
	ctx := context.Background()
	l, _ := openLog(t)
	samples := samplePayloads()
	if len(samples) != len(events.Types()) {
		t.Fatalf("samples cover %d types, catalog has %d", len(samples), len(events.Types()))
	}
	var want []events.Event
	for i, typ := range events.Types() {
		e := events.New(eventstest.Source(typ, subjectFor(typ)), subjectFor(typ), samples[typ])
		e.Time = e.Time.Truncate(time.Microsecond)
		if i > 0 {
			e.CauseID = want[i-1].ID
		}
		seq, err := l.Append(ctx, e)
		if err != nil {
			t.Fatalf("append %s: %v", typ, err)
		}
		e.Seq = seq
		want = append(want, e)
	}
	var got []events.Event
	last, err := l.Replay(ctx, events.ReadOptions{}, func(e events.Event) error {
		got = append(got, e)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if last != uint64(len(want)) {
		t.Errorf("last seq: got %d, want %d", last, len(want))
	}
	if len(got) != len(want) {
		t.Fatalf("replayed %d events, want %d", len(got), len(want))
	}
	for i := range want {
		if !got[i].Time.Equal(want[i].Time) {
			t.Errorf("%s time: got %v, want %v", want[i].Type(), got[i].Time, want[i].Time)
		}
		got[i].Time = want[i].Time
		if !reflect.DeepEqual(got[i], want[i]) {
			t.Errorf("%s:\n got %#v\nwant %#v", want[i].Type(), got[i], want[i])
		}
	}
	// Per-package filtering and a start sequence.
	var n int
	var nonPkg uint64
	for _, e := range want {
		if sc, _ := events.ScopeOf(e.Type()); sc != events.ScopePackage {
			nonPkg++
		}
	}
	if _, err := l.Replay(ctx, events.ReadOptions{StartSeq: nonPkg, Subjects: []string{events.PackageFilter("web")}}, func(e events.Event) error {
		if e.Subject != "web" || e.Seq < nonPkg {
			t.Errorf("filtered replay returned %s seq %d", e.Subject, e.Seq)
		}
		n++
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	// The cluster and node events come first, the package events follow.
	if n != len(want)-int(nonPkg) {
		t.Errorf("filtered replay: %d events, want %d", n, len(want)-int(nonPkg))
	}
}

func TestSubjects(t *testing.T) {
	cases := map[string]string{
		events.TypeProcessExited: "vmguard.events.pkg.web.process.exited",
		events.TypePackagePlaced: "vmguard.events.pkg.web.package.placed",
		events.TypeNodeLost:      "vmguard.events.node.node1.lost",
		events.TypeConfigApplied: "vmguard.events.cluster.config_applied",
	}
	for typ, want := range cases {
		got, err := events.SubjectOf(events.Event{Subject: subjectFor(typ), Data: samplePayloads()[typ]})
		if err != nil || got != want {
			t.Errorf("%s: got %q, %v; want %q", typ, got, err, want)
		}
	}
	for _, bad := range []string{"", "a.b", "a b", "a*", "a>", strings.Repeat("x", 65)} {
		if events.ValidName(bad) {
			t.Errorf("ValidName(%q) = true", bad)
		}
	}
}

func TestDuplicateAppendStoredOnce(t *testing.T) {
	ctx := context.Background()
	l, _ := openLog(t)
	e := events.New(events.HostSource("node1"), "web", samplePayloads()[events.TypePackageStarted])
	s1, err := l.Append(ctx, e)
	if err != nil {
		t.Fatal(err)
	}
	s2, err := l.Append(ctx, e)
	if err != nil {
		t.Fatal(err)
	}
	if s1 != s2 {
		t.Errorf("duplicate got seq %d, first %d", s2, s1)
	}
	last, err := l.LastSeq(ctx)
	if err != nil || last != 1 {
		t.Errorf("stream last seq %d (%v), want 1", last, err)
	}
}

func TestExpectedSequenceConflict(t *testing.T) {
	ctx := context.Background()
	l, _ := openLog(t)
	placed := func() events.Event {
		return events.New(events.ControllerSource, "web", events.PackagePlaced{Node: "node1", Epoch: 1, Reason: "initial"})
	}
	// Nothing about "web" yet: expect 0.
	s1, err := l.Append(ctx, placed(), events.ExpectPackageSeq("web", 0))
	if err != nil {
		t.Fatal(err)
	}
	// An event about another package does not disturb "web".
	if _, err := l.Append(ctx, events.New(events.HostSource("node1"), "db", events.PackageStarted{Node: "node1", Epoch: 1})); err != nil {
		t.Fatal(err)
	}
	// A writer that read up to s1 wins; one that read an older state loses.
	if _, err := l.Append(ctx, placed(), events.ExpectPackageSeq("web", s1)); err != nil {
		t.Fatalf("append at the right sequence: %v", err)
	}
	_, err = l.Append(ctx, placed(), events.ExpectPackageSeq("web", s1))
	if !errors.Is(err, events.ErrConflict) {
		t.Fatalf("stale append: got %v, want ErrConflict", err)
	}
}

func TestInvalidEventRefusedNamingField(t *testing.T) {
	ctx := context.Background()
	l, _ := openLog(t)
	cases := []struct {
		e    events.Event
		want string
	}{
		{events.New("/t", "web", events.ProcessStarted{Guest: "g", Service: "s", PID: 0, RequestID: "r"}), "data.pid"},
		{events.New("/t", "web", events.PackagePlaced{Node: "node.1", Epoch: 1, Reason: "x"}), "data.node"},
		{events.New("/t", "web", events.ProcessExited{Guest: "g", Service: "s", PID: 1, RequestID: ""}), "data.request_id"},
		{events.New("/t", "a.b", events.PackageStarted{Node: "n", Epoch: 1}), "subject"},
		{events.New("", "web", events.PackageStarted{Node: "n", Epoch: 1}), "source"},
	}
	for _, c := range cases {
		_, err := l.Append(ctx, c.e)
		if !errors.Is(err, events.ErrInvalid) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want ErrInvalid naming %q", c.e.Type(), err, c.want)
		}
	}
	if last, _ := l.LastSeq(ctx); last != 0 {
		t.Errorf("invalid events stored: last seq %d", last)
	}
}

func TestMalformedMessageSkippedCounted(t *testing.T) {
	ctx := context.Background()
	l, nc := openLog(t)
	js := l.JetStream()
	good := func(n int) {
		if _, err := l.Append(ctx, events.New(events.HostSource("node1"), "web", events.PackageStarted{Node: "node1", Epoch: uint64(n)})); err != nil {
			t.Fatal(err)
		}
	}
	good(1)
	// Published by hand: not JSON, a CloudEvent of an unknown type, one failing
	// its schema, and a valid binary-mode one.
	bad := []string{
		`not json`,
		`{"specversion":"1.0","id":"x1","source":"/x","type":"io.vmguard.nope.v1","data":{}}`,
		`{"specversion":"1.0","id":"x2","source":"/x","type":"io.vmguard.package.started.v1","subject":"web","time":"2026-11-27T10:00:00Z","data":{"node":"node1","epoch":"one"}}`,
	}
	for _, b := range bad {
		if _, err := js.Publish(ctx, "vmguard.events.pkg.web.package.started", []byte(b)); err != nil {
			t.Fatal(err)
		}
	}
	m := nats.NewMsg("vmguard.events.pkg.web.package.started")
	m.Header.Set("ce-specversion", "1.0")
	m.Header.Set("ce-id", "bin-1")
	m.Header.Set("ce-source", events.HostSource("node2"))
	m.Header.Set("ce-type", events.TypePackageStarted)
	m.Header.Set("ce-subject", "web")
	m.Header.Set("ce-time", "2026-11-27T10:00:00Z")
	m.Header.Set("ce-causeid", "cause-1")
	m.Header.Set("Content-Type", "application/json")
	m.Data = []byte(`{"node":"node2","epoch":7}`)
	if _, err := js.PublishMsg(ctx, m); err != nil {
		t.Fatal(err)
	}
	good(2)
	for round := 1; round <= 2; round++ {
		var got []events.Event
		var skippedSeqs []uint64
		ro := events.ReadOptions{OnSkip: func(seq uint64, subject string) {
			if subject != "vmguard.events.pkg.web.package.started" {
				t.Errorf("skip subject %q", subject)
			}
			skippedSeqs = append(skippedSeqs, seq)
		}}
		if _, err := l.Replay(ctx, ro, func(e events.Event) error {
			got = append(got, e)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		if len(got) != 3 {
			t.Fatalf("round %d: read %d events, want 3 (two good, one binary)", round, len(got))
		}
		bin := got[1]
		if bin.ID != "bin-1" || bin.CauseID != "cause-1" || bin.Data != (events.PackageStarted{Node: "node2", Epoch: 7}) {
			t.Errorf("binary mode event: %#v", bin)
		}
		if got[2].Data != (events.PackageStarted{Node: "node1", Epoch: 2}) {
			t.Errorf("reader did not go on after the bad ones: %#v", got[2])
		}
		if fmt.Sprint(skippedSeqs) != "[2 3 4]" {
			t.Errorf("round %d: OnSkip saw %v, want [2 3 4]", round, skippedSeqs)
		}
		if l.Skipped() != uint64(3*round) {
			t.Errorf("round %d: skipped %d, want %d", round, l.Skipped(), 3*round)
		}
	}
	_ = nc
}

func TestFollowLiveAndResume(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	l, _ := openLog(t)
	for i := 1; i <= 3; i++ {
		if _, err := l.Append(ctx, events.New(events.HostSource("node1"), "web", events.PackageStarted{Node: "node1", Epoch: uint64(i)})); err != nil {
			t.Fatal(err)
		}
	}
	got := make(chan events.Event, 10)
	fctx, fcancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- l.Follow(fctx, events.ReadOptions{StartSeq: 2}, func(e events.Event) error {
			got <- e
			return nil
		})
	}()
	if _, err := l.Append(ctx, events.New(events.HostSource("node1"), "web", events.PackageStarted{Node: "node1", Epoch: 4})); err != nil {
		t.Fatal(err)
	}
	for want := uint64(2); want <= 4; want++ {
		select {
		case e := <-got:
			if e.Seq != want {
				t.Fatalf("follow: got seq %d, want %d", e.Seq, want)
			}
		case <-ctx.Done():
			t.Fatalf("follow: waiting for seq %d: %v", want, ctx.Err())
		}
	}
	fcancel()
	if err := <-done; err != nil {
		t.Errorf("follow returned %v after cancel", err)
	}
}

// TestForgedBodySkipped: a writer allowed only on one package's process
// subjects publishes a valid event that claims to be something else (a
// placement of another package, a node loss); readers refuse it.
func TestForgedBodySkipped(t *testing.T) {
	ctx := context.Background()
	l, _ := openLog(t)
	for _, forged := range []events.Event{
		events.New("/vmguard/guests/webvm/agent", "db", events.PackagePlaced{Node: "node9", Epoch: 7, Reason: "forged"}),
		events.New("/vmguard/guests/webvm/agent", "node1", events.NodeLost{Reason: "forged"}),
		events.New("/vmguard/guests/webvm/agent", "db", events.ProcessExited{Guest: "dbvm", Service: "s", PID: 1, RequestID: "r", Epoch: 1}),
	} {
		m, err := l.Codec().Encode(forged)
		if err != nil {
			t.Fatal(err)
		}
		m.Subject = "vmguard.events.pkg.web.process.exited" // where the guest may write
		if _, err := l.JetStream().PublishMsg(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	n := 0
	if _, err := l.Replay(ctx, events.ReadOptions{}, func(events.Event) error { n++; return nil }); err != nil {
		t.Fatal(err)
	}
	if n != 0 || l.Skipped() != 3 {
		t.Errorf("forged events: %d read, %d skipped; want 0 read, 3 skipped", n, l.Skipped())
	}
	if _, err := l.Get(ctx, 1); !errors.Is(err, events.ErrInvalid) || !strings.Contains(err.Error(), "was stored on vmguard.events.pkg.web.process.exited") {
		t.Errorf("Get of a forged event: %v", err)
	}
}

// TestLogFullRefusesNew: the log is capped (MaxLogBytes) and, full,
// refuses new events instead of dropping old ones; EnsureStream keeps a cap
// an operator raised and restores the default over a lower one.
func TestLogFullRefusesNew(t *testing.T) {
	ctx := context.Background()
	l, _ := openLog(t)
	js := l.JetStream()
	info := func() jetstream.StreamConfig {
		t.Helper()
		s, err := js.Stream(ctx, events.StreamName)
		if err != nil {
			t.Fatal(err)
		}
		return s.CachedInfo().Config
	}
	if c := info(); c.MaxBytes != events.MaxLogBytes || c.Discard != jetstream.DiscardNew {
		t.Fatalf("stream max_bytes %d, discard %v: want %d, new", c.MaxBytes, c.Discard, int64(events.MaxLogBytes))
	}
	first := events.New(events.HostSource("node1"), "web", samplePayloads()[events.TypePackageStarted])
	if _, err := l.Append(ctx, first); err != nil {
		t.Fatal(err)
	}
	// A full log: a cap just above what it holds.
	cfg := info()
	s, err := js.Stream(ctx, events.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	cfg.MaxBytes = int64(s.CachedInfo().State.Bytes) + 10
	if _, err := js.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	next := events.New(events.HostSource("node1"), "web", samplePayloads()[events.TypePackageStarted])
	if _, err := l.Append(ctx, next); err == nil {
		t.Error("a full log took another event")
	}
	if e, ok, err := l.Last(ctx, events.PackageSubject("web", "package", "started")); err != nil || !ok || e.ID != first.ID {
		t.Errorf("the first event after the refusal: %v %v %v", e.ID, ok, err)
	}
	if _, err := events.EnsureStream(ctx, js, 1); err != nil {
		t.Fatal(err)
	}
	if c := info(); c.MaxBytes != events.MaxLogBytes {
		t.Errorf("EnsureStream over a lower cap: max_bytes %d, want %d", c.MaxBytes, int64(events.MaxLogBytes))
	}
	if _, err := l.Append(ctx, next); err != nil {
		t.Errorf("append after the cap was restored: %v", err)
	}
	cfg = info()
	cfg.MaxBytes = 2 * events.MaxLogBytes
	if _, err := js.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	if _, err := events.EnsureStream(ctx, js, 1); err != nil {
		t.Fatal(err)
	}
	if c := info(); c.MaxBytes != 2*events.MaxLogBytes {
		t.Errorf("EnsureStream over a raised cap: max_bytes %d, want %d", c.MaxBytes, int64(2*events.MaxLogBytes))
	}
}
