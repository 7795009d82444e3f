// Package cesink forwards the event log to a CloudEvents HTTP receiver
// (Knative Eventing, Argo Events, a webhook) through sdk-go's HTTP binding:
// each event in log order, at least once, with its id for the receiver's
// dedup, resuming after a restart from a durable JetStream consumer. It
// only reads the log and acknowledges its own consumer; it never appends.
package cesink

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	ceclient "github.com/cloudevents/sdk-go/v2/client"
	ceevent "github.com/cloudevents/sdk-go/v2/event"
	"github.com/cloudevents/sdk-go/v2/protocol"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/vmguard/vmguard/events"
)

// SeqExtension is the CloudEvents extension attribute that carries the
// event's stream sequence (a decimal string), so a receiver can order.
const SeqExtension = "vmguardseq"

// Config configures a Forwarder.
type Config struct {
	// Log is the event log to read (required).
	Log *events.Log
	// Target is the receiver's URL (required).
	Target string
	// Durable names the JetStream consumer that remembers what was
	// delivered (required): the same name resumes where the last run left.
	Durable string
	// Subjects filter the events (default: all).
	Subjects []string
	// StartSeq and StartTime say where a new consumer starts (default: the
	// log's beginning); an existing one resumes where it was.
	StartSeq  uint64
	StartTime time.Time
	// HTTPClient sends the events (default: one with a 30 s timeout).
	HTTPClient *http.Client
	// Logger receives the forwarder's own log (default: discard).
	Logger *slog.Logger
	// OnDelivered, if set, is called after each event was accepted by the
	// receiver and acknowledged to the consumer.
	OnDelivered func(events.Event)
}

// Forwarder delivers the log's events to one receiver. Create it with New.
type Forwarder struct {
	cfg    Config
	client ceclient.Client
}

// New checks cfg and returns a forwarder.
func New(cfg Config) (*Forwarder, error) {
	switch {
	case cfg.Log == nil:
		return nil, errors.New("new sink: log: missing")
	case cfg.Target == "":
		return nil, errors.New("new sink: target URL: missing")
	case cfg.Durable == "":
		return nil, errors.New("new sink: durable consumer name: missing")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{Timeout: 30 * time.Second}
	}
	c, err := ceclient.NewHTTP(cehttp.WithTarget(cfg.Target), cehttp.WithClient(*cfg.HTTPClient))
	if err != nil {
		return nil, fmt.Errorf("new sink: %w", err)
	}
	return &Forwarder{cfg: cfg, client: c}, nil
}

// Run delivers events until ctx ends. It returns only when ctx ends or the
// consumer cannot be made; a receiver or server that fails is retried.
func (f *Forwarder) Run(ctx context.Context) error {
	cons, err := f.consumer(ctx)
	if err != nil {
		return err
	}
	backoff := newBackoff()
	for ctx.Err() == nil {
		batch, err := cons.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			f.cfg.Logger.Warn("fetch from the log; retrying", "err", err)
			backoff.wait(ctx)
			if errors.Is(err, jetstream.ErrConsumerNotFound) {
				if cons, err = f.consumer(ctx); err != nil && ctx.Err() == nil {
					f.cfg.Logger.Warn("recreate the sink's consumer; retrying", "err", err)
				}
			}
			continue
		}
		for m := range batch.Messages() {
			f.deliver(ctx, m)
		}
		if err := batch.Error(); err != nil && !errors.Is(err, context.Canceled) && ctx.Err() == nil {
			f.cfg.Logger.Warn("fetch from the log; retrying", "err", err)
			backoff.wait(ctx)
			continue
		}
		backoff.reset()
	}
	return nil
}

// consumer binds the durable consumer, creating it if it does not exist.
// At most one event is outstanding, so delivery keeps the log's order.
func (f *Forwarder) consumer(ctx context.Context) (jetstream.Consumer, error) {
	js := f.cfg.Log.JetStream()
	cons, err := js.Consumer(ctx, events.StreamName, f.cfg.Durable)
	if err == nil {
		return cons, nil
	}
	if !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return nil, fmt.Errorf("bind sink consumer %s: %w", f.cfg.Durable, err)
	}
	cc := jetstream.ConsumerConfig{
		Durable:       f.cfg.Durable,
		Description:   "vmguard events --sink " + f.cfg.Target,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       30 * time.Second,
		MaxAckPending: 1,
		DeliverPolicy: jetstream.DeliverAllPolicy,
	}
	switch {
	case f.cfg.StartSeq > 0:
		cc.DeliverPolicy, cc.OptStartSeq = jetstream.DeliverByStartSequencePolicy, f.cfg.StartSeq
	case !f.cfg.StartTime.IsZero():
		t := f.cfg.StartTime
		cc.DeliverPolicy, cc.OptStartTime = jetstream.DeliverByStartTimePolicy, &t
	}
	switch len(f.cfg.Subjects) {
	case 0:
	case 1:
		cc.FilterSubject = f.cfg.Subjects[0]
	default:
		cc.FilterSubjects = f.cfg.Subjects
	}
	cons, err = js.CreateConsumer(ctx, events.StreamName, cc)
	if err != nil {
		return nil, fmt.Errorf("create sink consumer %s: %w", f.cfg.Durable, err)
	}
	return cons, nil
}

// deliver sends one stored event until the receiver accepts it, then
// acknowledges it. A malformed event is skipped (acknowledged unsent).
func (f *Forwarder) deliver(ctx context.Context, m jetstream.Msg) {
	meta, err := m.Metadata()
	if err != nil {
		f.cfg.Logger.Error("message without metadata; skipped", "err", err)
		_ = m.Term()
		return
	}
	seq := meta.Sequence.Stream
	if part, last := events.PartOf(m.Headers()); part && !last {
		_ = m.Ack() // a part of a larger event, sent whole at its last part
		return
	}
	e, ce, err := f.cloudEvent(ctx, m, seq)
	if err != nil {
		f.cfg.Logger.Warn("malformed event skipped", "seq", seq, "subject", m.Subject(), "err", err)
		_ = m.Ack()
		return
	}
	backoff := newBackoff()
	for attempt := 1; ; attempt++ {
		// A stop lets the send in flight finish (bounded): a receiver that
		// took the event and is answering would otherwise get it again
		// from the next run (seen in TestForwardInOrderAtLeastOnceAndResume).
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), sendTimeout)
		res := f.client.Send(sctx, ce)
		cancel()
		if protocol.IsACK(res) {
			break
		}
		if ctx.Err() != nil {
			return // not acknowledged: delivered again by the next run
		}
		if attempt == 1 || attempt%10 == 0 {
			f.cfg.Logger.Warn("receiver did not accept the event; retrying", "seq", seq, "id", e.ID, "attempt", attempt, "result", res)
		}
		_ = m.InProgress() // still ours: no redelivery while we retry
		backoff.wait(ctx)
	}
	// Acknowledged even when the stop came while it was sent: the
	// receiver has it, and a stop must not make the next run send it again
	// (seen: a duplicate when the test stopped right after the last event).
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	err = m.DoubleAck(actx)
	cancel()
	if err != nil {
		// Delivered again after AckWait: at least once, the receiver dedups by id.
		f.cfg.Logger.Warn("acknowledge a delivered event; it may be sent again", "seq", seq, "err", err)
		return
	}
	if f.cfg.OnDelivered != nil {
		f.cfg.OnDelivered(e)
	}
}

// cloudEvent decodes a stored event (checking it as every reader does) and
// returns it as an sdk-go event with its id, and its sequence in
// SeqExtension.
func (f *Forwarder) cloudEvent(ctx context.Context, m jetstream.Msg, seq uint64) (events.Event, ceevent.Event, error) {
	codec := f.cfg.Log.Codec()
	var e events.Event
	var err error
	if part, _ := events.PartOf(m.Headers()); part {
		e, err = f.cfg.Log.Get(ctx, seq) // the last part: the whole event
	} else {
		e, err = codec.DecodeStored(m.Subject(), m.Headers(), m.Data())
	}
	if err != nil {
		return events.Event{}, ceevent.Event{}, err
	}
	e.Seq = seq
	nm, err := codec.Encode(e) // structured JSON, whatever mode it was stored in
	if err != nil {
		return events.Event{}, ceevent.Event{}, err
	}
	ce := ceevent.New()
	if err := json.Unmarshal(nm.Data, &ce); err != nil {
		return events.Event{}, ceevent.Event{}, fmt.Errorf("read as a CloudEvent: %w", err)
	}
	ce.SetExtension(SeqExtension, strconv.FormatUint(seq, 10)) // a string: CloudEvents integers are 32-bit
	return e, ce, nil
}

// sendTimeout bounds one attempt to send an event to the receiver.
const sendTimeout = 10 * time.Second

// backoff grows a pause from 100 ms to 5 s.
type backoff struct{ d time.Duration }

func newBackoff() *backoff { return &backoff{d: 100 * time.Millisecond} }

func (b *backoff) reset() { b.d = 100 * time.Millisecond }

func (b *backoff) wait(ctx context.Context) {
	t := time.NewTimer(b.d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
	b.d = min(2*b.d, 5*time.Second)
}
