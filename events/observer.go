package events

import (
	"errors"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Observer is told what a Log does, for metrics (internal/metrics
// implements it). Its methods run on the appending and decoding goroutines,
// several at once: they must be safe for concurrent use, fast, and never
// block.
type Observer interface {
	// Appended reports one Append: the event, whether it was guarded by an
	// expected last sequence (a decision, see ExpectLastSeq), how long the
	// server took to acknowledge it, and the error (nil: stored).
	Appended(e Event, guarded bool, took time.Duration, err error)
	// Read reports an event a Replay or Follow decoded, with its sequence.
	Read(e Event)
}

// WithObserver makes the Log report its appends and reads to o.
func WithObserver(o Observer) Option {
	return func(lo *logOptions) error {
		if o == nil {
			return errors.New("observer: nil")
		}
		lo.observer = o
		return nil
	}
}

// observeAppend reports an Append of e as m to the observer, if any.
func (l *Log) observeAppend(e Event, m *nats.Msg, sent time.Time, err error) {
	if l.observer == nil {
		return
	}
	guarded := m.Header.Get(jetstream.ExpectedLastSubjSeqHeader) != "" || m.Header.Get(jetstream.ExpectedLastSeqHeader) != ""
	l.observer.Appended(e, guarded, time.Since(sent), err)
}
