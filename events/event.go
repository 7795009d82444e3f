package events

import (
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
)

// Event is one vmguard event: a CloudEvent whose data is a typed Payload.
type Event struct {
	// ID is unique; it is also the Nats-Msg-Id, so a retried append is stored once.
	ID string
	// Source says who wrote the event, e.g. /vmguard/nodes/node1/host.
	Source string
	// Subject is the package, node or cluster the event is about.
	Subject string
	// Time is when it happened, by the writer's clock.
	Time time.Time
	// CauseID is the id of the event this one answers ("" for none).
	CauseID string
	// Data is the typed payload; its EventType is the event's type.
	Data Payload
	// Seq is the stream sequence, set when the event is read from the log.
	Seq uint64
}

// Type returns the CloudEvents type of the event.
func (e Event) Type() string {
	if e.Data == nil {
		return ""
	}
	return e.Data.EventType()
}

// Errors callers match with errors.Is.
var (
	// ErrUnknownType is returned for an event type this build does not know.
	ErrUnknownType = errors.New("unknown event type")
	// ErrInvalid is returned for an event that breaks the envelope rules or its schema.
	ErrInvalid = errors.New("invalid event")
	// ErrConflict is returned by Append when the expected last sequence did
	// not match: something else about the package was written since the caller
	// read the log. Re-read, decide again, retry.
	ErrConflict = errors.New("expected sequence conflict")
	// ErrPending is what Appending.Result reports before the server answered.
	ErrPending = errors.New("append pending")
	// ErrStalled means AppendAsync found no room among the unacknowledged
	// appends for 30 s: the server falls behind.
	ErrStalled = errors.New("too many appends waiting for the server")
)

// New returns an event with a fresh time-ordered id and the current time.
// Runners use it; pure cores build Events without ID and Time and let the
// runner Stamp them.
func New(source, subject string, data Payload) Event {
	return Stamp(Event{Source: source, Subject: subject, Data: data}, time.Now())
}

// Stamp fills a missing ID and Time.
func Stamp(e Event, now time.Time) Event {
	if e.ID == "" {
		e.ID = NewID()
	}
	if e.Time.IsZero() {
		e.Time = now.UTC()
	}
	return e
}

// NewID returns a fresh event id (a UUIDv7: unique and ordered by time).
func NewID() string {
	id, err := uuid.NewV7()
	if err != nil {
		// NewV7 fails only when the system's random source does.
		return uuid.NewString()
	}
	return id.String()
}

// Validate checks the envelope: ids, names and the data's type. The data's
// schema is checked by the Log on append and on read.
func (e Event) Validate() error {
	if e.ID == "" {
		return fmt.Errorf("%w: id: missing", ErrInvalid)
	}
	if e.Source == "" {
		return fmt.Errorf("%w: source: missing", ErrInvalid)
	}
	if e.Time.IsZero() {
		return fmt.Errorf("%w: time: missing", ErrInvalid)
	}
	if e.Data == nil {
		return fmt.Errorf("%w: data: missing", ErrInvalid)
	}
	scope, err := ScopeOf(e.Type())
	if err != nil {
		return fmt.Errorf("%w: type: %v", ErrInvalid, err)
	}
	if scope == ScopeCluster {
		if e.Subject != "" && !ValidName(e.Subject) {
			return fmt.Errorf("%w: subject: %q is not a valid name (letters, digits, '-', '_')", ErrInvalid, e.Subject)
		}
		return nil
	}
	if !ValidName(e.Subject) {
		return fmt.Errorf("%w: subject: %q is not a valid name (letters, digits, '-', '_')", ErrInvalid, e.Subject)
	}
	return nil
}
