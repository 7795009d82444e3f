package guestgate

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/vmguard/vmguard/events"
	"github.com/vmguard/vmguard/internal/guestauth"
	"github.com/vmguard/vmguard/internal/natsd"
	"github.com/vmguard/vmguard/internal/natsd/natstest"
)

func TestLimiter(t *testing.T) {
	t0 := time.Date(2026, 12, 2, 6, 0, 0, 0, time.UTC)
	l := NewLimiter(10, 3) // 10/s, 3 at once
	steps := []struct {
		guest string
		at    time.Duration
		want  bool
	}{
		{"a", 0, true}, {"a", 0, true}, {"a", 0, true}, // the burst
		{"a", 0, false},                     // empty
		{"b", 0, true},                      // another guest has its own bucket
		{"a", 50 * time.Millisecond, false}, // half a token
		{"a", 100 * time.Millisecond, true}, // one token
		{"a", 100 * time.Millisecond, false},
		{"a", 10 * time.Second, true}, {"a", 10 * time.Second, true}, {"a", 10 * time.Second, true}, // refilled to the burst, no more
		{"a", 10 * time.Second, false},
		{"a", 5 * time.Second, false}, // the clock went back: nothing refilled
	}
	for i, s := range steps {
		if got := l.Allow(s.guest, t0.Add(s.at)); got != s.want {
			t.Errorf("step %d: Allow(%s, +%v) = %v, want %v", i, s.guest, s.at, got, s.want)
		}
	}
}

func TestCheck(t *testing.T) {
	c, err := events.NewCodec()
	if err != nil {
		t.Fatal(err)
	}
	subj := events.PackageSubject("web", "process", "exited")
	msg := func(src, guest string) *nats.Msg {
		m, err := c.Encode(events.New(src, "web", events.ProcessExited{Guest: guest, Service: "svc", PID: 1, ExitCode: 1, RequestID: "r", Epoch: 1}))
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	ok := msg(events.GuestSource("webvm"), "webvm")
	if err := Check(c, "webvm", subj, ok.Header, ok.Data); err != nil {
		t.Errorf("the guest's own event: %v", err)
	}
	for what, tc := range map[string]struct {
		m   *nats.Msg
		sub string
	}{
		"junk":                   {&nats.Msg{Data: []byte("junk")}, subj},
		"another guest's source": {msg(events.GuestSource("dbvm"), "webvm"), subj},
		"about another guest":    {msg(events.GuestSource("webvm"), "dbvm"), subj},
		"a host's source":        {msg(events.HostSource("node1"), "webvm"), subj},
		"on another subject":     {ok, events.PackageSubject("web", "package", "placed")},
		"another package":        {ok, events.PackageSubject("db", "process", "exited")},
	} {
		if err := Check(c, "webvm", tc.sub, tc.m.Header, tc.m.Data); !errors.Is(err, events.ErrInvalid) {
			t.Errorf("%s: %v, want ErrInvalid", what, err)
		}
	}
}

func TestForwardHeader(t *testing.T) {
	h := nats.Header{}
	h.Set(nats.MsgIdHdr, "id1")
	h.Set("Content-Type", "application/cloudevents+json")
	h.Set("ce-type", "io.vmguard.process.exited.v1")
	for _, k := range []string{"Nats-Rollup", "Nats-TTL", "Nats-Expected-Last-Subject-Sequence", "Nats-Batch-Id", "Nats-Marker-Reason", "X-Other"} {
		h.Set(k, "x")
	}
	got := forwardHeader(h)
	if len(got) != 3 || got.Get(nats.MsgIdHdr) != "id1" || got.Get("ce-type") == "" || got.Get("Content-Type") == "" {
		t.Errorf("forwarded %v", got)
	}
}

func TestGateSubject(t *testing.T) {
	s := guestauth.GateSubject("webvm", events.PackageSubject("web", "process", "exited"))
	if s != "vmguard.gate.webvm.pkg.web.process.exited" {
		t.Errorf("GateSubject = %s", s)
	}
	g, sub, ok := guestauth.ParseGateSubject(s)
	if !ok || g != "webvm" || sub != events.PackageSubject("web", "process", "exited") {
		t.Errorf("ParseGateSubject(%s) = %s, %s, %v", s, g, sub, ok)
	}
	for _, bad := range []string{"vmguard.gate", "vmguard.gate.webvm", "vmguard.gate..x", "vmguard.events.pkg.web.process.exited", "vmguard.gate.a*b.x"} {
		if _, _, ok := guestauth.ParseGateSubject(bad); ok {
			t.Errorf("ParseGateSubject(%s) ok", bad)
		}
	}
}

// TestForward: a host's gate (Forward, on a leaf's connection) passes a
// guest's valid event to the server's gate, which stores it; junk is
// refused at the host and never reaches the server; an event the server's
// gate refuses (over its rate) is answered with its error and counted as
// refused upstream.
func TestForward(t *testing.T) {
	ctx := context.Background()
	hub := natsd.StartTest(t)
	hubNC := natsd.Connect(t, hub)
	l, err := events.Open(ctx, hubNC)
	if err != nil {
		t.Fatal(err)
	}
	leaf := natsd.StartTest(t)
	leafNC := natsd.Connect(t, leaf)
	hubGate, err := New(Config{Conn: hubNC, Rate: 0.001, Burst: 1})
	if err != nil {
		t.Fatal(err)
	}
	hostGate, err := New(Config{Conn: leafNC, Forward: hubNC})
	if err != nil {
		t.Fatal(err)
	}
	gctx, stop := context.WithCancel(ctx)
	defer stop()
	for _, g := range []*Gate{hubGate, hostGate} {
		done := make(chan error, 1)
		go func() { done <- g.Run(gctx) }()
		defer func() { stop(); <-done }()
	}
	codec, err := events.NewCodec()
	if err != nil {
		t.Fatal(err)
	}
	logSubj := events.PackageSubject("web", "process", "exited")
	gate := guestauth.GateSubject("webvm", logSubj)
	natstest.WaitFor(t, 10*time.Second, "both gates subscribed", func() bool {
		return hub.GlobalAccount().SubscriptionInterest(gate) && leaf.GlobalAccount().SubscriptionInterest(gate)
	})
	ask := func(data []byte, hdr nats.Header) string {
		t.Helper()
		resp, err := leafNC.RequestMsg(&nats.Msg{Subject: gate, Header: hdr, Data: data}, 10*time.Second)
		if err != nil {
			t.Fatalf("ask the host's gate: %v", err)
		}
		return string(resp.Data)
	}
	ev := func(id string) *nats.Msg {
		m, err := codec.Encode(events.New(events.GuestSource("webvm"), "web", events.ProcessExited{Guest: "webvm", Service: "svc", PID: 1, ExitCode: 1, RequestID: id, Epoch: 1}))
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	if a := ask([]byte("junk"), nil); !strings.Contains(a, "guest gate") {
		t.Errorf("junk: %s, want the host gate's refusal", a)
	}
	first := ev("first")
	if a := ask(first.Data, first.Header); strings.Contains(a, "error") {
		t.Errorf("a valid event: %s, want it stored", a)
	}
	second := ev("second")
	if a := ask(second.Data, second.Header); !strings.Contains(a, "over its rate") {
		t.Errorf("a valid event over the server's rate: %s, want the server gate's refusal", a)
	}
	e, found, err := l.Last(ctx, logSubj)
	if d, ok := e.Data.(events.ProcessExited); err != nil || !found || !ok || d.RequestID != "first" {
		t.Errorf("last stored event: %+v, %v, %v; want the first valid one", e, found, err)
	}
	h, s := hubGate.Stats(), hostGate.Stats()
	if h.Invalid != 0 || h.Appended != 1 || h.Limited != 1 {
		t.Errorf("the server's gate: %+v, want 1 appended, 1 over the rate, no junk seen", h)
	}
	if s.Invalid != 1 || s.Appended != 1 || s.Upstream != 1 {
		t.Errorf("the host's gate: %+v, want 1 junk, 1 appended, 1 refused upstream", s)
	}
}
