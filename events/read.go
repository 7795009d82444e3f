package events

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// ReadOptions selects what Replay and Follow read. The zero value reads every
// event from the start.
type ReadOptions struct {
	// StartSeq starts at this stream sequence (0: the start).
	StartSeq uint64
	// StartTime starts at the first event stored at or after this time.
	StartTime time.Time
	// Subjects filters by subject (see PackageFilter, NodeFilter); empty: all.
	Subjects []string
	// OnSkip, if set, is called in stream order for each message skipped as
	// malformed. Deciders use it to advance the last sequence they saw on
	// that subject, so that an expected-sequence append does not conflict
	// forever with a message they can never read.
	OnSkip func(seq uint64, subject string)
	// Count, if set, counts every message delivered (decoded or skipped)
	// and its subject, header and payload bytes: what a reader asked the
	// server for, to measure read volume.
	Count *ReadCount
	// ClusterWait (Replay) bounds how long a replay keeps asking for its
	// consumer while the cluster answers that it cannot serve it yet
	// (Transient: no meta leader after a partition healed, a stream leader
	// being elected). 0: one attempt, for callers that retry by themselves.
	ClusterWait time.Duration
}

// ReadCount counts the messages a reader received and their bytes
// (subject, headers and payload). Safe for concurrent use.
type ReadCount struct {
	Messages atomic.Uint64
	Bytes    atomic.Uint64
	// Pending is how many messages of the reader's selection the server
	// held behind the last one delivered: its lag, as of that delivery.
	Pending atomic.Uint64
	// Creates counts the consumers the reader asked the server for,
	// answered or not: each costs the server a walk of the stream's
	// subjects that its filter selects (bench scale reports them).
	Creates atomic.Uint64
	// Kept counts the follower's consumers whose heartbeats came late and
	// that were read on, since they answered (Follow).
	Kept atomic.Uint64
	// Late counts the consumers whose create got no answer in time and
	// that were found made all the same, and used (Log.create).
	Late atomic.Uint64
}

// late counts a consumer found made after its create got no answer.
func (c *ReadCount) late() {
	if c != nil {
		c.Late.Add(1)
	}
}

// kept counts a consumer read on after late heartbeats.
func (c *ReadCount) kept() {
	if c != nil {
		c.Kept.Add(1)
	}
}

// created counts a consumer create request.
func (c *ReadCount) created() {
	if c != nil {
		c.Creates.Add(1)
	}
}

// add counts m, delivered with pending messages behind it.
func (c *ReadCount) add(m jetstream.Msg, pending uint64) {
	if c == nil {
		return
	}
	c.Pending.Store(pending)
	n := len(m.Subject()) + len(m.Data())
	for k, vs := range m.Headers() {
		for _, v := range vs {
			n += len(k) + len(v) + 4 // "k: v\r\n"
		}
	}
	c.Messages.Add(1)
	c.Bytes.Add(uint64(n))
}

// ForPackage returns ReadOptions reading every event about package pkg.
func ForPackage(pkg string) ReadOptions { return ReadOptions{Subjects: []string{PackageFilter(pkg)}} }

// consumer is the configuration of a reader's consumer for ro: delivering
// from where ro starts, without acknowledgements, in memory, and removed by
// the server after inactive without a reader. The caller sets its filter.
//
// The consumer is named here, so that a create that fails can delete
// what a late answer made (createdNot).
func (ro ReadOptions) consumer(inactive time.Duration) jetstream.ConsumerConfig {
	cfg := jetstream.ConsumerConfig{
		Name:              consumerName(),
		DeliverPolicy:     jetstream.DeliverAllPolicy,
		AckPolicy:         jetstream.AckNonePolicy,
		MemoryStorage:     true,
		InactiveThreshold: inactive,
	}
	switch {
	case ro.StartSeq > 0:
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, ro.StartSeq
	case !ro.StartTime.IsZero():
		t := ro.StartTime
		cfg.DeliverPolicy, cfg.OptStartTime = jetstream.DeliverByStartTimePolicy, &t
	}
	return cfg
}

// Handler receives one decoded event; an error stops the read and is returned.
type Handler func(Event) error

// readBuffer bounds the bytes a replay or a follower has asked the server
// for and not read yet: a bound in bytes, not in messages, so that a flood
// of maximum-size messages (a guest publishing junk on its subject) cannot
// queue gigabytes on the connection in front of everything else it
// carries (a host manager's lease renewals and heartbeats, requests to
// agents). Four maximum-size events; thousands of ordinary ones.
const readBuffer = 4 * MaxEventSize

// readMessages bounds the messages a read asks for at once. nats.go sizes
// the iterator's channel by it: with a byte bound alone (PullMaxBytes) it
// asks for up to 1,000,000 messages and makes a channel of as many
// pointers, 8 MB per reader, which the pages it cycles through keep
// resident (the bench scale heap profile: 320 MB in pullConsumer.Messages
// for 40 followers). 4,096 ordinary events are a few MB.
const readMessages = 4096

// pullLimit is a follower's pull option: readMessages messages and
// readBuffer bytes at most (a replay asks Consume for the same).
func pullLimit() jetstream.PullMessagesOpt {
	return jetstream.PullMaxMessagesWithBytesLimit(readMessages, readBuffer)
}

// Replay reads the events selected by ro that are in the log now, in stream
// order, and returns the stream sequence of the last message it read (0 if
// none). Malformed events are skipped, counted and logged, the same way on
// every replay.
//
// Messages lost on their way (a connection the server cut as a slow
// consumer: a replay's consumer takes no acks, so nothing is sent again)
// are read again: the replay resumes after the last event it handed to fn,
// at most replayResumes times in a row without progress, then ends with
// ErrDeliveryLost.
func (l *Log) Replay(ctx context.Context, ro ReadOptions, fn Handler) (uint64, error) {
	var last uint64
	for resumes, stuck := 0, 0; ; resumes++ {
		got, err := l.replayOnce(ctx, ro, fn, replayPull(resumes, l.nc.MaxPayload()))
		if got > last {
			last, stuck = got, 0
		} else {
			stuck++
		}
		if !errors.Is(err, ErrDeliveryLost) || ctx.Err() != nil || stuck >= replayResumes {
			return last, err
		}
		l.logger.Warn("replay: messages were lost in delivery; reading again after the last event handed on", "err", err, "after", last, "resumes", resumes+1)
		if last > 0 {
			ro.StartSeq, ro.StartTime = last+1, time.Time{}
		}
	}
}

// replayResumes bounds a replay's resumes after lost messages
// (ErrDeliveryLost) that made no progress in a row.
const replayResumes = 5

// replayPull is what a replay asks its consumer for at once: readMessages
// and readBuffer, a quarter of it for each resume after lost messages (a
// reader the server cut as a slow consumer asks for less), never less than
// 64 messages or room for the largest message (maxPayload).
func replayPull(resumes int, maxPayload int64) jetstream.PullConsumeOpt {
	shift := 2 * min(resumes, 8)
	msgs := max(readMessages>>shift, 64)
	bytes := max(readBuffer>>shift, int(maxPayload)+partRoom)
	return jetstream.PullMaxMessagesWithBytesLimit(msgs, bytes)
}

// replayOnce is one replay's consumer, read to its end (Replay).
func (l *Log) replayOnce(ctx context.Context, ro ReadOptions, fn Handler, pull jetstream.PullConsumeOpt) (uint64, error) {
	end := l.replayEnd(ctx, ro)
	cfg := ro.consumer(time.Minute)
	cfg.FilterSubjects = ro.Subjects
	cons, err := l.createReplayConsumer(ctx, cfg, ro.ClusterWait, ro.Count)
	if err != nil {
		return 0, fmt.Errorf("replay: create consumer: %w", err)
	}
	name := cons.CachedInfo().Name
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = l.stream.DeleteConsumer(dctx, name) // it also expires by InactiveThreshold
	}()
	// A consumer holding nothing though the log's end is at or past its
	// start: its server is behind the leader (or the last messages were
	// removed) from the outset, and the wait for the end is bounded from
	// now, not from a first message that may never come.
	empty := cons.CachedInfo().NumPending == 0
	if empty && end == 0 {
		return 0, nil
	}
	return l.decodeOrdered(ctx, cons, fn, replayRead{onSkip: ro.OnSkip, count: ro.Count, end: end, lagging: empty, pull: pull})
}

// replayHeartbeat is how often a replay's consumer says it is there while
// it has nothing to deliver. Two missed mean its pull request was lost —
// in a cluster the client's server may not know yet where the new consumer
// lives and drop the first pull (TestReplayReadsWhatWasAcknowledged saw a
// replay deliver nothing for 30 s) — and nats.go asks again;
// replayPullRetries such misses in a row end the replay with an error.
const (
	replayHeartbeat   = time.Second
	replayPullRetries = 3
)

// replayLagWait bounds how long a replay waits for its consumer's server
// to hold the log's end (replayEnd) once it has delivered all it holds.
const replayLagWait = 10 * time.Second

// replayEnd returns the last sequence of the log as its stream leader
// answers it, for an unfiltered replay from a known sequence; 0 where the
// replay cannot wait for it (a filter, a start time, a start past the end,
// no answer).
//
// In a cluster the server places a replay's consumer (one replica) on any
// server of the stream, and a follower may not hold yet the last events the
// leader acknowledged: the consumer then reports nothing pending before the
// log's end, and a replay that stops there misses events appended before
// it began (TestLargeEventInPartsR3 saw 3 of 248 missing under load). With
// the end known, the replay reads on until it has delivered it. A filtered
// replay (a host manager's) cannot know its last matching sequence and
// keeps the follower's view; the host manager follows from where it ended.
func (l *Log) replayEnd(ctx context.Context, ro ReadOptions) uint64 {
	if len(ro.Subjects) > 0 || !ro.StartTime.IsZero() {
		return 0
	}
	ictx, cancel := context.WithTimeout(ctx, followCreateMaxWait)
	defer cancel()
	info, err := l.stream.Info(ictx)
	if err != nil {
		l.logger.Debug("replay: read the log's end; replaying what the consumer holds", "err", err)
		return 0
	}
	if info.State.LastSeq < ro.StartSeq {
		return 0
	}
	return info.State.LastSeq
}

// createReplayConsumer creates a replay's consumer, trying again while the
// cluster answers that it cannot yet (Transient), until wait has passed
// (0: one attempt). Each attempt is bounded like a follower's.
func (l *Log) createReplayConsumer(ctx context.Context, cfg jetstream.ConsumerConfig, wait time.Duration, count *ReadCount) (jetstream.Consumer, error) {
	deadline := time.Now().Add(wait)
	retry := followRetryMin
	for attempt := 1; ; attempt++ {
		cons, err := l.create(ctx, cfg, followCreateMaxWait, count)
		if err == nil || ctx.Err() != nil || !Transient(err) || l.nc.IsClosed() {
			return cons, err
		}
		l.createdNot(ctx, &cfg)
		if !time.Now().Before(deadline) {
			if attempt > 1 {
				err = fmt.Errorf("%w (tried %d times for %v)", err, attempt, wait)
			}
			return nil, err
		}
		if attempt == 3 {
			l.logger.Warn("replay: create consumer; retrying", "err", err, "up_to", time.Until(deadline).Round(time.Second))
		}
		if err := pause(ctx, retry); err != nil {
			return nil, err
		}
		retry = min(2*retry, followRetryMax)
	}
}

// Transient reports whether err from a JetStream request may go away by
// itself: no answer (a timeout, no responders, a connection coming up) or
// an API error that says the cluster cannot serve the request yet (no meta
// leader, no peers, a stream leader being elected).
func Transient(err error) bool {
	var apiErr *jetstream.APIError
	if !errors.As(err, &apiErr) {
		return true
	}
	switch apiErr.ErrorCode {
	case 10005, // no suitable peers for placement
		10008, // JetStream system temporarily unavailable
		10009, // cluster can not handle request
		10023, // insufficient resources
		10040: // peer not a member
		return true
	}
	return apiErr.Code == 503
}

// decodeBatch is how many messages one decoding job holds.
const decodeBatch = 256

// decodeJob is a batch of raw messages decoded by a worker; done is closed
// when events holds the results, in order.
type decodeJob struct {
	msgs   []rawMsg
	seqs   []uint64
	events []Event
	ok     []bool
	done   chan struct{}
}

// replaySource is what a replay reads: its consumer (a fake in
// BenchmarkReplayPipeline).
type replaySource interface {
	Consume(jetstream.MessageHandler, ...jetstream.PullConsumeOpt) (jetstream.ConsumeContext, error)
}

// replayRead is how decodeOrdered reads: what it tells of skipped
// messages (onSkip) and counts (count), the log's end it waits for (end,
// lagging: replayEnd) and what it asks for at once (pull: replayPull).
type replayRead struct {
	onSkip  func(uint64, string)
	count   *ReadCount
	end     uint64
	lagging bool
	pull    jetstream.PullConsumeOpt
}

// decodeOrdered reads messages until the consumer has none pending, decodes
// them on several cores (decoding and schema checks cost more than reading)
// and hands them to fn in stream order: a reader (replayReader), decoding
// workers (decodeJobs) and the in-order hand-off here. With end (replayEnd)
// it reads on until it has delivered end, waiting at most replayLagWait once
// the consumer has delivered all it holds (lagging: it held nothing from the
// start).
func (l *Log) decodeOrdered(ctx context.Context, src replaySource, fn Handler, rr replayRead) (uint64, error) {
	workers := runtime.GOMAXPROCS(0)
	r := &replayReader{
		l: l, count: rr.count, end: rr.end,
		jobs:    make(chan *decodeJob, workers*2),
		ordered: make(chan *decodeJob, workers*2),
		readErr: make(chan error, 1),
		quit:    make(chan struct{}),
		over:    make(chan struct{}),
		// free holds decoded jobs handed to fn, cleared, for the reader
		// to fill again: a replay of a million events allocates a few
		// jobs instead of one for every decodeBatch messages (their
		// buffers hold pointers the garbage collector would scan).
		free: make(chan *decodeJob, workers*4+2),
	}
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l.decodeJobs(r.jobs)
		}()
	}
	go r.run(ctx, src, rr.lagging, rr.pull)
	defer wg.Wait()
	defer close(r.quit)
	var last uint64
	for j := range r.ordered {
		<-j.done
		for i := range j.msgs {
			if j.msgs[i].kind != partHeld {
				// Not past a part held for an event not yet whole: a
				// replay that ends in error between its parts is
				// resumed from its first part.
				last = j.seqs[i]
			}
			if j.ok[i] {
				if err := fn(j.events[i]); err != nil {
					return last, err
				}
			} else if rr.onSkip != nil && j.msgs[i].kind != partHeld {
				rr.onSkip(j.seqs[i], j.msgs[i].subject)
			}
		}
		j.reset()
		select {
		case r.free <- j:
		default:
		}
	}
	select {
	case err := <-r.readErr:
		return last, err
	default:
		return last, nil
	}
}

// decodeJobs decodes the jobs it receives until jobs is closed, closing
// each job's done when its results are in.
func (l *Log) decodeJobs(jobs <-chan *decodeJob) {
	for j := range jobs {
		for i, m := range j.msgs {
			switch m.kind {
			case partHeld:
				j.ok[i] = false
			case partBad:
				l.skip(j.seqs[i], m.subject, m.err)
				j.ok[i] = false
			default:
				j.events[i], j.ok[i] = l.decode(m.subject, m.hdr, m.data, j.seqs[i])
			}
		}
		close(j.done)
	}
}

// replayReader is the reading side of decodeOrdered: its handler (handle)
// takes the consumer's messages into jobs and sends each job to the
// decoders (jobs) and, in the same order, to the hand-off (ordered), until
// the consumer has none pending and the log's end (end) is read.
//
// It reads with Consume, whose handler nats.go calls for each message in
// order on one goroutine, rather than with Messages' iterator: Next cost a
// timer, a lock and a header lookup for every message, ~1 µs of the 6-9
// µs of CPU JetStream's delivery takes an event on this machine
// (BENCHMARKS.md, full replay).
type replayReader struct {
	l       *Log
	count   *ReadCount
	end     uint64
	jobs    chan *decodeJob
	ordered chan *decodeJob
	free    chan *decodeJob
	readErr chan error
	quit    chan struct{} // closed by decodeOrdered when it returns
	// over is closed once (finish) when the read is over: why says how
	// (nil: the end was read; errLagged; or an error).
	over   chan struct{}
	once   sync.Once
	why    error
	ending atomic.Bool           // set once over: the handler takes nothing more
	misses atomic.Int32          // heartbeats missed in a row
	errs   atomic.Pointer[error] // the consumer's last error (for a Consume that stops by itself)
	// The handler's own: read and written only on its goroutine (and by
	// run before Consume starts and after it is closed).
	j     *decodeJob
	parts assembler
	lag   *time.Timer
	read  uint64
	// delivered is the consumer sequence of the last message handled:
	// the next must be one more, or messages were lost on their way (a
	// connection the server cut as a slow consumer; with no acks nothing
	// is sent again), and the replay ends with ErrDeliveryLost rather
	// than skip them. Written by the handler only; read by stalled.
	delivered atomic.Uint64
	// sending is set while the handler waits to hand a job on (decoders
	// or fn are slower than the log): no delivery then is not a stall.
	sending atomic.Bool
}

// ErrDeliveryLost ends a replay whose consumer skipped a delivery: the
// messages in between were lost on their way (e.g. the server cut the
// connection as a slow consumer). The caller reads again from after the
// last event it was given; nothing is skipped silently.
var ErrDeliveryLost = errors.New("messages lost in delivery")

// errLagged ends a replay whose consumer did not deliver the log's end
// within replayLagWait (replayEnd).
var errLagged = errors.New("the log's end was not delivered in time")

// finish ends the read with why, once.
func (r *replayReader) finish(why error) {
	r.once.Do(func() {
		r.why = why
		r.ending.Store(true)
		close(r.over)
	})
}

// send hands the job being filled to the decoders and the hand-off and
// takes a fresh one; false when the replay is over.
func (r *replayReader) send() bool {
	r.sending.Store(true)
	defer r.sending.Store(false)
	select {
	case r.jobs <- r.j:
	case <-r.quit:
		return false
	}
	select {
	case r.ordered <- r.j:
	case <-r.quit:
		return false
	}
	select {
	case r.j = <-r.free:
		r.j.done = make(chan struct{})
	default:
		r.j = newDecodeJob()
	}
	return true
}

// waitLag bounds the wait for the log's end while the consumer delivers
// nothing more: the consumer's server is behind the leader (replayEnd), and
// the timer ends the read after replayLagWait. Each message delivered
// disarms it (unless it fired), so a lagging server that catches up has the
// time it needs to deliver the rest.
func (r *replayReader) waitLag() {
	if r.lag == nil {
		r.lag = time.AfterFunc(replayLagWait, func() { r.finish(errLagged) })
	}
}

// run reads until the end, an error, ctx's end or quit; it closes jobs and
// ordered once the handler has returned for good.
func (r *replayReader) run(ctx context.Context, src replaySource, lagging bool, pull jetstream.PullConsumeOpt) {
	defer close(r.ordered)
	defer close(r.jobs)
	r.j = newDecodeJob()
	if lagging {
		r.waitLag()
	}
	cc, err := src.Consume(r.handle, pull, jetstream.PullHeartbeat(replayHeartbeat), jetstream.ConsumeErrHandler(r.consumeErr))
	if err != nil {
		r.readErr <- fmt.Errorf("replay: %w", err)
		return
	}
	closed := cc.Closed()
	r.watch(ctx, src, closed)
	cc.Stop()
	<-closed // the handler has returned and will not be called again
	if r.lag != nil {
		r.lag.Stop()
	}
	switch {
	case r.why == nil:
	case errors.Is(r.why, errLagged) && ctx.Err() == nil:
		// Its server did not catch up (or the last messages were
		// removed): end with what it held.
		r.l.logger.Warn("replay: the log's end was not delivered in time; replayed what the consumer's server holds", "end", r.end, "read_through", r.read, "waited", replayLagWait)
		r.send()
	case errors.Is(r.why, ErrDeliveryLost) && ctx.Err() == nil:
		// What came before the gap is whole and in order: hand it on,
		// so that the replay resumes after it (Replay).
		r.send()
		r.readErr <- fmt.Errorf("replay: %w", r.why)
	default:
		why := r.why
		if ctx.Err() != nil {
			why = ctx.Err()
		}
		r.readErr <- fmt.Errorf("replay: %w", why)
	}
}

// watch waits until the read is over, ctx ends, the hand-off quits or the
// consumer stops by itself (closed), and ends the read (finish). Each
// replayStallCheck without a delivery it asks the consumer whether
// messages were lost on their way (stalled): when the lost ones held the
// log's end, no later delivery shows the gap to handle.
func (r *replayReader) watch(ctx context.Context, src replaySource, closed <-chan struct{}) {
	check := time.NewTicker(replayStallCheck)
	defer check.Stop()
	var seen uint64
	for {
		select {
		case <-check.C:
			d := r.delivered.Load()
			if d == seen && !r.sending.Load() {
				if err := r.stalled(ctx, src, d); err != nil {
					r.finish(err)
					return
				}
			}
			seen = d
		case <-r.over:
			return
		case <-ctx.Done():
			r.finish(ctx.Err())
			return
		case <-r.quit:
			r.finish(nil)
			return
		case <-closed:
			// The consumer stopped by itself (deleted, the connection
			// closed): its last error says why.
			why := errors.New("consumer stopped")
			if p := r.errs.Load(); p != nil {
				why = *p
			}
			r.finish(why)
			return
		}
	}
}

// replayStallCheck is how often a replay that got no message since the
// last check asks its consumer whether it sent more than was received
// (stalled).
const replayStallCheck = 3 * time.Second

// consumerInfo is what stalled asks of a replay's source; a real
// consumer has it, a benchmark's fake need not.
type consumerInfo interface {
	Info(context.Context) (*jetstream.ConsumerInfo, error)
}

// stalled returns ErrDeliveryLost when the consumer says it delivered more
// than the handler received (delivered): the messages in between were lost,
// and with them, when they held the log's end, the message that would have
// ended the read. No answer is not a stall: the heartbeats watch that.
func (r *replayReader) stalled(ctx context.Context, src replaySource, delivered uint64) error {
	c, ok := src.(consumerInfo)
	if !ok {
		return nil
	}
	ictx, cancel := context.WithTimeout(ctx, followCreateMaxWait)
	defer cancel()
	info, err := c.Info(ictx)
	if err != nil {
		r.l.logger.Debug("replay: ask the consumer what it delivered", "err", err)
		return nil
	}
	if info.Delivered.Consumer > delivered && r.delivered.Load() == delivered && !r.sending.Load() {
		return fmt.Errorf("%w: the consumer sent %d, %d were received (stream sequence %d)", ErrDeliveryLost, info.Delivered.Consumer, delivered, info.Delivered.Stream)
	}
	return nil
}

// handle takes one message into the job being filled, sending the job on
// when it is full or holds the end.
func (r *replayReader) handle(m jetstream.Msg) {
	if r.ending.Load() {
		return
	}
	r.misses.Store(0)
	if r.lag != nil && r.lag.Stop() {
		r.lag = nil
	}
	pos, err := positionOf(m)
	if err != nil {
		r.finish(err)
		return
	}
	if d := r.delivered.Load(); pos.consumer != d+1 {
		r.finish(fmt.Errorf("%w: delivery %d after %d (stream sequence %d)", ErrDeliveryLost, pos.consumer, d, pos.stream))
		return
	}
	r.delivered.Store(pos.consumer)
	r.count.add(m, pos.pending)
	r.j.msgs = append(r.j.msgs, readRaw(&r.parts, m, pos.stream))
	r.j.seqs = append(r.j.seqs, pos.stream)
	r.read = pos.stream
	last := pos.pending == 0 && pos.stream >= r.end
	if pos.pending == 0 && !last {
		r.waitLag()
	}
	if len(r.j.msgs) == decodeBatch || last {
		if r.send() && last {
			r.finish(nil)
		}
	}
}

// consumeErr hears the consumer's errors: a missed heartbeat (nats.go
// asks again by itself; replayPullRetries in a row end the read), others
// kept for when the consumer stops by itself.
func (r *replayReader) consumeErr(_ jetstream.ConsumeContext, err error) {
	if errors.Is(err, jetstream.ErrNoHeartbeat) {
		n := r.misses.Add(1)
		r.l.logger.Debug("replay: no heartbeat from the consumer; asking again", "misses", n)
		if n >= replayPullRetries {
			r.finish(fmt.Errorf("%w (%d times in a row)", err, n))
		}
		return
	}
	r.l.logger.Debug("replay: consumer", "err", err)
	r.errs.Store(&err)
}

// rawMsg is a message read from the log, or the body of an event put
// together from its parts (kind partsDone), on its way to be decoded.
type rawMsg struct {
	subject string
	hdr     nats.Header
	data    []byte
	kind    partKind
	err     error // why a partBad is skipped
}

// readRaw takes message m, at stream sequence seq, through the reader's
// assembler.
func readRaw(parts *assembler, m jetstream.Msg, seq uint64) rawMsg {
	r := rawMsg{subject: m.Subject(), hdr: m.Headers(), data: m.Data()}
	kind, body, err := parts.add(r.subject, r.hdr, r.data, seq)
	r.kind, r.err = kind, err
	if kind == partsDone {
		r.data = body
	}
	return r
}

// reset empties j for reuse, dropping what points into the messages.
func (j *decodeJob) reset() {
	clear(j.msgs)
	clear(j.events)
	j.msgs, j.seqs = j.msgs[:0], j.seqs[:0]
}

// position is where a message delivered by a consumer stands: its stream
// and consumer sequences and how many messages the consumer held behind it.
type position struct {
	stream, consumer, pending uint64
}

// positionOf reads m's position from its reply subject, as Metadata does
// but without allocating its MsgMetadata and timestamp for every message
// of a replay; a reply it does not recognise goes to Metadata.
//
//	v1: $JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<tm>.<pending>
//	v2: $JS.ACK.<domain>.<account hash>.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<tm>.<pending>[.<token>]
func positionOf(m jetstream.Msg) (position, error) {
	var tok [12]string
	n, rest := 0, m.Reply()
	for n < len(tok) {
		t, r, more := strings.Cut(rest, ".")
		tok[n], rest = t, r
		n++
		if !more {
			break
		}
	}
	at := 5 // v1: sseq is token 5
	if n >= 11 {
		at = 7
	}
	if tok[0] == "$JS" && tok[1] == "ACK" && (n == 9 || n >= 11) {
		p := position{stream: digits(tok[at]), consumer: digits(tok[at+1]), pending: digits(tok[at+3])}
		if p.stream > 0 && p.consumer > 0 && (p.pending > 0 || tok[at+3] == "0") {
			return p, nil
		}
	}
	meta, err := m.Metadata()
	if err != nil {
		return position{}, err
	}
	return position{stream: meta.Sequence.Stream, consumer: meta.Sequence.Consumer, pending: meta.NumPending}, nil
}

// digits parses a decimal number of ASCII digits; 0 for anything else.
func digits(s string) uint64 {
	if len(s) == 0 || len(s) > 19 {
		return 0
	}
	var n uint64
	for i := range len(s) {
		c := s[i]
		if c < '0' || c > '9' {
			return 0
		}
		n = n*10 + uint64(c-'0')
	}
	return n
}

func newDecodeJob() *decodeJob {
	return &decodeJob{
		msgs:   make([]rawMsg, 0, decodeBatch),
		seqs:   make([]uint64, 0, decodeBatch),
		events: make([]Event, decodeBatch),
		ok:     make([]bool, decodeBatch),
		done:   make(chan struct{}),
	}
}

// Follow timing. A consumer that sat on a server that stopped says
// nothing; Follow notices by missed heartbeats (2 x followHeartbeat) and
// creates a new one, each attempt bounded, so that a request the cluster
// drops while it elects a leader costs one short attempt, not nats.go's 10 s.
// Any other stall (heartbeats paused on a disconnect and never resumed, a
// pull request the server dropped) ends at the next check, followCheckEvery
// after the last message.
const (
	followHeartbeat      = 500 * time.Millisecond
	followHeartbeatMax   = 4 * time.Second // after misses in a row (Follow)
	followHeartbeatCalm  = time.Minute     // a consumer that served this long resets it
	followCreateTimeout  = time.Second     // first attempt; +0.5 s on each timeout
	followCreateMaxWait  = 5 * time.Second // longest attempt
	followRetryMin       = 50 * time.Millisecond
	followRetryMax       = time.Second
	followRetryLate      = 500 * time.Millisecond // after a second create with no answer; doubles
	followRetryLateMax   = 2 * time.Second
	followInactiveExpiry = time.Minute // a consumer left behind goes away by itself
	// followCheckEvery is how long a follower waits for a message before
	// it asks the server whether its consumer still serves it (stalled).
	followCheckEvery  = 2 * time.Second
	followCheckMax    = 8 * time.Second // the checks of a follower that stays quiet grow apart to this
	followInfoTimeout = 2 * time.Second
	// loneCreateMaxWait bounds the last of a create's attempts on a lone
	// server (createQueued), whose bounds double up to it: from a first
	// of 5 s, 35 s in all, then the follower gives up on that create as on
	// any other that failed.
	loneCreateMaxWait = 20 * time.Second
)

// Follow reads the events selected by ro, first those in the log and then
// live ones as they are appended, until ctx ends or fn fails. It resumes by
// itself, without repeating or skipping a message, after a lost connection
// or the loss of the server its consumer lived on. To resume after a
// restart, pass the last sequence handled plus one as StartSeq.
func (l *Log) Follow(ctx context.Context, ro ReadOptions, fn Handler) error {
	cfg := ro.consumer(followInactiveExpiry)
	cfg.Replicas = 1
	if len(ro.Subjects) == 1 {
		cfg.FilterSubject = ro.Subjects[0]
	} else {
		cfg.FilterSubjects = ro.Subjects
	}
	cons, err := l.createOrFind(ctx, cfg, followCreateMaxWait, ro.Count)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("follow: create consumer: %w", err)
	}
	defer func() { l.dropConsumer(ctx, cons) }()
	var at followAt
	hb := followHeartbeat
	for {
		began := time.Now()
		why, err := l.followConsumer(ctx, cons, ro, &at, fn, hb)
		if err != nil || ctx.Err() != nil {
			return err
		}
		hb = nextHeartbeat(hb, why, time.Since(began))
		if l.nc.IsClosed() {
			return fmt.Errorf("follow: %w", nats.ErrConnectionClosed)
		}
		if errors.Is(why, jetstream.ErrNoHeartbeat) && l.stillServes(ctx, cons, at.delivered) {
			ro.Count.kept()
			l.logger.Debug("follow: heartbeats late; the consumer answers, keeping it", "from", at.next, "heartbeat", hb)
			continue
		}
		next := at.next
		// The consumer is gone or out of step: a new one from the next
		// sequence, as nats.go's ordered consumer does.
		l.logger.Debug("follow: consumer lost", "from", next, "why", why, "connected", l.nc.ConnectedServerName())
		lost := time.Now()
		if next > 0 {
			cfg.DeliverPolicy, cfg.OptStartSeq, cfg.OptStartTime = jetstream.DeliverByStartSequencePolicy, next, nil
		}
		l.dropConsumer(ctx, cons) // if it still exists, it serves no one
		cfg.Name = consumerName()
		if cons, err = l.recreate(ctx, cfg, ro.Count); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("follow: %w", err)
		}
		at.delivered = 0
		l.logger.Info("follow: resumed on a new consumer", "from", next, "why", why, "took", time.Since(lost).Round(time.Millisecond))
	}
}

// nextHeartbeat returns the heartbeat interval a follower asks of its
// next consumer, after one that served for served and was replaced
// because of why: twice hb (up to followHeartbeatMax) if its heartbeats
// came late within followHeartbeatCalm of its creation, followHeartbeat
// again after a consumer that served that long. A server too busy to send
// heartbeats in time is not helped by more of them: at 1,000 host managers
// (2,000 consumers on one server) late heartbeats made every follower
// replace its consumer at once, over and over, and none read anything
// (docs/bench/scale.md, session 10). A follower that misses none keeps
// noticing a lost server within 2 x 500 ms.
func nextHeartbeat(hb time.Duration, why error, served time.Duration) time.Duration {
	switch {
	case served >= followHeartbeatCalm:
		return followHeartbeat
	case errors.Is(why, jetstream.ErrNoHeartbeat):
		return min(2*hb, followHeartbeatMax)
	}
	return hb
}

// consumerName returns a new name for a reader's consumer.
func consumerName() string { return "vmguard_" + strings.ReplaceAll(NewID(), "-", "") }

// createdNot is what follows a create of cfg's consumer that failed: the
// consumer it named is deleted in the background, since a server that
// answered late may have made it (unnamed, nats.go named each attempt
// afresh and nothing removed them: 7,308 consumers at once, each working
// until it expired, in a 200-node `bench scale`), and the next attempt
// gets a name of its own: the server may have placed the one before on a
// peer now out of reach, where a create of the same name waits for it
// (TestPartition: a controller's follower stuck 57 s, until the cut
// healed).
func (l *Log) createdNot(ctx context.Context, cfg *jetstream.ConsumerConfig) {
	l.dropNamed(ctx, cfg.Name)
	cfg.Name = consumerName()
}

// dropConsumer deletes a follower's consumer when Follow returns, so that
// a reader that follows with changing filters (a host manager adding a
// package) does not leave one behind per change for followInactiveExpiry.
// Best effort, bounded, in the background (Follow's caller, which may be
// about to follow again, does not wait for it), and skipped while
// disconnected: the consumer expires by itself anyway.
func (l *Log) dropConsumer(ctx context.Context, cons jetstream.Consumer) {
	if cons != nil {
		l.dropNamed(ctx, cons.CachedInfo().Name)
	}
}

// dropNamed deletes the consumer named name as dropConsumer does.
func (l *Log) dropNamed(ctx context.Context, name string) {
	if name == "" || !l.nc.IsConnected() {
		return
	}
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), followInfoTimeout)
	go func() {
		defer cancel()
		_ = l.stream.DeleteConsumer(dctx, name)
	}()
}

// followAt is where a follower is: the stream sequence after the last
// message read (0: where its ReadOptions start), the consumer sequence of
// the last message its current consumer delivered (0: none yet), and the
// parts of an event read so far (the consumer may be replaced between two
// of them).
type followAt struct {
	next, delivered uint64
	parts           assembler
}

// stillServes reports whether cons, whose heartbeats came late, answers
// that it exists and has delivered nothing since the message at consumer
// sequence delivered: reading it on loses nothing. A server that stopped
// cannot answer (nor can one cut off from this client): that consumer is
// replaced, as before. At 1,000 host managers on one busy server, late
// heartbeats alone made followers replace ~4,000 live consumers during a
// cold start, each a walk of the stream's subjects for the server
// (docs/bench/scale.md, session 11).
//
// A check with no answer replaces the consumer, also on a lone server
// where the server is surely there and only busy: session 12 kept it
// then, and a follower whose consumer had stopped delivering (the bench's
// watcher, in a 1,000-node run) waited on it for minutes, while the
// server's info queue, served only when no other request waits, stayed
// unanswered (docs/bench/scale.md, session 12).
func (l *Log) stillServes(ctx context.Context, cons jetstream.Consumer, delivered uint64) bool {
	ictx, cancel := context.WithTimeout(ctx, followInfoTimeout)
	defer cancel()
	info, err := cons.Info(ictx)
	return err == nil && info.Delivered.Consumer == delivered
}

// queued reports whether err, from a request to the log's server, means
// the request waits in a queue there: no answer in time, on a lone server
// this client is connected to.
func (l *Log) queued(ctx context.Context, err error) bool {
	return l.lone && l.unanswered(ctx, err)
}

// unanswered reports whether err, from a request to the log's server, is
// no answer in time while this client is connected (and ctx not ended).
func (l *Log) unanswered(ctx context.Context, err error) bool {
	return err != nil && ctx.Err() == nil && l.nc.IsConnected() &&
		(errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout))
}

// followConsumer reads cons until ctx ends, fn fails (its error), or the
// consumer must be replaced (why says so); at is where the read is.
func (l *Log) followConsumer(ctx context.Context, cons jetstream.Consumer, ro ReadOptions, at *followAt, fn Handler, hb time.Duration) (why, err error) {
	it, err := cons.Messages(pullLimit(), jetstream.PullHeartbeat(hb),
		jetstream.WithMessagesErrOnMissingHeartbeat(true))
	if err != nil {
		return err, nil
	}
	defer it.Stop()
	stop := context.AfterFunc(ctx, it.Stop)
	defer stop()
	quiet := followCheckEvery
	for {
		m, err := it.Next(jetstream.NextMaxWait(quiet))
		if ctx.Err() != nil {
			return nil, nil
		}
		if errors.Is(err, nats.ErrTimeout) {
			// Quiet: fine if the server holds our pull request and has
			// nothing for it. The iterator's own bookkeeping (heartbeat
			// check, re-pull after a reconnect) is not trusted to end a
			// stall by itself. The checks grow apart while it stays
			// quiet: each is a request to the server's JetStream API,
			// which thousands of idle followers kept busy.
			if why := l.stalled(ctx, cons); why != nil && ctx.Err() == nil {
				return why, nil
			}
			quiet = min(2*quiet, followCheckMax)
			continue
		}
		quiet = followCheckEvery
		if err != nil {
			// No heartbeat (its server stopped), the consumer deleted, the
			// iterator closed under us: each means a new consumer.
			return err, nil
		}
		pos, err := positionOf(m)
		if err != nil {
			return nil, fmt.Errorf("follow: %w", err)
		}
		if pos.consumer != at.delivered+1 {
			return fmt.Errorf("delivery %d after %d", pos.consumer, at.delivered), nil
		}
		at.delivered = pos.consumer
		ro.Count.add(m, pos.pending)
		s := pos.stream
		if s < at.next {
			continue // read before
		}
		at.next = s + 1
		r := readRaw(&at.parts, m, s)
		switch r.kind {
		case partHeld:
			continue
		case partBad:
			l.skip(s, r.subject, r.err)
			if ro.OnSkip != nil {
				ro.OnSkip(s, r.subject)
			}
			continue
		}
		if e, ok := l.decode(r.subject, r.hdr, r.data, s); ok {
			if err := fn(e); err != nil {
				return nil, err
			}
		} else if ro.OnSkip != nil {
			ro.OnSkip(s, r.subject)
		}
	}
}

// stalled asks the server about a consumer that delivered nothing for
// followCheckEvery, and says why it must be replaced: it cannot be reached,
// it has messages for us that it did not deliver, or it holds no pull
// request of ours (the iterator thinks one is outstanding, the server lost
// it). A wrong verdict costs a new consumer, nothing is lost or repeated.
func (l *Log) stalled(ctx context.Context, cons jetstream.Consumer) error {
	return l.stalledAfter(ctx, cons, pullRecheck)
}

// stalledAfter is stalled, asking again after recheck about a consumer
// that held no pull request.
func (l *Log) stalledAfter(ctx context.Context, cons jetstream.Consumer, recheck time.Duration) error {
	ictx, cancel := context.WithTimeout(ctx, followInfoTimeout)
	defer cancel()
	info, err := cons.Info(ictx)
	switch {
	case l.unanswered(ctx, err):
		// No answer in time, connected: the API is busy (a missing
		// heartbeat says when the consumer's server is gone). Replacing
		// the consumer would add a create to the API's queue, and under
		// load each replacement made the next answers later still.
		l.logger.Debug("follow: consumer check unanswered; keeping the consumer", "err", err)
		return nil
	case err != nil:
		return fmt.Errorf("check consumer: %w", err)
	case info.NumPending > 0:
		return fmt.Errorf("check consumer: %d messages pending, none delivered for %v", info.NumPending, followCheckEvery)
	case info.NumWaiting == 0 && l.noPullAgain(ctx, cons, recheck):
		return errors.New("check consumer: no pull request waiting on the server")
	}
	return nil
}

// pullRecheck is how long a follower waits before it asks again about a
// consumer that held no pull request of its (noPullAgain).
const pullRecheck = 300 * time.Millisecond

// noPullAgain asks again, after pullRecheck, whether cons holds no pull
// request: the iterator asks anew when its last one expires or is
// filled, and a check that comes in between finds none. At 1,000 host
// managers, checks in such gaps replaced ~600 consumers within 15 s after
// a cold start (each a create in the server's queue) and delayed the
// decisions on the exits then (docs/bench/scale.md, session 12). No
// answer keeps the consumer, as in stalled.
func (l *Log) noPullAgain(ctx context.Context, cons jetstream.Consumer, recheck time.Duration) bool {
	if pause(ctx, recheck) != nil {
		return false
	}
	ictx, cancel := context.WithTimeout(ctx, followInfoTimeout)
	defer cancel()
	info, err := cons.Info(ictx)
	return err == nil && info.NumWaiting == 0
}

// recreate creates the follower's consumer again, retrying until it exists
// or ctx ends. Each attempt is bounded: while the cluster elects a leader
// a create request may get no answer at all.
func (l *Log) recreate(ctx context.Context, cfg jetstream.ConsumerConfig, count *ReadCount) (jetstream.Consumer, error) {
	wait, retry, late := followCreateTimeout, followRetryMin, followRetryLate
	for attempt := 1; ; attempt++ {
		began := time.Now()
		cons, err := l.createOrFind(ctx, cfg, wait, count)
		if err == nil {
			l.logger.Debug("follow: consumer created", "consumer", cons.CachedInfo().Name, "attempt", attempt, "took", time.Since(began).Round(time.Millisecond))
			return cons, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if l.nc.IsClosed() {
			return nil, nats.ErrConnectionClosed
		}
		l.createdNot(ctx, &cfg)
		lvl := slog.LevelDebug
		if attempt%10 == 3 {
			lvl = slog.LevelWarn // longer than a leader election
		}
		l.logger.Log(ctx, lvl, "follow: create consumer; retrying", "attempt", attempt, "took", time.Since(began).Round(time.Millisecond), "err", err)
		if errors.Is(err, context.DeadlineExceeded) {
			// No answer: dropped during an election, or just slow. Grow the
			// bound gently: doubling made a request sent just before a
			// leader took over wait 4 s for nothing (seen: 13 s to resume).
			// The first retry goes at once (an election); after that each
			// waits, growing, with jitter: a server too busy to answer
			// creates in time is not helped by more of them (at 1,000 host
			// managers, retries sent at once grew its queue until no
			// create was answered in 5 s, for minutes).
			wait = min(wait+followCreateTimeout/2, followCreateMaxWait)
			if attempt > 1 {
				if err := pause(ctx, jitter(late)); err != nil {
					return nil, err
				}
				late = min(2*late, followRetryLateMax)
			}
			continue
		}
		if err := pause(ctx, retry); err != nil {
			return nil, err
		}
		retry = min(2*retry, followRetryMax)
	}
}

// jitter returns d plus up to half of it, at random: followers that failed
// together do not all try again together.
func jitter(d time.Duration) time.Duration {
	return d + rand.N(d/2+1)
}

// create asks the server for cfg's consumer, waiting up to wait for the
// answer.
func (l *Log) create(ctx context.Context, cfg jetstream.ConsumerConfig, wait time.Duration, count *ReadCount) (jetstream.Consumer, error) {
	count.created()
	actx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	return l.stream.CreateConsumer(actx, cfg)
}

// createOrFind is create for a follower. With no answer in time, it asks
// whether the consumer exists (an info request, which the server answers
// from its own queue, without a walk of the stream): a busy server may
// have made it all the same, and it is then used. Sending another create
// instead added one more to the queue that made the first late: at 1,000
// host managers, ~20 creates a host during a cold start instead of 5
// (docs/bench/scale.md, session 11). A consumer that cannot be found is
// left to the caller (createdNot). A replay does not do this: it must end
// with an error within its bound when the cluster has no majority, and a
// consumer made late by a server that has not yet learned it lost the
// majority let a host manager's replay read on and its start go on
// following a log that cannot answer (TestReplayWaitsForQuorum hung on it).
func (l *Log) createOrFind(ctx context.Context, cfg jetstream.ConsumerConfig, wait time.Duration, count *ReadCount) (jetstream.Consumer, error) {
	cons, err := l.create(ctx, cfg, wait, count)
	if err == nil || ctx.Err() != nil || !errors.Is(err, context.DeadlineExceeded) || cfg.Name == "" {
		return cons, err
	}
	if l.lone {
		return l.createQueued(ctx, cfg, wait, count, err)
	}
	ictx, cancel := context.WithTimeout(ctx, followInfoTimeout)
	defer cancel()
	if late, lerr := l.stream.Consumer(ictx, cfg.Name); lerr == nil {
		count.late()
		return late, nil
	}
	return nil, err
}

// createQueued follows a create of cfg's consumer on a lone server that
// got no answer within wait (err): while connected, the request waits in
// the server's queue (no election drops it there), so the same create, of
// the same name, is sent again with twice the bound, up to
// loneCreateMaxWait. The server answers it from the consumer the first
// request made, without a second walk of the stream's subjects (a
// create of an existing consumer with the same configuration changes
// nothing). A lookup instead (createOrFind) waits in the server's info
// queue, served only when no other request waits: at 1,000 host managers
// it went unanswered, and each follower deleted its consumer and asked
// for a new one, three requests in the queue for one consumer
// (docs/bench/scale.md, session 12).
func (l *Log) createQueued(ctx context.Context, cfg jetstream.ConsumerConfig, wait time.Duration, count *ReadCount, err error) (jetstream.Consumer, error) {
	for l.queued(ctx, err) && wait < loneCreateMaxWait {
		wait = min(2*wait, loneCreateMaxWait)
		var cons jetstream.Consumer
		if cons, err = l.create(ctx, cfg, wait, count); err == nil {
			count.late()
			return cons, nil
		}
	}
	return nil, err
}

// pause waits d, or returns ctx's error if it ends first.
func pause(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// decode decodes one stored message, or counts and logs it as skipped.
func (l *Log) decode(subject string, hdr nats.Header, data []byte, seq uint64) (Event, bool) {
	large := len(data) > detachAbove
	e, ok := Event{}, false
	if large {
		e, ok = l.large.get(seq)
	}
	if !ok {
		var err error
		if e, err = l.codec.decodeStored(subject, hdr, data, true); err != nil {
			l.skip(seq, subject, err)
			return Event{}, false
		}
		e.Seq = seq
		if large {
			l.large.put(seq, e)
		}
	}
	if l.observer != nil {
		l.observer.Read(e)
	}
	return e, true
}

// skip counts and logs a malformed message.
func (l *Log) skip(seq uint64, subject string, err error) {
	l.skipped.Add(1)
	l.logger.Warn("skip malformed event", "seq", seq, "subject", subject, "err", err)
}
