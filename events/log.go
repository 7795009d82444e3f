package events

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Log is vmguard's event log on the VMGUARD JetStream stream: append,
// replay and follow typed events. It is safe for concurrent use.
type Log struct {
	nc      *nats.Conn
	js      jetstream.JetStream
	stream  jetstream.Stream
	codec   *Codec
	logger  *slog.Logger
	skipped atomic.Uint64
	// observer, if set (WithObserver), is told of appends and reads.
	observer Observer
	// atomic: the stream takes atomic batches (group commit, batch.go).
	atomic  bool
	async   *batcher
	batches atomic.Uint64
	// large is the last event over detachAbove that the Log decoded.
	large lastLarge
	// lone: the stream lives on one server with no raft group (no
	// cluster): no election drops a request, and a consumer cannot be
	// left on a peer out of reach, so a create with no answer in time
	// while connected is one queued behind others (createQueued).
	lone bool
}

// lastLarge keeps the last large event a Log decoded, by stream sequence:
// the readers that share a Log (host managers of one process on one
// connection, bench scale's groups) each read the same configuration,
// 3.6 MB at 10,000 packages, and one decode then serves them all (five
// passes over its bytes each, 17 % of the CPU of a 1,000-node cold start;
// docs/bench/scale.md, session 11). Events are values and readers do not
// change the payloads they are handed.
type lastLarge struct {
	mu  sync.Mutex
	seq uint64
	e   Event
}

// get returns the event at seq if it is the one kept.
func (c *lastLarge) get(seq uint64) (Event, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.e, c.seq == seq && seq > 0
}

// put keeps e, decoded at seq.
func (c *lastLarge) put(seq uint64, e Event) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.seq, c.e = seq, e
}

// Option configures Open.
type Option func(*logOptions) error

type logOptions struct {
	replicas int
	logger   *slog.Logger
	create   bool
	observer Observer
}

// WithReplicas sets the stream's replica count when Open creates it (1 to 5).
func WithReplicas(n int) Option {
	return func(o *logOptions) error {
		if n < 1 || n > 5 {
			return fmt.Errorf("replicas: %d, want 1 to 5", n)
		}
		o.replicas = n
		return nil
	}
}

// WithLogger sets the logger that reports skipped events.
func WithLogger(l *slog.Logger) Option {
	return func(o *logOptions) error {
		if l == nil {
			return errors.New("logger: nil")
		}
		o.logger = l
		return nil
	}
}

// WithoutCreate makes Open fail when the stream does not exist instead of
// creating it; for clients that must not provision (guest agents).
func WithoutCreate() Option {
	return func(o *logOptions) error {
		o.create = false
		return nil
	}
}

// MaxEventSize is the largest event the stream stores (its MaxMsgSize,
// headers and body): room for the largest config a `vmguard apply` sends.
const MaxEventSize = 1 << 20

// StreamConfig returns the configuration of the VMGUARD stream: file storage,
// every event kept, a two-minute duplicate window, direct get on.
func StreamConfig(replicas int) jetstream.StreamConfig {
	if replicas < 1 {
		replicas = 1
	}
	return jetstream.StreamConfig{
		Name:        StreamName,
		Description: "vmguard event log (CloudEvents)",
		Subjects:    []string{SubjectAll},
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardNew,
		Duplicates:  2 * time.Minute,
		AllowDirect: true,
		// Atomic batches: group commit (batch.go).
		AllowAtomicPublish: true,
		Replicas:           replicas,
		MaxMsgSize:         MaxEventSize,
		// Full, the log refuses new events (DiscardNew) rather than drop
		// old ones the deciders replay: appends fail, loudly, and are
		// retried (agents keep theirs in their spools) until an operator
		// makes room.
		MaxBytes: MaxLogBytes,
	}
}

// MaxLogBytes caps the VMGUARD stream: 16 GiB, some 30 million events.
// Guests cannot fill it (their events pass the guest gate, at a bounded
// rate); a cap an operator raised (nats stream edit VMGUARD --max-bytes)
// is kept by EnsureStream.
const MaxLogBytes = 16 << 30

// EnsureStream creates the VMGUARD stream or updates it to StreamConfig;
// calling it again changes nothing.
func EnsureStream(ctx context.Context, js jetstream.JetStream, replicas int) (jetstream.Stream, error) {
	cfg := StreamConfig(replicas)
	if s, err := js.Stream(ctx, StreamName); err == nil && s.CachedInfo().Config.MaxBytes > cfg.MaxBytes {
		cfg.MaxBytes = s.CachedInfo().Config.MaxBytes // raised by an operator
	}
	s, err := js.CreateOrUpdateStream(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("ensure stream %s: %w", StreamName, err)
	}
	return s, nil
}

// StreamReplicas returns the replica count of the VMGUARD stream as the
// server has it now, and 1 if there is no stream yet. The key-value buckets
// beside the log (node leases, the failover election, snapshots) are
// created with the same count, so that `vmguard server --replicas 3` makes
// the whole system R3.
func StreamReplicas(ctx context.Context, js jetstream.JetStream) (int, error) {
	s, err := js.Stream(ctx, StreamName)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return 1, nil
	}
	if err != nil {
		return 0, fmt.Errorf("read replicas of stream %s: %w", StreamName, err)
	}
	return max(s.CachedInfo().Config.Replicas, 1), nil
}

// Replicas returns the replica count of the log's stream as the server has
// it now (see StreamReplicas).
func (l *Log) Replicas(ctx context.Context) (int, error) { return StreamReplicas(ctx, l.js) }

// Open binds a Log to the VMGUARD stream on nc, creating the stream if it
// does not exist (unless WithoutCreate).
func Open(ctx context.Context, nc *nats.Conn, opts ...Option) (*Log, error) {
	o := logOptions{replicas: 1, logger: slog.New(slog.DiscardHandler), create: true}
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return nil, fmt.Errorf("open log: %w", err)
		}
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("open jetstream: %w", err)
	}
	codec, err := NewCodec()
	if err != nil {
		return nil, err
	}
	s, err := js.Stream(ctx, StreamName)
	if errors.Is(err, jetstream.ErrStreamNotFound) && o.create {
		s, err = EnsureStream(ctx, js, o.replicas)
	}
	if err != nil {
		return nil, fmt.Errorf("open stream %s: %w", StreamName, err)
	}
	ci := s.CachedInfo()
	l := &Log{nc: nc, js: js, stream: s, codec: codec, logger: o.logger, observer: o.observer,
		atomic: ci.Config.AllowAtomicPublish, lone: ci.Cluster == nil || ci.Cluster.RaftGroup == ""}
	l.async = newBatcher(l, asyncMaxPending)
	return l, nil
}

// Codec returns the log's codec.
func (l *Log) Codec() *Codec { return l.codec }

// Conn returns the NATS connection the log uses.
func (l *Log) Conn() *nats.Conn { return l.nc }

// JetStream returns the JetStream context the log uses.
func (l *Log) JetStream() jetstream.JetStream { return l.js }

// Skipped counts the events this Log skipped on read because they were
// malformed, of an unknown type or failed their schema.
func (l *Log) Skipped() uint64 { return l.skipped.Load() }

// AppendOption is a condition on one append, given as a plain value (Expect)
// that the Log turns into what the server checks; callers never see NATS.
type AppendOption interface {
	setHeaders(nats.Header)
}

// Expect makes an append fail with ErrConflict unless the last event on the
// subjects matching Subject (a filter, e.g. PackageFilter) has stream
// sequence Seq (0: none yet): the optimistic check that makes a decision
// taken on a folded state stand only if nothing it depends on changed.
type Expect struct {
	Subject string
	Seq     uint64
}

// setHeaders sets the server's expected-last-subject-sequence check.
func (x Expect) setHeaders(h nats.Header) {
	h.Set(jetstream.ExpectedLastSubjSeqHeader, strconv.FormatUint(x.Seq, 10))
	h.Set(jetstream.ExpectedLastSubjSeqSubjHeader, x.Subject)
}

// ExpectLastSeq returns Expect{Subject: filter, Seq: seq}.
func ExpectLastSeq(filter string, seq uint64) Expect {
	return Expect{Subject: filter, Seq: seq}
}

// ExpectPackageSeq makes the append fail with ErrConflict if anything about
// package pkg was written after stream sequence seq, the last one the caller
// saw about it.
func ExpectPackageSeq(pkg string, seq uint64) Expect {
	return Expect{Subject: PackageFilter(pkg), Seq: seq}
}

// encode encodes e with opts applied.
func (l *Log) encode(e Event, opts []AppendOption) (*nats.Msg, error) {
	m, err := l.codec.Encode(e)
	if err != nil {
		return nil, err
	}
	for _, o := range opts {
		if o != nil {
			o.setHeaders(m.Header)
		}
	}
	return m, nil
}

// Append validates e, stores it and returns its stream sequence once the
// server acknowledged it. A repeat of an already stored id (within the
// duplicate window) is stored once and returns the first one's sequence.
func (l *Log) Append(ctx context.Context, e Event, opts ...AppendOption) (uint64, error) {
	m, err := l.encode(e, opts)
	if err != nil {
		return 0, err
	}
	return l.publish(ctx, e, m)
}

func isConflict(err error) bool {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		return apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
			apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant
	}
	return false
}

// AppendAsync validates e and sends it without waiting for the server; the
// returned Appending reports the outcome. Use Flush to wait for all of them.
// Events appended while earlier ones wait for their ack go out together in
// atomic batches (group commit: one fsync a batch in the durable default);
// a batch the server refuses as a whole, for a failed expected-sequence
// check or a repeated id, is sent again one event at a time, so each event
// gets the outcome it would have had alone. On a stream without atomic
// batches every event goes out on its own, in the order appended. A busy
// writer waits for room (back-pressure) rather than failing when the
// server falls behind, e.g. with an fsync per write.
func (l *Log) AppendAsync(e Event, opts ...AppendOption) (*Appending, error) {
	m, err := l.encode(e, opts)
	if err != nil {
		return nil, err
	}
	if l.partSize(m) > 0 {
		return nil, fmt.Errorf("append %s: %w: %d bytes for one message; Append stores it in parts", e.Type(), ErrTooLarge, len(m.Data))
	}
	a := &Appending{e: e, m: m, done: make(chan struct{})}
	if err := l.async.add(a); err != nil {
		return nil, err
	}
	return a, nil
}

// asyncStallWait bounds how long AppendAsync waits for room among the
// unacknowledged messages.
const asyncStallWait = 30 * time.Second

// asyncMaxPending bounds the events AppendAsync holds unacknowledged.
const asyncMaxPending = 8192

// Flush waits until every AppendAsync so far was acknowledged or failed.
func (l *Log) Flush(ctx context.Context) error {
	return l.async.flush(ctx)
}

// LastSeq returns the stream's last sequence (0 when empty).
func (l *Log) LastSeq(ctx context.Context) (uint64, error) {
	info, err := l.stream.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("stream info: %w", err)
	}
	return info.State.LastSeq, nil
}

// Last returns the last well-formed event stored on subject (which may hold
// wildcards), and false if there is none. Malformed messages are skipped,
// counted and logged as Replay skips them: one bad message neither fails
// Last nor hides the events before it. See Tail for the sequence an
// expected-sequence append must name.
func (l *Log) Last(ctx context.Context, subject string) (Event, bool, error) {
	t, err := l.Tail(ctx, subject)
	return t.Event, t.Found, err
}

// SubjectTail is what the end of a subject holds.
type SubjectTail struct {
	// Event is the last well-formed event on the subject, if Found.
	Event Event
	Found bool
	// Seq is the stream sequence of the last message on the subject,
	// well-formed or not (0: none): the one an ExpectLastSeq append on the
	// subject must name, or it conflicts forever with a message it cannot
	// read.
	Seq uint64
}

// Tail reads the end of subject (which may hold wildcards) in one go: its
// last well-formed event and the sequence of its last message. Malformed
// messages are skipped, counted and logged as Replay skips them; finding
// the event before a malformed last message reads the subject from the
// start.
func (l *Log) Tail(ctx context.Context, subject string) (SubjectTail, error) {
	raw, err := l.stream.GetLastMsgForSubject(ctx, subject)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return SubjectTail{}, nil
	}
	if err != nil {
		return SubjectTail{}, fmt.Errorf("get last %s: %w", subject, err)
	}
	if body, err := l.wholeAt(ctx, raw); err == nil {
		if e, err := l.codec.decodeStored(raw.Subject, raw.Header, body, true); err == nil {
			e.Seq = raw.Sequence
			return SubjectTail{Event: e, Found: true, Seq: raw.Sequence}, nil
		}
	}
	// The replay skips, counts and logs this message and any other bad one.
	var t SubjectTail
	last, err := l.Replay(ctx, ReadOptions{Subjects: []string{subject}}, func(e Event) error {
		t.Event, t.Found = e, true
		return nil
	})
	if err != nil {
		return SubjectTail{}, fmt.Errorf("read last %s: %w", subject, err)
	}
	t.Seq = max(raw.Sequence, last)
	return t, nil
}

// First returns the stream sequence of the first message stored on
// subject (which may hold wildcards) at or after sequence from, and false if
// there is none. It reads one message (a direct get where the stream
// allows it) and decodes nothing: a reader uses it to learn where a subject
// begins without a consumer.
func (l *Log) First(ctx context.Context, subject string, from uint64) (uint64, bool, error) {
	raw, err := l.stream.GetMsg(ctx, max(from, 1), jetstream.WithGetMsgSubject(subject))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("get first %s: %w", subject, err)
	}
	return raw.Sequence, true, nil
}

// Get returns the event at stream sequence seq. A malformed message there is
// counted and logged as Replay skips one, and the error wraps ErrInvalid or
// ErrUnknownType, so callers can tell it from a failed read.
func (l *Log) Get(ctx context.Context, seq uint64) (Event, error) {
	raw, err := l.stream.GetMsg(ctx, seq)
	if err != nil {
		return Event{}, fmt.Errorf("get event %d: %w", seq, err)
	}
	return l.decodeAt(ctx, raw)
}

// Next returns the first event stored on subject (which may hold
// wildcards) at or after sequence from, and false if there is none: a
// direct get, no consumer. A malformed message there is counted and
// logged as Get does; the error wraps ErrInvalid or ErrUnknownType and the
// event holds only its sequence, so that the caller can skip it and go
// on. A reader of a few messages of a subject uses it rather than a
// consumer, whose creation costs the server a walk of the stream's
// subjects (with many filters) or of a block's for each message.
func (l *Log) Next(ctx context.Context, subject string, from uint64) (Event, bool, error) {
	raw, err := l.stream.GetMsg(ctx, max(from, 1), jetstream.WithGetMsgSubject(subject))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return Event{}, false, nil
	}
	if err != nil {
		return Event{}, false, fmt.Errorf("get next %s: %w", subject, err)
	}
	e, err := l.decodeAt(ctx, raw)
	if err != nil {
		e = Event{Seq: raw.Sequence}
	}
	return e, true, err
}

// decodeAt decodes the event whose last message raw is (Get, Next).
func (l *Log) decodeAt(ctx context.Context, raw *jetstream.RawStreamMsg) (Event, error) {
	seq := raw.Sequence
	body, err := l.wholeAt(ctx, raw)
	if err != nil && !errors.Is(err, ErrInvalid) {
		return Event{}, fmt.Errorf("get event %d: %w", seq, err)
	}
	var e Event
	if err == nil {
		e, err = l.codec.decodeStored(raw.Subject, raw.Header, body, true)
	}
	if err != nil {
		l.skip(raw.Sequence, raw.Subject, err)
		return Event{}, fmt.Errorf("decode event %d: %w", seq, err)
	}
	e.Seq = raw.Sequence
	return e, nil
}
