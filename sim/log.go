package sim

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// The semantics of the JetStream engine that vmguard relies on, as the
// simulated Log and KV implement them. conformance_test.go runs one suite
// against these and against a real embedded nats-server (single server,
// file storage), so each line below is checked against the engine:
//
//  1. Ordering. Every stored message gets the next stream sequence: 1, 2,
//     3, ... with no gaps and no reordering; a refused publish stores
//     nothing and takes no sequence.
//  2. Expected last subject sequence. A publish with Expect{Filter, Seq}
//     is stored only if the last stored message on subjects matching Filter
//     (NATS wildcards '*' and '>') has sequence Seq, 0 meaning "none";
//     otherwise it fails with ErrWrongLastSeq and stores nothing.
//  3. Message-id dedup. A publish whose non-empty ID was stored within the
//     duplicate window is not stored again: the ack names the first one's
//     sequence and says Duplicate. The engine checks the expected sequence
//     BEFORE the id (single server, nats-server 2.15 processJetStreamMsg):
//     a retry of a stored decision that carries its original Expect fails
//     with ErrWrongLastSeq, not a duplicate ack, because the first attempt
//     moved the subject's last sequence. After the window the id may be
//     stored again (the engine forgets ids lazily: not before the window
//     has passed, at some point after).
//  4. Reads. Get(seq) returns the message stored at seq; Last(filter) the
//     last message on subjects matching filter, ErrNotFound if none.
//  5. Consumers. A consumer delivers the messages matching any of its
//     filters (all, with none), from its start sequence on, in stream
//     order. With an AckWait, a delivery not acknowledged within it is
//     delivered again, with NumDelivered one higher, before any message
//     not yet delivered; an acknowledged one never again. Without one
//     (AckNone: replays and followers) each message is delivered once.
//  6. KV. A bucket has one revision counter for all its keys (the
//     sequence of its stream): every Put, Create, Update and Delete takes
//     the next one. Create fails with ErrKeyExists if the key holds a
//     value; Update(rev) fails with ErrWrongLastSeq unless rev is the
//     key's last revision (a delete marker's included); Delete(rev) the
//     same with rev > 0. Get of a deleted key is ErrNotFound. With a TTL
//     (the bucket's MaxAge) a value not written again within TTL is gone:
//     Get is ErrNotFound, Create succeeds, and an Update naming its
//     revision fails. Expiry is exact here; the engine removes a value at
//     some point after TTL (its expiry timer), never before.
//  7. Atomic batches (the stream's allow_atomic on). PublishBatch stores
//     all its messages at consecutive sequences, or none. Each message's
//     Expect is checked against the stream as it was before the batch (a
//     wildcard filter does not count the batch's own writes: two guards
//     on one filter naming the same sequence both hold); one that fails
//     refuses the whole batch with ErrWrongLastSeq, as does an Expect on a
//     literal subject (no wildcard) that an earlier message of the batch
//     writes. An ID stored within the duplicate window, or twice in the
//     batch, refuses the whole batch with ErrBatchRefused: a batch is not
//     deduplicated.

// Errors of the simulated log, matched with errors.Is. The conformance
// suite maps the engine's errors onto them.
var (
	// ErrWrongLastSeq: an expected last (subject) sequence or KV revision did
	// not match.
	ErrWrongLastSeq = errors.New("wrong last sequence")
	// ErrNotFound: no message at that sequence or on that subject, or no
	// value for that key.
	ErrNotFound = errors.New("not found")
	// ErrKeyExists: Create of a key that holds a value.
	ErrKeyExists = errors.New("key exists")
	// ErrBatchRefused: an atomic batch the engine refuses as a whole for
	// another reason than a failed Expect (7. above).
	ErrBatchRefused = errors.New("batch refused")
	// ErrUnavailable: the store does not answer (a simulated outage or
	// partition between a component and the log).
	ErrUnavailable = errors.New("log unavailable")
)

// Msg is one message of a stream.
type Msg struct {
	Subject string
	// ID is the message id (Nats-Msg-Id), "" for none.
	ID   string
	Data []byte
	// Seq is the stream sequence, set when stored.
	Seq uint64
	// Time is when it was stored.
	Time time.Time
}

// Expect is an expected-last-subject-sequence check on a publish.
type Expect struct {
	// Filter selects the subjects the check is about (wildcards allowed).
	Filter string
	// Seq is the sequence the last message on Filter must have (0: none).
	Seq uint64
}

// PubAck is the answer to a stored (or deduplicated) publish.
type PubAck struct {
	Seq       uint64
	Duplicate bool
}

// Log is a simulated JetStream stream with the semantics written above.
// It is not safe for concurrent use: the simulation is single-threaded.
type Log struct {
	now       func() time.Time
	dupWindow time.Duration
	msgs      []Msg
	ids       map[string]idEntry
	// last caches, per filter asked about, the last sequence on it.
	last map[string]uint64
}

type idEntry struct {
	seq uint64
	at  time.Time
}

// NewLog returns an empty stream whose clock is now and whose duplicate
// window is dupWindow.
func NewLog(now func() time.Time, dupWindow time.Duration) *Log {
	return &Log{now: now, dupWindow: dupWindow, ids: map[string]idEntry{}, last: map[string]uint64{}}
}

// Publish stores m unless its Expect fails or its ID is a duplicate.
func (l *Log) Publish(m Msg, exp *Expect) (PubAck, error) {
	if exp != nil {
		if got := l.LastSeqOn(exp.Filter); got != exp.Seq {
			return PubAck{}, fmt.Errorf("publish %s: %w: %d, not %d", m.Subject, ErrWrongLastSeq, got, exp.Seq)
		}
	}
	now := l.now()
	if m.ID != "" {
		if d, ok := l.ids[m.ID]; ok && now.Sub(d.at) < l.dupWindow {
			return PubAck{Seq: d.seq, Duplicate: true}, nil
		}
	}
	m.Seq = uint64(len(l.msgs)) + 1
	m.Time = now
	l.msgs = append(l.msgs, m)
	if m.ID != "" {
		l.ids[m.ID] = idEntry{seq: m.Seq, at: now}
	}
	for f := range l.last {
		if MatchSubject(f, m.Subject) {
			l.last[f] = m.Seq
		}
	}
	return PubAck{Seq: m.Seq}, nil
}

// PublishBatch stores msgs, each with its Expect (exps[i], nil for none),
// as one atomic batch: all at consecutive sequences, or none (7. above).
// It returns the sequence of each.
func (l *Log) PublishBatch(msgs []Msg, exps []*Expect) ([]uint64, error) {
	now := l.now()
	ids := map[string]bool{}
	for i, m := range msgs {
		if exp := exps[i]; exp != nil {
			for _, prev := range msgs[:i] {
				if prev.Subject == exp.Filter {
					return nil, fmt.Errorf("publish batch: %s checks %s, which the batch writes: %w", m.Subject, exp.Filter, ErrWrongLastSeq)
				}
			}
			if got := l.LastSeqOn(exp.Filter); got != exp.Seq {
				return nil, fmt.Errorf("publish batch: %s: %w: %d, not %d", m.Subject, ErrWrongLastSeq, got, exp.Seq)
			}
		}
		if m.ID == "" {
			continue
		}
		if d, ok := l.ids[m.ID]; ok && now.Sub(d.at) < l.dupWindow || ids[m.ID] {
			return nil, fmt.Errorf("publish batch: id %s repeated: %w", m.ID, ErrBatchRefused)
		}
		ids[m.ID] = true
	}
	seqs := make([]uint64, len(msgs))
	for i, m := range msgs {
		a, _ := l.Publish(m, nil) // checked above: stored
		seqs[i] = a.Seq
	}
	return seqs, nil
}

// LastSeq returns the stream's last sequence (0 when empty).
func (l *Log) LastSeq() uint64 { return uint64(len(l.msgs)) }

// LastSeqOn returns the sequence of the last message on subjects matching
// filter, 0 if none.
func (l *Log) LastSeqOn(filter string) uint64 {
	if s, ok := l.last[filter]; ok {
		return s
	}
	var s uint64
	for i := len(l.msgs) - 1; i >= 0; i-- {
		if MatchSubject(filter, l.msgs[i].Subject) {
			s = l.msgs[i].Seq
			break
		}
	}
	l.last[filter] = s
	return s
}

// Get returns the message stored at seq.
func (l *Log) Get(seq uint64) (Msg, error) {
	if seq == 0 || seq > uint64(len(l.msgs)) {
		return Msg{}, fmt.Errorf("get %d: %w", seq, ErrNotFound)
	}
	return l.msgs[seq-1], nil
}

// Last returns the last message on subjects matching filter.
func (l *Log) Last(filter string) (Msg, error) {
	s := l.LastSeqOn(filter)
	if s == 0 {
		return Msg{}, fmt.Errorf("last %s: %w", filter, ErrNotFound)
	}
	return l.msgs[s-1], nil
}

// MatchSubject reports whether subject matches filter, with NATS
// wildcards: '*' matches one token, a final '>' one or more.
func MatchSubject(filter, subject string) bool {
	for {
		ft, frest, fmore := strings.Cut(filter, ".")
		st, srest, smore := strings.Cut(subject, ".")
		switch {
		case ft == ">":
			return st != ""
		case ft != "*" && ft != st:
			return false
		case !fmore || !smore:
			return fmore == smore
		}
		filter, subject = frest, srest
	}
}

// ConsumerConfig selects what a Consumer delivers.
type ConsumerConfig struct {
	// Filters select subjects (any matching); empty: all.
	Filters []string
	// StartSeq is the first sequence to deliver (0 or 1: the start).
	StartSeq uint64
	// AckWait, if positive, makes deliveries wait for Ack and come again
	// after AckWait without one (explicit ack); 0 delivers each once.
	AckWait time.Duration
}

// Consumer delivers a Log's messages (see the semantics above).
type Consumer struct {
	log     *Log
	cfg     ConsumerConfig
	next    uint64 // next stream sequence to look at
	pending map[uint64]*pendingMsg
}

type pendingMsg struct {
	at time.Time
	n  int
}

// Delivery is one delivered message.
type Delivery struct {
	Msg
	// NumDelivered counts this message's deliveries, this one included.
	NumDelivered int
}

// NewConsumer returns a consumer of l.
func (l *Log) NewConsumer(cfg ConsumerConfig) *Consumer {
	return &Consumer{log: l, cfg: cfg, next: max(cfg.StartSeq, 1), pending: map[uint64]*pendingMsg{}}
}

func (c *Consumer) wants(subject string) bool {
	if len(c.cfg.Filters) == 0 {
		return true
	}
	for _, f := range c.cfg.Filters {
		if MatchSubject(f, subject) {
			return true
		}
	}
	return false
}

// Fetch returns up to n deliveries: first the unacknowledged ones whose
// AckWait passed, in sequence order, then messages not delivered yet.
func (c *Consumer) Fetch(n int) []Delivery {
	var out []Delivery
	now := c.log.now()
	if c.cfg.AckWait > 0 && len(c.pending) > 0 {
		seqs := make([]uint64, 0, len(c.pending))
		for s, p := range c.pending {
			if now.Sub(p.at) >= c.cfg.AckWait {
				seqs = append(seqs, s)
			}
		}
		slices.Sort(seqs)
		for _, s := range seqs {
			if len(out) == n {
				return out
			}
			p := c.pending[s]
			p.n++
			p.at = now
			out = append(out, Delivery{Msg: c.log.msgs[s-1], NumDelivered: p.n})
		}
	}
	for len(out) < n && c.next <= c.log.LastSeq() {
		m := c.log.msgs[c.next-1]
		c.next++
		if !c.wants(m.Subject) {
			continue
		}
		if c.cfg.AckWait > 0 {
			c.pending[m.Seq] = &pendingMsg{at: now, n: 1}
		}
		out = append(out, Delivery{Msg: m, NumDelivered: 1})
	}
	return out
}

// Ack acknowledges the delivery of seq: it is not delivered again.
func (c *Consumer) Ack(seq uint64) { delete(c.pending, seq) }

// KV is a simulated JetStream key-value bucket with History 1 (see the
// semantics above).
type KV struct {
	now  func() time.Time
	ttl  time.Duration
	rev  uint64
	keys map[string]kvEntry
}

type kvEntry struct {
	val     []byte
	rev     uint64
	at      time.Time
	deleted bool
}

// Entry is a key's value and revision.
type Entry struct {
	Key      string
	Value    []byte
	Revision uint64
}

// NewKV returns an empty bucket whose clock is now and whose values expire
// ttl after they were written (0: never).
func NewKV(now func() time.Time, ttl time.Duration) *KV {
	return &KV{now: now, ttl: ttl, keys: map[string]kvEntry{}}
}

// entry returns the key's last message (value or delete marker), if it has
// not expired.
func (kv *KV) entry(key string) (kvEntry, bool) {
	e, ok := kv.keys[key]
	if !ok {
		return kvEntry{}, false
	}
	if kv.ttl > 0 && kv.now().Sub(e.at) >= kv.ttl {
		delete(kv.keys, key)
		return kvEntry{}, false
	}
	return e, true
}

func (kv *KV) write(key string, val []byte, deleted bool) uint64 {
	kv.rev++
	kv.keys[key] = kvEntry{val: slices.Clone(val), rev: kv.rev, at: kv.now(), deleted: deleted}
	return kv.rev
}

// Get returns key's value.
func (kv *KV) Get(key string) (Entry, error) {
	e, ok := kv.entry(key)
	if !ok || e.deleted {
		return Entry{}, fmt.Errorf("get %s: %w", key, ErrNotFound)
	}
	return Entry{Key: key, Value: slices.Clone(e.val), Revision: e.rev}, nil
}

// Put writes key whatever it holds.
func (kv *KV) Put(key string, val []byte) uint64 { return kv.write(key, val, false) }

// Create writes key if it holds no value.
func (kv *KV) Create(key string, val []byte) (uint64, error) {
	if e, ok := kv.entry(key); ok && !e.deleted {
		return 0, fmt.Errorf("create %s: %w", key, ErrKeyExists)
	}
	return kv.write(key, val, false), nil
}

// Update writes key if its last revision is rev.
func (kv *KV) Update(key string, val []byte, rev uint64) (uint64, error) {
	e, _ := kv.entry(key)
	if e.rev != rev {
		return 0, fmt.Errorf("update %s: %w: %d, not %d", key, ErrWrongLastSeq, e.rev, rev)
	}
	return kv.write(key, val, false), nil
}

// Delete removes key's value (a delete marker); with rev > 0 only if its
// last revision is rev.
func (kv *KV) Delete(key string, rev uint64) error {
	e, _ := kv.entry(key)
	if rev > 0 && e.rev != rev {
		return fmt.Errorf("delete %s: %w: %d, not %d", key, ErrWrongLastSeq, e.rev, rev)
	}
	kv.write(key, nil, true)
	return nil
}
