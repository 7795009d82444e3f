package events

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"time"

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
}

// ForPackage returns ReadOptions reading every event about package pkg.
func ForPackage(pkg string) ReadOptions { return ReadOptions{Subjects: []string{PackageFilter(pkg)}} }

func (ro ReadOptions) deliver() (jetstream.DeliverPolicy, uint64, *time.Time) {
	switch {
	case ro.StartSeq > 0:
		return jetstream.DeliverByStartSequencePolicy, ro.StartSeq, nil
	case !ro.StartTime.IsZero():
		t := ro.StartTime
		return jetstream.DeliverByStartTimePolicy, 0, &t
	}
	return jetstream.DeliverAllPolicy, 0, nil
}

// Handler receives one decoded event; an error stops the read and is returned.
type Handler func(Event) error

// replayBatch is how many messages a replay asks the server for at once.
const replayBatch = 4096

// Replay reads the events selected by ro that are in the log now, in stream
// order, and returns the stream sequence of the last message it read (0 if
// none). Malformed events are skipped, counted and logged, the same way on
// every replay.
func (l *Log) Replay(ctx context.Context, ro ReadOptions, fn Handler) (uint64, error) {
	pol, seq, t := ro.deliver()
	cfg := jetstream.ConsumerConfig{
		DeliverPolicy:     pol,
		OptStartSeq:       seq,
		OptStartTime:      t,
		FilterSubjects:    ro.Subjects,
		AckPolicy:         jetstream.AckNonePolicy,
		MemoryStorage:     true,
		InactiveThreshold: time.Minute,
	}
	cons, err := l.stream.CreateConsumer(ctx, cfg)
	if err != nil {
		return 0, fmt.Errorf("replay: create consumer: %w", err)
	}
	name := cons.CachedInfo().Name
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = l.stream.DeleteConsumer(dctx, name) // it also expires by InactiveThreshold
	}()
	if cons.CachedInfo().NumPending == 0 {
		return 0, nil
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(replayBatch))
	if err != nil {
		return 0, fmt.Errorf("replay: %w", err)
	}
	defer it.Stop()
	stop := context.AfterFunc(ctx, it.Stop)
	defer stop()
	return l.decodeOrdered(ctx, it, fn, ro.OnSkip)
}

// decodeBatch is how many messages one decoding job holds.
const decodeBatch = 256

// decodeJob is a batch of raw messages decoded by a worker; done is closed
// when events holds the results, in order.
type decodeJob struct {
	msgs   []jetstream.Msg
	seqs   []uint64
	events []Event
	ok     []bool
	done   chan struct{}
}

// decodeOrdered reads messages until the consumer has none pending, decodes
// them on several cores (decoding and schema checks cost more than reading)
// and hands them to fn in stream order.
func (l *Log) decodeOrdered(ctx context.Context, it jetstream.MessagesContext, fn Handler, onSkip func(uint64, string)) (uint64, error) {
	workers := runtime.GOMAXPROCS(0)
	jobs := make(chan *decodeJob, workers*2)
	ordered := make(chan *decodeJob, workers*2)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range jobs {
				for i, m := range j.msgs {
					j.events[i], j.ok[i] = l.decode(m, j.seqs[i])
				}
				close(j.done)
			}
		}()
	}
	readErr := make(chan error, 1)
	quit := make(chan struct{})
	go func() {
		defer close(ordered)
		defer close(jobs)
		j := newDecodeJob()
		send := func() bool {
			select {
			case jobs <- j:
			case <-quit:
				return false
			}
			select {
			case ordered <- j:
			case <-quit:
				return false
			}
			j = newDecodeJob()
			return true
		}
		for {
			m, err := it.Next()
			if err != nil {
				if ctx.Err() != nil {
					err = ctx.Err()
				}
				readErr <- fmt.Errorf("replay: %w", err)
				return
			}
			meta, err := m.Metadata()
			if err != nil {
				readErr <- fmt.Errorf("replay: %w", err)
				return
			}
			j.msgs = append(j.msgs, m)
			j.seqs = append(j.seqs, meta.Sequence.Stream)
			last := meta.NumPending == 0
			if len(j.msgs) == decodeBatch || last {
				if !send() || last {
					return
				}
			}
		}
	}()
	defer wg.Wait()
	defer close(quit)
	var last uint64
	for j := range ordered {
		<-j.done
		for i := range j.msgs {
			last = j.seqs[i]
			if j.ok[i] {
				if err := fn(j.events[i]); err != nil {
					return last, err
				}
			} else if onSkip != nil {
				onSkip(j.seqs[i], j.msgs[i].Subject())
			}
		}
	}
	select {
	case err := <-readErr:
		return last, err
	default:
		return last, nil
	}
}

func newDecodeJob() *decodeJob {
	return &decodeJob{
		msgs:   make([]jetstream.Msg, 0, decodeBatch),
		seqs:   make([]uint64, 0, decodeBatch),
		events: make([]Event, decodeBatch),
		ok:     make([]bool, decodeBatch),
		done:   make(chan struct{}),
	}
}

// Follow reads the events selected by ro, first those in the log and then
// live ones as they are appended, until ctx ends or fn fails. It resumes by
// itself after a lost connection. To resume after a restart, pass the last
// sequence handled plus one as StartSeq.
func (l *Log) Follow(ctx context.Context, ro ReadOptions, fn Handler) error {
	pol, seq, t := ro.deliver()
	cons, err := l.js.OrderedConsumer(ctx, StreamName, jetstream.OrderedConsumerConfig{
		FilterSubjects: ro.Subjects,
		DeliverPolicy:  pol,
		OptStartSeq:    seq,
		OptStartTime:   t,
	})
	if err != nil {
		return fmt.Errorf("follow: create consumer: %w", err)
	}
	// A 1 s heartbeat (default 5 s): on a cluster, the ordered consumer notices
	// a stopped server after two missed heartbeats and recreates itself.
	it, err := cons.Messages(jetstream.PullMaxMessages(replayBatch), jetstream.PullHeartbeat(time.Second))
	if err != nil {
		return fmt.Errorf("follow: %w", err)
	}
	defer it.Stop()
	stop := context.AfterFunc(ctx, it.Stop)
	defer stop()
	for {
		m, err := it.Next()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				return nil
			}
			return fmt.Errorf("follow: %w", err)
		}
		meta, err := m.Metadata()
		if err != nil {
			return fmt.Errorf("follow: %w", err)
		}
		if e, ok := l.decode(m, meta.Sequence.Stream); ok {
			if err := fn(e); err != nil {
				return err
			}
		} else if ro.OnSkip != nil {
			ro.OnSkip(meta.Sequence.Stream, m.Subject())
		}
	}
}

// decode decodes one stored message, or counts and logs it as skipped.
func (l *Log) decode(m jetstream.Msg, seq uint64) (Event, bool) {
	e, err := l.codec.DecodeStored(m.Subject(), m.Headers(), m.Data())
	if err != nil {
		l.skipped.Add(1)
		l.logger.Warn("skip malformed event", "seq", seq, "subject", m.Subject(), "err", err)
		return Event{}, false
	}
	e.Seq = seq
	return e, true
}
