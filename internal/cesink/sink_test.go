package cesink_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	ceclient "github.com/cloudevents/sdk-go/v2/client"
	ceevent "github.com/cloudevents/sdk-go/v2/event"
	"github.com/cloudevents/sdk-go/v2/protocol"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"

	"github.com/vmguard/vmguard/events"
	"github.com/vmguard/vmguard/internal/cesink"
	"github.com/vmguard/vmguard/internal/natsd"
	"github.com/vmguard/vmguard/internal/natsd/natstest"
)

// receiver is an sdk-go CloudEvents HTTP receiver that records what it
// accepted, in order, and refuses the first attempt of the ids in failOnce.
type receiver struct {
	mu       sync.Mutex
	got      []ceevent.Event
	failOnce map[string]bool
	refused  int
	// answerAfter delays the answer after an event is recorded: a stop
	// that comes meanwhile finds the send in flight.
	answerAfter time.Duration
}

func (r *receiver) receive(_ context.Context, e ceevent.Event) protocol.Result {
	r.mu.Lock()
	if r.failOnce[e.ID()] {
		delete(r.failOnce, e.ID())
		r.refused++
		r.mu.Unlock()
		return cehttp.NewResult(http.StatusServiceUnavailable, "busy")
	}
	r.got = append(r.got, e)
	wait := r.answerAfter
	r.mu.Unlock()
	time.Sleep(wait) // the receiver's own slowness, not a wait for an outcome
	return protocol.ResultACK
}

func (r *receiver) ids() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, e := range r.got {
		out = append(out, e.ID())
	}
	return out
}

func startReceiver(t *testing.T, r *receiver) string {
	t.Helper()
	p, err := cehttp.New()
	if err != nil {
		t.Fatal(err)
	}
	h, err := ceclient.NewHTTPReceiveHandler(context.Background(), p, r.receive)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv.URL
}

func appendNodes(t *testing.T, l *events.Log, from, n int) []events.Event {
	t.Helper()
	var out []events.Event
	for i := from; i < from+n; i++ {
		node := fmt.Sprintf("node%d", i)
		e := events.New(events.HostSource(node), node, events.NodeJoined{Version: "1.0.0"})
		seq, err := l.Append(context.Background(), e)
		if err != nil {
			t.Fatal(err)
		}
		e.Seq = seq
		out = append(out, e)
	}
	return out
}

// TestForwardInOrderAtLeastOnceAndResume sends the log to an sdk-go
// receiver that refuses two events once: every event arrives, in log order,
// with its id, type, source and sequence; after the forwarder stops and
// more events are written, a new forwarder on the same durable consumer
// sends exactly the new ones.
// startSink runs a forwarder of every event of l to url, with consumer
// durable, until the returned cancel; its Run's error comes on done.
func startSink(t *testing.T, l *events.Log, url, durable string) (cancel context.CancelFunc, done chan error) {
	t.Helper()
	f, err := cesink.New(cesink.Config{Log: l, Target: url, Durable: durable, Subjects: []string{events.SubjectAll}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done = make(chan error, 1)
	go func() { done <- f.Run(ctx) }()
	return cancel, done
}

func TestForwardInOrderAtLeastOnceAndResume(t *testing.T) {
	srv := natsd.StartTest(t)
	nc := natsd.Connect(t, srv)
	l, err := events.Open(context.Background(), nc)
	if err != nil {
		t.Fatal(err)
	}
	first := appendNodes(t, l, 1, 10)
	// Answers come 200 ms after each event is recorded, so the stop below
	// (as soon as the tenth is recorded) finds its send in flight: the
	// forwarder must finish it and acknowledge it, not send it again.
	r := &receiver{failOnce: map[string]bool{first[2].ID: true, first[7].ID: true}, answerAfter: 200 * time.Millisecond}
	url := startReceiver(t, r)

	want := func(evs []events.Event) []string {
		var ids []string
		for _, e := range evs {
			ids = append(ids, e.ID)
		}
		return ids
	}
	check := func(wantIDs []string, within time.Duration) {
		t.Helper()
		natstest.WaitFor(t, within, fmt.Sprintf("%d events at the receiver", len(wantIDs)), func() bool { return len(r.ids()) >= len(wantIDs) })
		if got := r.ids(); fmt.Sprint(got) != fmt.Sprint(wantIDs) {
			t.Fatalf("receiver got\n%v\nwant, in log order,\n%v", got, wantIDs)
		}
	}

	cancel, done := startSink(t, l, url, "sink_test")
	check(want(first), 30*time.Second)
	if r.refused != 2 {
		t.Errorf("receiver refused %d times, want 2 (each refused event sent again)", r.refused)
	}
	r.mu.Lock()
	e := r.got[3]
	r.mu.Unlock()
	if e.Type() != events.TypeNodeJoined || e.Source() != events.HostSource("node4") || e.Subject() != "node4" {
		t.Errorf("event 4 arrived as type %q source %q subject %q", e.Type(), e.Source(), e.Subject())
	}
	if seq, _ := e.Extensions()[cesink.SeqExtension].(string); seq != fmt.Sprint(first[3].Seq) {
		t.Errorf("event 4's %s = %v, want %d", cesink.SeqExtension, e.Extensions()[cesink.SeqExtension], first[3].Seq)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}

	// Written while no forwarder runs; the next one resumes after the last
	// acknowledged event.
	second := appendNodes(t, l, 11, 5)
	cancel, done = startSink(t, l, url, "sink_test")
	defer func() { cancel(); <-done }()
	// The stopped forwarder's last pull request may still wait on the
	// server (FetchMaxWait) and take the first of these events; the server
	// sends it again after the consumer's AckWait (30 s): at least once,
	// later. Seen under load: 15 events not all there after 30 s.
	check(append(want(first), want(second)...), 75*time.Second)
}

// TestForwardLargeEvent: an event the log stores in parts (a configuration
// larger than a message) reaches the receiver once, whole, between the
// events around it, with its last part's sequence.
func TestForwardLargeEvent(t *testing.T) {
	srv := natsd.StartTest(t)
	l, err := events.Open(context.Background(), natsd.Connect(t, srv))
	if err != nil {
		t.Fatal(err)
	}
	before := appendNodes(t, l, 1, 1)
	var b strings.Builder
	b.WriteString(`{"packages":[`)
	for i := 0; b.Len() < 1_300_000; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"name":"pkg%05d","nodes":["node1","node2"]}`, i)
	}
	b.WriteString(`]}`)
	big := events.New(events.OperatorSource("test"), "big", events.ConfigApplied{Config: json.RawMessage(b.String()), Hash: "sha256:x"})
	seq, err := l.Append(context.Background(), big)
	if err != nil {
		t.Fatal(err)
	}
	if seq < before[0].Seq+2 {
		t.Fatalf("a %d-byte event stored at %d after %d: not in parts", b.Len(), seq, before[0].Seq)
	}
	after := appendNodes(t, l, 2, 1)
	r := &receiver{}
	url := startReceiver(t, r)
	cancel, done := startSink(t, l, url, "sink_large")
	defer func() { cancel(); <-done }()
	natstest.WaitFor(t, 30*time.Second, "3 events at the receiver", func() bool { return len(r.ids()) >= 3 })
	if got, want := fmt.Sprint(r.ids()), fmt.Sprint([]string{before[0].ID, big.ID, after[0].ID}); got != want {
		t.Fatalf("receiver got %s, want %s", got, want)
	}
	r.mu.Lock()
	e := r.got[1]
	r.mu.Unlock()
	var d events.ConfigApplied
	if err := json.Unmarshal(e.Data(), &d); err != nil || len(d.Config) != b.Len() {
		t.Fatalf("the large event arrived with %d config bytes (%v), want %d", len(d.Config), err, b.Len())
	}
	if s, _ := e.Extensions()[cesink.SeqExtension].(string); s != fmt.Sprint(seq) {
		t.Fatalf("its %s = %q, want %d", cesink.SeqExtension, s, seq)
	}
}
