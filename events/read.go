package events

import (
	"context"
	"errors"
	"fmt"
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
	var last uint64
	for {
		m, err := it.Next()
		if err != nil {
			if ctx.Err() != nil {
				return last, fmt.Errorf("replay: %w", ctx.Err())
			}
			return last, fmt.Errorf("replay: %w", err)
		}
		meta, err := m.Metadata()
		if err != nil {
			return last, fmt.Errorf("replay: %w", err)
		}
		last = meta.Sequence.Stream
		if e, ok := l.decode(m, last); ok {
			if err := fn(e); err != nil {
				return last, err
			}
		}
		if meta.NumPending == 0 {
			return last, nil
		}
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
	it, err := cons.Messages(jetstream.PullMaxMessages(replayBatch))
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
		}
	}
}

// decode decodes one stored message, or counts and logs it as skipped.
func (l *Log) decode(m jetstream.Msg, seq uint64) (Event, bool) {
	e, err := l.codec.Decode(m.Headers(), m.Data())
	if err != nil {
		l.skipped.Add(1)
		l.logger.Warn("skip malformed event", "seq", seq, "subject", m.Subject(), "err", err)
		return Event{}, false
	}
	e.Seq = seq
	return e, true
}
