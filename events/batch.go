package events

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Group commit. In the durable default (sync: always) a JetStream server
// fsyncs once per stored message, so appends one at a time top out at a
// few thousand a second however many are in flight. An atomic batch
// publish (nats-server 2.12+, the stream's allow_atomic on) is stored all
// or nothing, and since 2.15 a single server fsyncs a whole batch once
// (stream.go, coalesceSync). Log uses it for AppendBatch and for bursts
// of AppendAsync, speaking the batch headers directly:
//
//	Nats-Batch-Id        the batch (≤ 64 characters), on every message
//	Nats-Batch-Sequence  1, 2, ... on every message
//	Nats-Batch-Commit    "1" on the last, which alone asks for the ack
//
// What the server allows per message inside a batch (2.15.2,
// jetstream_batching.go checkMsgHeadersPreClusteredProposal), and what
// vmguard relies on:
//   - Nats-Msg-Id on every message, but a batch holding an id twice, or an
//     id already stored within the duplicate window, is refused as a whole
//     (10201, "batch contains duplicate message id"), not deduplicated. A
//     retried batch is therefore refused; Log then appends its events one
//     by one, each deduplicated as a retried Append is: nothing is stored
//     twice, an unguarded event returns its first copy's sequence, and a
//     guarded one whose expectation its first copy made stale conflicts
//     (the server checks expectations before ids, batch or not).
//   - Nats-Expected-Last-Subject-Sequence (with ...-Subject, vmguard's
//     per-package filter) on any message, checked against the log as it
//     was before the batch: two messages of one batch that check the same
//     filter must name the same sequence; the batch's own writes do not
//     count for a wildcard filter, but a check on a literal subject the
//     batch already wrote to is refused (sim/conformance_test.go,
//     atomic_batch). A failed check refuses the
//     whole batch (ErrConflict): a decision and its follow-ups about one
//     package all name the sequence the decision was made on.
//   - Nats-Expected-Last-Sequence only on the first message;
//     Nats-Expected-Last-Msg-Id not at all (vmguard uses neither).
//   - At most 1,000 messages a batch and 50 batches open per stream
//     (server defaults).
//
// A stream created before allow_atomic (Open does not change an existing
// stream; EnsureStream does) makes AppendBatch append one by one, not
// atomically, and AppendAsync send each event on its own.

// Batch headers, as nats-server names them.
const (
	batchIDHeader     = "Nats-Batch-Id"
	batchSeqHeader    = "Nats-Batch-Sequence"
	batchCommitHeader = "Nats-Batch-Commit"
)

// maxBatch is the most events one atomic batch holds (the server's default
// limit).
const maxBatch = 1000

// MaxBatch is the most events AppendBatch stores in one atomic batch; a
// larger one is appended one event at a time.
const MaxBatch = maxBatch

// batchTimeout bounds the wait for a batch's ack.
const batchTimeout = 30 * time.Second

// BatchItem is one event of an AppendBatch and the options of its append.
type BatchItem struct {
	Event Event
	Opts  []AppendOption
}

// AppendBatch validates every event and stores them in order in one atomic
// batch: all of them or, if any expected-sequence check fails (ErrConflict)
// or any is invalid, none. It returns their stream sequences. In the
// durable default the server syncs the batch to disk once. A batch the
// server refuses for now (too many batches open, incomplete) is sent again
// whole until ctx ends (sendBatchAgain). Batches larger than the server
// allows (1,000), a stream without atomic batches, and a batch refused
// because it repeats stored ids (a retry) are appended one event at a time
// instead, each deduplicated by its id as a retried Append is. Any other
// refusal is returned: nothing was stored.
func (l *Log) AppendBatch(ctx context.Context, items ...BatchItem) ([]uint64, error) {
	msgs := make([]*nats.Msg, len(items))
	for i, it := range items {
		m, err := l.encode(it.Event, it.Opts)
		if err != nil {
			return nil, err
		}
		msgs[i] = m
	}
	if len(msgs) == 0 {
		return nil, nil
	}
	if len(msgs) > 1 {
		for i, m := range msgs {
			if l.partSize(m) > 0 {
				return nil, fmt.Errorf("append batch: %s: %w: %d bytes for one message; Append stores it alone, in parts", items[i].Event.Type(), ErrTooLarge, len(m.Data))
			}
		}
	}
	if l.atomic && len(msgs) > 1 && len(msgs) <= maxBatch {
		sent := time.Now()
		first, err := l.sendBatchAgain(ctx, msgs)
		if err == nil {
			l.batches.Add(1)
			seqs := make([]uint64, len(msgs))
			for i := range seqs {
				seqs[i] = first + uint64(i)
			}
			for i, it := range items {
				l.observeAppend(it.Event, msgs[i], sent, nil)
			}
			return seqs, nil
		}
		if isConflict(err) {
			err = fmt.Errorf("append batch of %d: %w", len(msgs), ErrConflict)
			for i, it := range items {
				l.observeAppend(it.Event, msgs[i], sent, err)
			}
			return nil, err
		}
		if ctx.Err() != nil || !oneByOneAfter(err) {
			return nil, fmt.Errorf("append batch of %d: %w", len(msgs), err)
		}
		// Refused as a whole because it repeats stored ids (a retry):
		// one by one, each deduplicated, gives every event the outcome a
		// retried Append has.
		l.logger.Debug("append batch: appending one by one", "events", len(msgs), "err", err)
	}
	seqs := make([]uint64, 0, len(msgs))
	for i, m := range msgs {
		seq, err := l.publish(ctx, items[i].Event, m)
		if err != nil {
			return seqs, err
		}
		seqs = append(seqs, seq)
	}
	return seqs, nil
}

// A batch refused for want of room (the server's 50 open batches a
// stream, which a cluster's host managers' group commits fill) or left
// incomplete (a message of it lost or late under load) stored nothing: it
// is sent again, whole, after a pause that grows, until the append's
// context ends (batchTimeout without a deadline). It must not go one by
// one: the markers that guard a decision on other packages' state
// (failover's guarded) hold only inside one atomic batch, and a marker
// stored without its decision misleads its readers (454 of them in a
// 300-node `vmguard bench scale`, session 9).
const (
	batchAgainFirst = 10 * time.Millisecond
	batchAgainMax   = 500 * time.Millisecond
)

// sendBatchAgain sends msgs as one atomic batch (sendBatch), again while
// the server refuses it for want of room or as incomplete.
func (l *Log) sendBatchAgain(ctx context.Context, msgs []*nats.Msg) (uint64, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, batchTimeout)
		defer cancel()
	}
	pause := batchAgainFirst
	for {
		first, err := l.sendBatch(ctx, msgs)
		if err == nil || !batchBusy(err) {
			return first, err
		}
		l.logger.Debug("append batch: refused for now; sending it again", "events", len(msgs), "err", err, "after", pause)
		t := time.NewTimer(pause)
		select {
		case <-ctx.Done():
			t.Stop()
			return 0, fmt.Errorf("%w (last refusal: %w)", ctx.Err(), err)
		case <-t.C:
		}
		pause = min(2*pause, batchAgainMax)
	}
}

// Server error codes of atomic batches (nats-server's
// jetstream_errors_generated.go).
const (
	errCodeBatchDisabled   = 10174 // the stream has no allow_atomic
	errCodeBatchIncomplete = 10176 // a message missing, late or the batch timed out
	errCodeBatchDuplicate  = 10201 // holds an id already stored (a retry)
	errCodeBatchInflight   = 10210 // too many batches open
)

// batchBusy reports whether the server refused a batch, storing nothing,
// for a reason that passes: too many batches open, or an incomplete one.
func batchBusy(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) &&
		(apiErr.ErrorCode == errCodeBatchInflight || apiErr.ErrorCode == errCodeBatchIncomplete)
}

// oneByOneAfter reports whether a batch refused with err may be appended
// one event at a time: only when it repeats stored ids (dedup gives each
// its first copy's outcome) or the stream has no atomic batches.
func oneByOneAfter(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) &&
		(apiErr.ErrorCode == errCodeBatchDuplicate || apiErr.ErrorCode == errCodeBatchDisabled)
}

// Batches counts the atomic batches this Log stored (AppendBatch and the
// batches AppendAsync groups its events into).
func (l *Log) Batches() uint64 { return l.batches.Load() }

// publish stores one encoded event and reports it to the observer.
func (l *Log) publish(ctx context.Context, e Event, m *nats.Msg) (uint64, error) {
	sent := time.Now()
	var seq uint64
	var err error
	if size := l.partSize(m); size > 0 {
		seq, err = l.publishParts(ctx, m, size)
	} else {
		var ack *jetstream.PubAck
		if ack, err = l.js.PublishMsg(ctx, m); err == nil {
			seq = ack.Sequence
		}
	}
	if err != nil {
		if isConflict(err) {
			err = fmt.Errorf("append %s: %w", e.Type(), ErrConflict)
		} else {
			err = fmt.Errorf("append %s: %w", e.Type(), err)
		}
		l.observeAppend(e, m, sent, err)
		return 0, err
	}
	l.observeAppend(e, m, sent, nil)
	return seq, nil
}

// batchAck is the server's answer to a batch's commit.
type batchAck struct {
	Error *struct {
		Code        int    `json:"code"`
		ErrCode     uint16 `json:"err_code"`
		Description string `json:"description"`
	} `json:"error"`
	Seq   uint64 `json:"seq"`
	Count uint64 `json:"count"`
}

// sendBatch sends msgs as one atomic batch and returns the stream sequence
// of the first; an error means nothing was stored, or (ctx ended) that the
// outcome is unknown. It leaves msgs without batch headers.
func (l *Log) sendBatch(ctx context.Context, msgs []*nats.Msg) (uint64, error) {
	id := NewID()
	defer func() {
		for _, m := range msgs {
			m.Header.Del(batchIDHeader)
			m.Header.Del(batchSeqHeader)
			m.Header.Del(batchCommitHeader)
		}
	}()
	last := len(msgs) - 1
	for i, m := range msgs {
		m.Header.Set(batchIDHeader, id)
		m.Header.Set(batchSeqHeader, strconv.Itoa(i+1))
		if i < last {
			if err := l.nc.PublishMsg(m); err != nil {
				return 0, fmt.Errorf("send batch: %w", err)
			}
		}
	}
	msgs[last].Header.Set(batchCommitHeader, "1")
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, batchTimeout)
		defer cancel()
	}
	resp, err := l.nc.RequestMsgWithContext(ctx, msgs[last])
	if err != nil {
		return 0, fmt.Errorf("commit batch: %w", err)
	}
	var ack batchAck
	if err := json.Unmarshal(resp.Data, &ack); err != nil {
		return 0, fmt.Errorf("commit batch: read ack %q: %w", resp.Data, err)
	}
	if ack.Error != nil {
		return 0, fmt.Errorf("commit batch: %w", &jetstream.APIError{Code: ack.Error.Code, ErrorCode: jetstream.ErrorCode(ack.Error.ErrCode), Description: ack.Error.Description})
	}
	if ack.Count != 0 && ack.Count != uint64(len(msgs)) {
		return 0, fmt.Errorf("commit batch: server stored %d of %d", ack.Count, len(msgs))
	}
	if ack.Seq < uint64(len(msgs)) {
		return 0, fmt.Errorf("commit batch: ack sequence %d for %d events", ack.Seq, len(msgs))
	}
	return ack.Seq - uint64(last), nil
}

// Appending is one AppendAsync on its way to the log: Done is closed once
// its outcome is known, and Result then reports it.
type Appending struct {
	e    Event
	m    *nats.Msg
	done chan struct{}
	seq  uint64
	err  error
}

// Done is closed once the append is stored or failed.
func (a *Appending) Done() <-chan struct{} { return a.done }

// Result returns the event's stream sequence, or why it was not stored
// (ErrConflict for a failed Expect); before Done is closed it returns 0 and
// ErrPending.
func (a *Appending) Result() (uint64, error) {
	select {
	case <-a.done:
		return a.seq, a.err
	default:
		return 0, ErrPending
	}
}

// Wait waits for the append's outcome (see Result) or for ctx to end.
func (a *Appending) Wait(ctx context.Context) (uint64, error) {
	select {
	case <-a.done:
		return a.seq, a.err
	case <-ctx.Done():
		return 0, fmt.Errorf("wait for append %s: %w", a.e.Type(), ctx.Err())
	}
}

// resolve records the outcome and closes Done.
func (a *Appending) resolve(seq uint64, err error) {
	a.seq, a.err = seq, err
	close(a.done)
}

// batcher turns bursts of AppendAsync into atomic batches: while one batch
// waits for its ack, the events appended meanwhile queue up and go out
// together as the next, up to maxBatch. One batch is in flight at a time,
// so that a batch sent again one by one cannot be overtaken by the next:
// events are stored in the order appended. A sender goroutine runs only
// while events are queued or in flight.
type batcher struct {
	log   *Log
	slots chan struct{} // one per queued or unacknowledged event: back-pressure
	mu    sync.Mutex
	queue []*Appending
	busy  bool
	idle  chan struct{} // closed when the sender that runs now ends
}

func newBatcher(l *Log, maxPending int) *batcher {
	return &batcher{log: l, slots: make(chan struct{}, maxPending)}
}

// add queues a, waiting up to asyncStallWait for room.
func (b *batcher) add(a *Appending) error {
	select {
	case b.slots <- struct{}{}:
	default:
		t := time.NewTimer(asyncStallWait)
		defer t.Stop()
		select {
		case b.slots <- struct{}{}:
		case <-t.C:
			return fmt.Errorf("append %s: %w", a.e.Type(), ErrStalled)
		}
	}
	b.mu.Lock()
	b.queue = append(b.queue, a)
	if !b.busy {
		b.busy = true
		b.idle = make(chan struct{})
		go b.run()
	}
	b.mu.Unlock()
	return nil
}

// run sends the queue in batches until it is empty.
func (b *batcher) run() {
	for {
		b.mu.Lock()
		if len(b.queue) == 0 {
			b.busy = false
			close(b.idle)
			b.mu.Unlock()
			return
		}
		n := min(len(b.queue), maxBatch)
		batch := make([]*Appending, n)
		copy(batch, b.queue)
		b.queue = append(b.queue[:0], b.queue[n:]...)
		b.mu.Unlock()
		b.commit(batch)
		for range batch {
			<-b.slots
		}
	}
}

// commit stores batch and resolves each future.
func (b *batcher) commit(batch []*Appending) {
	l := b.log
	ctx, cancel := context.WithTimeout(context.Background(), batchTimeout)
	defer cancel()
	if l.atomic && len(batch) > 1 {
		msgs := make([]*nats.Msg, len(batch))
		for i, a := range batch {
			msgs[i] = a.m
		}
		first, err := l.sendBatch(ctx, msgs)
		if err == nil {
			l.batches.Add(1)
			for i, a := range batch {
				a.resolve(first+uint64(i), nil)
			}
			return
		}
		// Nothing was stored (a conflict or a repeated id refuses the
		// whole batch) or the outcome is unknown (no ack in time): one
		// by one, each deduplicated by its id, gives every event its own
		// outcome.
		l.logger.Debug("append async: batch refused, appending one by one", "events", len(batch), "err", err)
	}
	for _, a := range batch {
		// Each its own bound: a thousand fsynced appends in a row may take
		// longer than one batch's.
		actx, acancel := context.WithTimeout(context.Background(), batchTimeout)
		ack, err := l.js.PublishMsg(actx, a.m)
		acancel()
		switch {
		case err == nil:
			a.resolve(ack.Sequence, nil)
		case isConflict(err):
			a.resolve(0, fmt.Errorf("append %s: %w", a.e.Type(), ErrConflict))
		default:
			a.resolve(0, fmt.Errorf("append %s: %w", a.e.Type(), err))
		}
	}
}

// flush waits until every event queued so far is acknowledged or failed.
func (b *batcher) flush(ctx context.Context) error {
	b.mu.Lock()
	busy, idle := b.busy, b.idle
	b.mu.Unlock()
	if !busy {
		return nil
	}
	select {
	case <-idle:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("flush: %w", ctx.Err())
	}
}
