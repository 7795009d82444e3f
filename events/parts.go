package events

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Events larger than a message. A cluster.config_applied carries the whole
// configuration, about 350 bytes a package: beyond ~3,000 packages it no
// longer fits the 1 MB a NATS message (and the stream's MaxMsgSize) may
// hold. Append stores such an event as several messages on its subject,
// parts of its encoded body, in one atomic batch: all parts or none, at
// consecutive stream sequences, and nothing else between them. Each part
// carries the event's headers and
//
//	Vmguard-Part  "i/n": part i of n
//
// The last part keeps the event's Nats-Msg-Id (a retried Append is stored
// once and returns its first copy's sequence), the others add "-part-i" to
// it; only the first carries the expected-sequence check (the server
// refuses a check of a subject the batch already wrote). Readers (Replay,
// Follow, Get, Tail) put the parts back together and hand over one event
// whose sequence is its last part's, the subject's last message: the one
// an Expect on the subject names. An event in parts needs a stream that
// takes atomic batches (EnsureStream, i.e. `vmguard server`, sets it up).

// partHeader numbers the parts of an event stored in several messages.
const partHeader = "Vmguard-Part"

// MaxEventParts bounds the parts of one event: the server's largest atomic
// batch.
const MaxEventParts = maxBatch

// MaxLargeEventSize is the largest event Append stores, in parts: 64 MiB,
// room for a configuration of some 180,000 packages. A reader never holds
// more than this for one event.
const MaxLargeEventSize = 64 << 20

// partRoom is what a part leaves of a message for the headers (the event's,
// the part's, the batch's and the expected-sequence check).
const partRoom = 16 << 10

// ErrTooLarge means an event does not fit the log: larger than
// MaxLargeEventSize, or larger than one message where parts cannot be
// used (AppendAsync, several events in one AppendBatch, a stream without
// atomic batches).
var ErrTooLarge = errors.New("event too large")

// partSize returns the body bytes a message may carry, or 0 if m fits as
// it is.
func (l *Log) partSize(m *nats.Msg) int {
	limit := MaxEventSize
	if mp := l.nc.MaxPayload(); mp > 0 && int(mp) < limit {
		limit = int(mp)
	}
	if len(m.Data)+headerSize(m.Header) <= limit {
		return 0
	}
	return limit - partRoom
}

// headerSize approximates the bytes m's headers take on the wire.
func headerSize(h nats.Header) int {
	n := len("NATS/1.0\r\n\r\n")
	for k, vs := range h {
		for _, v := range vs {
			n += len(k) + len(v) + 4
		}
	}
	return n
}

// split cuts m, an encoded event, into parts of at most size body bytes.
func split(m *nats.Msg, size int) ([]*nats.Msg, error) {
	if len(m.Data) > MaxLargeEventSize {
		return nil, fmt.Errorf("%w: %d bytes, at most %d", ErrTooLarge, len(m.Data), MaxLargeEventSize)
	}
	n := (len(m.Data) + size - 1) / size
	if n > MaxEventParts {
		return nil, fmt.Errorf("%w: %d parts of %d bytes, at most %d", ErrTooLarge, n, size, MaxEventParts)
	}
	id := m.Header.Get(jetstream.MsgIDHeader)
	parts := make([]*nats.Msg, n)
	for i := range n {
		h := nats.Header{}
		for k, vs := range m.Header {
			if i > 0 && (k == jetstream.ExpectedLastSubjSeqHeader || k == jetstream.ExpectedLastSubjSeqSubjHeader) {
				continue
			}
			h[k] = append([]string(nil), vs...)
		}
		h.Set(partHeader, strconv.Itoa(i+1)+"/"+strconv.Itoa(n))
		if i < n-1 {
			h.Set(jetstream.MsgIDHeader, id+"-part-"+strconv.Itoa(i+1))
		}
		parts[i] = &nats.Msg{Subject: m.Subject, Header: h, Data: m.Data[i*size : min((i+1)*size, len(m.Data))]}
	}
	return parts, nil
}

// publishParts stores the parts of one event in one atomic batch and
// returns its last part's sequence.
func (l *Log) publishParts(ctx context.Context, m *nats.Msg, size int) (uint64, error) {
	if !l.atomic {
		return 0, fmt.Errorf("%w: %d bytes, and stream %s takes no atomic batches to store it in parts (vmguard server sets that up)", ErrTooLarge, len(m.Data), StreamName)
	}
	parts, err := split(m, size)
	if err != nil {
		return 0, err
	}
	first, err := l.sendBatch(ctx, parts)
	if err == nil {
		return first + uint64(len(parts)-1), nil
	}
	if isDuplicateBatch(err) {
		// A retry: the parts were stored before, all of them (atomic). The
		// last part alone, under the event's id, is found stored and
		// answers with its first copy's sequence.
		last := parts[len(parts)-1]
		ack, perr := l.js.PublishMsg(ctx, last)
		if perr == nil && ack.Duplicate {
			return ack.Sequence, nil
		}
		if perr == nil {
			return 0, fmt.Errorf("its last part alone stored at %d after a duplicate batch", ack.Sequence)
		}
		err = perr
	}
	return 0, err
}

// isDuplicateBatch says the server refused a batch for holding an id it
// already stored.
func isDuplicateBatch(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode == 10201
}

// partKind says what a message read from the log is to its reader.
type partKind int

const (
	wholeEvent partKind = iota // an event in one message
	partHeld                   // a part held until the last one comes
	partsDone                  // the last part: the event's body is complete
	partBad                    // a part out of place: skipped
)

// assembler puts the parts of an event back together, in the order a
// reader meets them. A part out of place (no first part before it, a gap
// in the sequences, another subject) is skipped with those before it.
type assembler struct {
	subject string
	n, got  int
	next    uint64
	body    []byte
}

// add takes the message at stream sequence seq. For partsDone it returns
// the whole body (the caller owns it); for partBad, why.
func (a *assembler) add(subject string, hdr nats.Header, data []byte, seq uint64) (partKind, []byte, error) {
	v := hdr.Get(partHeader)
	if v == "" {
		if a.n > 0 {
			a.reset()
		}
		return wholeEvent, nil, nil
	}
	is, ns, _ := strings.Cut(v, "/")
	i, err1 := strconv.Atoi(is)
	n, err2 := strconv.Atoi(ns)
	if err1 != nil || err2 != nil || n < 2 || n > MaxEventParts || i < 1 || i > n {
		a.reset()
		return partBad, nil, fmt.Errorf("%w: part header %q", ErrInvalid, v)
	}
	if i == 1 {
		a.reset()
		a.subject, a.n = subject, n
	} else if a.n != n || a.got != i-1 || a.subject != subject || seq != a.next {
		a.reset()
		return partBad, nil, fmt.Errorf("%w: part %d of %d without the parts before it", ErrInvalid, i, n)
	}
	if len(a.body)+len(data) > MaxLargeEventSize {
		a.reset()
		return partBad, nil, fmt.Errorf("%w: parts over %d bytes", ErrInvalid, MaxLargeEventSize)
	}
	a.body = append(a.body, data...)
	a.got, a.next = i, seq+1
	if i < n {
		return partHeld, nil, nil
	}
	body := a.body
	a.body = nil
	a.reset()
	return partsDone, body, nil
}

func (a *assembler) reset() {
	*a = assembler{body: a.body[:0]}
}

// wholeAt reads the message at the end of an event whose last part raw is:
// raw itself when it is a whole event, else its parts put together.
func (l *Log) wholeAt(ctx context.Context, raw *jetstream.RawStreamMsg) ([]byte, error) {
	v := raw.Header.Get(partHeader)
	if v == "" {
		return raw.Data, nil
	}
	is, ns, _ := strings.Cut(v, "/")
	i, _ := strconv.Atoi(is)
	n, _ := strconv.Atoi(ns)
	if i != n || n < 2 || n > MaxEventParts || uint64(n) > raw.Sequence {
		return nil, fmt.Errorf("%w: part header %q at the end of an event", ErrInvalid, v)
	}
	var a assembler
	for seq := raw.Sequence - uint64(n) + 1; seq < raw.Sequence; seq++ {
		p, err := l.stream.GetMsg(ctx, seq)
		if err != nil {
			return nil, fmt.Errorf("get part at %d: %w", seq, err)
		}
		if k, _, err := a.add(p.Subject, p.Header, p.Data, seq); k != partHeld {
			return nil, fmt.Errorf("%w: part at %d: %v", ErrInvalid, seq, err)
		}
	}
	k, body, err := a.add(raw.Subject, raw.Header, raw.Data, raw.Sequence)
	if k != partsDone {
		return nil, fmt.Errorf("%w: last part at %d: %v", ErrInvalid, raw.Sequence, err)
	}
	return body, nil
}

// PartOf says whether a message read from the log is a part of an event
// stored in several (see Append), and whether it is the last one, at whose
// sequence Get returns the whole event. Readers outside Log (a sink on a
// consumer of its own) pass over the other parts.
func PartOf(hdr nats.Header) (part, last bool) {
	v := hdr.Get(partHeader)
	if v == "" {
		return false, false
	}
	is, ns, _ := strings.Cut(v, "/")
	return true, is == ns
}
