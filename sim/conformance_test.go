package sim

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/vmguard/vmguard/internal/natsd"
)

// store is what the conformance suite drives: the simulated Log and KV, or
// the same operations on a real embedded nats-server. Errors are mapped
// onto this package's sentinels.
type store interface {
	publish(m Msg, exp *Expect) (PubAck, error)
	// publishBatch stores msgs, each with exps[i], as one atomic batch.
	publishBatch(msgs []Msg, exps []*Expect) ([]uint64, error)
	get(seq uint64) (Msg, error)
	last(filter string) (Msg, error)
	consumer(cfg ConsumerConfig) storeConsumer
	// kv returns a fresh bucket whose values expire after ttl.
	kv(ttl time.Duration) storeKV
	// pass lets d of time go by (simulated: the clock moves; real: d of real
	// time passes, since the engine's windows and timers are in real time).
	pass(d time.Duration)
	// within polls cond until it holds, letting time pass (pass), for at
	// most d of time on the simulated clock and several times d (and some
	// seconds of scheduling slack) on the real engine, whose timers fire
	// some time after they are due.
	within(d time.Duration, cond func() bool) bool
	// dupWindow is the stream's duplicate window.
	dupWindow() time.Duration
}

type storeConsumer interface {
	// fetch returns what the consumer delivers now, waiting at most a
	// moment on the real engine for n of them.
	fetch(n int) []Delivery
	ack(seq uint64)
}

type storeKV interface {
	get(key string) (Entry, error)
	put(key string, val []byte) (uint64, error)
	create(key string, val []byte) (uint64, error)
	update(key string, val []byte, rev uint64) (uint64, error)
	del(key string, rev uint64) error
}

// TestConformance runs one suite against the simulated log and against a
// real embedded nats-server, so that the model cannot drift from the
// engine the runners use.
func TestConformance(t *testing.T) {
	t.Run("sim", func(t *testing.T) { conformance(t, newSimStore()) })
	t.Run("nats", func(t *testing.T) { conformance(t, newNATSStore(t)) })
}

func conformance(t *testing.T, s store) {
	t.Run("ordering", func(t *testing.T) {
		for i := range 5 {
			a, err := s.publish(Msg{Subject: "t.ord.a", ID: "ord-" + strconv.Itoa(i), Data: []byte{byte(i)}}, nil)
			must(t, err)
			m, err := s.get(a.Seq)
			must(t, err)
			if m.Subject != "t.ord.a" || m.Data[0] != byte(i) {
				t.Fatalf("get %d: %+v", a.Seq, m)
			}
			if i > 0 {
				prev, _ := s.get(a.Seq - 1)
				if prev.Data[0] != byte(i-1) {
					t.Fatalf("seq %d holds %v, want the publish before", a.Seq-1, prev.Data)
				}
			}
		}
		// A refused publish takes no sequence.
		a1, err := s.publish(Msg{Subject: "t.ord.b", ID: "ord-b1"}, nil)
		must(t, err)
		if _, err := s.publish(Msg{Subject: "t.ord.b", ID: "ord-b2"}, &Expect{Filter: "t.ord.b", Seq: a1.Seq - 1}); !errors.Is(err, ErrWrongLastSeq) {
			t.Fatalf("stale expect: %v, want ErrWrongLastSeq", err)
		}
		a3, err := s.publish(Msg{Subject: "t.ord.b", ID: "ord-b3"}, nil)
		must(t, err)
		if a3.Seq != a1.Seq+1 {
			t.Fatalf("after a refused publish: seq %d, want %d", a3.Seq, a1.Seq+1)
		}
	})

	t.Run("expected_last_subject_seq", func(t *testing.T) {
		const f = "t.exp.p1.>"
		if _, err := s.last(f); !errors.Is(err, ErrNotFound) {
			t.Fatalf("last of an empty filter: %v", err)
		}
		a, err := s.publish(Msg{Subject: "t.exp.p1.package.placed", ID: "exp-1"}, &Expect{Filter: f, Seq: 0})
		must(t, err)
		// Another package's subjects do not count.
		_, err = s.publish(Msg{Subject: "t.exp.p2.package.placed", ID: "exp-2"}, &Expect{Filter: "t.exp.p2.>", Seq: 0})
		must(t, err)
		if _, err := s.publish(Msg{Subject: "t.exp.p1.guest.started", ID: "exp-3"}, &Expect{Filter: f, Seq: 0}); !errors.Is(err, ErrWrongLastSeq) {
			t.Fatalf("expect 0 after a message: %v", err)
		}
		b, err := s.publish(Msg{Subject: "t.exp.p1.guest.started", ID: "exp-4"}, &Expect{Filter: f, Seq: a.Seq})
		must(t, err)
		// Two writers that read the same sequence: only one is stored.
		_, err1 := s.publish(Msg{Subject: "t.exp.p1.package.placed", ID: "exp-5"}, &Expect{Filter: f, Seq: b.Seq})
		_, err2 := s.publish(Msg{Subject: "t.exp.p1.package.placed", ID: "exp-6"}, &Expect{Filter: f, Seq: b.Seq})
		if err1 != nil || !errors.Is(err2, ErrWrongLastSeq) {
			t.Fatalf("racing writers: %v, %v; want nil, ErrWrongLastSeq", err1, err2)
		}
		m, err := s.last(f)
		must(t, err)
		if m.ID != "exp-5" {
			t.Fatalf("last on %s: %s, want exp-5", f, m.ID)
		}
		// '*' matches one token.
		m, err = s.last("t.exp.*.package.placed")
		must(t, err)
		if m.ID != "exp-5" {
			t.Fatalf("last on t.exp.*.package.placed: %s", m.ID)
		}
	})

	t.Run("dedup", func(t *testing.T) {
		a, err := s.publish(Msg{Subject: "t.dup.x", ID: "dup-1", Data: []byte("one")}, nil)
		must(t, err)
		b, err := s.publish(Msg{Subject: "t.dup.x", ID: "dup-1", Data: []byte("two")}, nil)
		must(t, err)
		if !b.Duplicate || b.Seq != a.Seq {
			t.Fatalf("repeat within the window: %+v, want duplicate of %d", b, a.Seq)
		}
		if m, _ := s.get(a.Seq); string(m.Data) != "one" {
			t.Fatalf("the duplicate replaced the data: %q", m.Data)
		}
		// A retried decision with its original expectation: the expected
		// sequence is checked first, so the retry conflicts (the first
		// attempt moved the subject's last sequence).
		c, err := s.publish(Msg{Subject: "t.dup.p.placed", ID: "dup-2"}, &Expect{Filter: "t.dup.p.>", Seq: 0})
		must(t, err)
		if _, err := s.publish(Msg{Subject: "t.dup.p.placed", ID: "dup-2"}, &Expect{Filter: "t.dup.p.>", Seq: 0}); !errors.Is(err, ErrWrongLastSeq) {
			t.Fatalf("retry with a stale expectation: %v, want ErrWrongLastSeq (expected sequence before dedup)", err)
		}
		// With an expectation that still holds, the id dedups.
		d, err := s.publish(Msg{Subject: "t.dup.p.placed", ID: "dup-2"}, &Expect{Filter: "t.dup.p.>", Seq: c.Seq})
		must(t, err)
		if !d.Duplicate || d.Seq != c.Seq {
			t.Fatalf("retry with a current expectation: %+v, want duplicate of %d", d, c.Seq)
		}
		// After the window the id is stored anew.
		s.pass(s.dupWindow())
		var again PubAck
		if !s.within(2*s.dupWindow(), func() bool {
			again, err = s.publish(Msg{Subject: "t.dup.x", ID: "dup-1", Data: []byte("three")}, nil)
			must(t, err)
			return !again.Duplicate
		}) {
			t.Fatalf("id still deduplicated well after the window")
		}
		if again.Seq <= a.Seq {
			t.Fatalf("stored anew at %d", again.Seq)
		}
	})

	t.Run("atomic_batch", func(t *testing.T) {
		lastSeq := func() uint64 {
			m, err := s.last("t.>")
			must(t, err)
			return m.Seq
		}
		a, err := s.publish(Msg{Subject: "t.bat.p1.package.started", ID: "bat-1"}, nil)
		must(t, err)
		// A marker on p2 and a placement of p1, each with its own guard:
		// stored together, at consecutive sequences.
		seqs, err := s.publishBatch([]Msg{{Subject: "t.bat.p2.package.checked", ID: "bat-2"}, {Subject: "t.bat.p1.package.placed", ID: "bat-3"}},
			[]*Expect{{Filter: "t.bat.p2.>", Seq: 0}, {Filter: "t.bat.p1.>", Seq: a.Seq}})
		must(t, err)
		if fmt.Sprint(seqs) != fmt.Sprint([]uint64{a.Seq + 1, a.Seq + 2}) {
			t.Fatalf("batch stored at %v, want %d and %d", seqs, a.Seq+1, a.Seq+2)
		}
		for i, id := range []string{"bat-2", "bat-3"} {
			m, err := s.get(seqs[i])
			must(t, err)
			if m.ID != id {
				t.Fatalf("seq %d holds %s, want %s", seqs[i], m.ID, id)
			}
		}
		// One stale guard (p2 moved since 0) refuses the whole batch: the
		// placement with a current guard is not stored either.
		end := lastSeq()
		_, err = s.publishBatch([]Msg{{Subject: "t.bat.p2.package.checked", ID: "bat-4"}, {Subject: "t.bat.p1.package.placed", ID: "bat-5"}},
			[]*Expect{{Filter: "t.bat.p2.>", Seq: 0}, {Filter: "t.bat.p1.>", Seq: seqs[1]}})
		if !errors.Is(err, ErrWrongLastSeq) {
			t.Fatalf("batch with a stale guard: %v, want ErrWrongLastSeq", err)
		}
		if got := lastSeq(); got != end {
			t.Fatalf("a refused batch stored something: last seq %d, was %d", got, end)
		}
		// A guard with a wildcard filter is checked against the stream as
		// before the batch, the batch's own writes not counted: a second
		// guard on p3 naming the same sequence holds.
		seqs, err = s.publishBatch([]Msg{{Subject: "t.bat.p3.package.checked", ID: "bat-6"}, {Subject: "t.bat.p3.package.placed", ID: "bat-7"}},
			[]*Expect{{Filter: "t.bat.p3.>", Seq: 0}, {Filter: "t.bat.p3.>", Seq: 0}})
		must(t, err)
		end = seqs[1]
		// A guard on a literal subject the batch already wrote to fails.
		_, err = s.publishBatch([]Msg{{Subject: "t.bat.p4.a", ID: "bat-8"}, {Subject: "t.bat.p4.b", ID: "bat-9"}},
			[]*Expect{nil, {Filter: "t.bat.p4.a", Seq: 0}})
		if !errors.Is(err, ErrWrongLastSeq) {
			t.Fatalf("batch guarding a literal subject it writes: %v, want ErrWrongLastSeq", err)
		}
		// An id stored within the window refuses the batch (no dedup).
		_, err = s.publishBatch([]Msg{{Subject: "t.bat.p5.a", ID: "bat-10"}, {Subject: "t.bat.p1.package.placed", ID: "bat-3"}}, []*Expect{nil, nil})
		if !errors.Is(err, ErrBatchRefused) {
			t.Fatalf("batch repeating a stored id: %v, want ErrBatchRefused", err)
		}
		_, err = s.publishBatch([]Msg{{Subject: "t.bat.p5.a", ID: "bat-11"}, {Subject: "t.bat.p5.b", ID: "bat-11"}}, []*Expect{nil, nil})
		if !errors.Is(err, ErrBatchRefused) {
			t.Fatalf("batch holding an id twice: %v, want ErrBatchRefused", err)
		}
		if got := lastSeq(); got != end {
			t.Fatalf("refused batches stored something: last seq %d, was %d", got, end)
		}
	})

	t.Run("consumer", func(t *testing.T) {
		var seqs []uint64
		for i, subj := range []string{"t.con.a.x", "t.con.b.x", "t.con.a.y", "t.con.c.x", "t.con.a.z"} {
			a, err := s.publish(Msg{Subject: subj, ID: "con-" + strconv.Itoa(i)}, nil)
			must(t, err)
			seqs = append(seqs, a.Seq)
		}
		// From a start sequence, with two filters, in order, once each.
		c := s.consumer(ConsumerConfig{Filters: []string{"t.con.a.>", "t.con.c.*"}, StartSeq: seqs[1]})
		got := seqOf(c.fetch(3))
		if want := []uint64{seqs[2], seqs[3], seqs[4]}; !slices.Equal(got, want) {
			t.Fatalf("filtered from %d: %v, want %v", seqs[1], got, want)
		}
		a, err := s.publish(Msg{Subject: "t.con.a.w", ID: "con-late"}, nil)
		must(t, err)
		if got := seqOf(c.fetch(1)); !slices.Equal(got, []uint64{a.Seq}) {
			t.Fatalf("after a new message: %v, want [%d]", got, a.Seq)
		}
		// Explicit ack: what is not acked comes again after AckWait, first.
		const wait = 400 * time.Millisecond
		r := s.consumer(ConsumerConfig{Filters: []string{"t.con.a.>"}, StartSeq: seqs[0], AckWait: wait})
		ds := r.fetch(4)
		if got := seqOf(ds); !slices.Equal(got, []uint64{seqs[0], seqs[2], seqs[4], a.Seq}) {
			t.Fatalf("first deliveries: %v", got)
		}
		r.ack(seqs[0])
		r.ack(seqs[4])
		r.ack(a.Seq)
		var re []Delivery
		if !s.within(wait, func() bool { re = append(re, r.fetch(1)...); return len(re) > 0 }) {
			t.Fatalf("no redelivery after AckWait")
		}
		if re[0].Seq != seqs[2] || re[0].NumDelivered != 2 {
			t.Fatalf("redelivery: seq %d delivered %d times, want seq %d twice", re[0].Seq, re[0].NumDelivered, seqs[2])
		}
		r.ack(seqs[2])
		n, err := s.publish(Msg{Subject: "t.con.a.v", ID: "con-new"}, nil)
		must(t, err)
		if got := seqOf(r.fetch(1)); !slices.Equal(got, []uint64{n.Seq}) {
			t.Fatalf("after acks: %v, want only the new %d", got, n.Seq)
		}
		r.ack(n.Seq)
	})

	t.Run("kv", func(t *testing.T) {
		kv := s.kv(0)
		r1, err := kv.create("node1", []byte("a"))
		must(t, err)
		if _, err := kv.create("node1", []byte("b")); !errors.Is(err, ErrKeyExists) {
			t.Fatalf("create of a held key: %v", err)
		}
		r2, err := kv.put("node2", []byte("x"))
		must(t, err)
		if r2 <= r1 {
			t.Fatalf("revisions are bucket-wide and increasing: %d then %d", r1, r2)
		}
		if _, err := kv.update("node1", []byte("c"), r1+100); !errors.Is(err, ErrWrongLastSeq) {
			t.Fatalf("update with a wrong revision: %v", err)
		}
		r3, err := kv.update("node1", []byte("c"), r1)
		must(t, err)
		if r3 <= r2 {
			t.Fatalf("update revision %d, not after %d", r3, r2)
		}
		e, err := kv.get("node1")
		must(t, err)
		if string(e.Value) != "c" || e.Revision != r3 {
			t.Fatalf("get: %+v", e)
		}
		if err := kv.del("node1", r1); !errors.Is(err, ErrWrongLastSeq) {
			t.Fatalf("delete with a stale revision: %v", err)
		}
		must(t, kv.del("node1", r3))
		if _, err := kv.get("node1"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("get after delete: %v", err)
		}
		r4, err := kv.create("node1", []byte("d"))
		must(t, err)
		if r4 <= r3+1 {
			t.Fatalf("create after delete: revision %d, want past the delete marker (%d)", r4, r3+1)
		}
	})

	t.Run("kv_ttl", func(t *testing.T) {
		const ttl = time.Second
		kv := s.kv(ttl)
		r1, err := kv.put("node1", []byte("a"))
		must(t, err)
		if e, err := kv.get("node1"); err != nil || e.Revision != r1 {
			t.Fatalf("fresh value: %+v, %v", e, err)
		}
		if !s.within(ttl, func() bool { _, err := kv.get("node1"); return errors.Is(err, ErrNotFound) }) {
			t.Fatalf("value not gone after its ttl")
		}
		if _, err := kv.update("node1", []byte("b"), r1); !errors.Is(err, ErrWrongLastSeq) {
			t.Fatalf("update of an expired revision: %v", err)
		}
		if _, err := kv.create("node1", []byte("c")); err != nil {
			t.Fatalf("create after expiry: %v", err)
		}
	})
}

func seqOf(ds []Delivery) []uint64 {
	var out []uint64
	for _, d := range ds {
		out = append(out, d.Seq)
	}
	return out
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// simStore is the simulated log on a simulated clock.
type simStore struct {
	clock *Clock
	log   *Log
}

func newSimStore() *simStore {
	c := NewClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	return &simStore{clock: c, log: NewLog(c.Now, 2*time.Second)}
}

func (s *simStore) publish(m Msg, exp *Expect) (PubAck, error) { return s.log.Publish(m, exp) }
func (s *simStore) publishBatch(msgs []Msg, exps []*Expect) ([]uint64, error) {
	return s.log.PublishBatch(msgs, exps)
}
func (s *simStore) get(seq uint64) (Msg, error)     { return s.log.Get(seq) }
func (s *simStore) last(filter string) (Msg, error) { return s.log.Last(filter) }
func (s *simStore) dupWindow() time.Duration        { return 2 * time.Second }
func (s *simStore) pass(d time.Duration)            { s.clock.Advance(d) }
func (s *simStore) kv(ttl time.Duration) storeKV    { return simKV{NewKV(s.clock.Now, ttl)} }
func (s *simStore) consumer(cfg ConsumerConfig) storeConsumer {
	return simConsumer{s.log.NewConsumer(cfg)}
}

func (s *simStore) within(d time.Duration, cond func() bool) bool {
	step := d / 20
	for end := s.clock.Now().Add(d); ; s.clock.Advance(step) {
		if cond() {
			return true
		}
		if s.clock.Now().After(end) {
			return false
		}
	}
}

type simConsumer struct{ c *Consumer }

func (c simConsumer) fetch(n int) []Delivery { return c.c.Fetch(n) }
func (c simConsumer) ack(seq uint64)         { c.c.Ack(seq) }

type simKV struct{ kv *KV }

func (k simKV) get(key string) (Entry, error)            { return k.kv.Get(key) }
func (k simKV) put(key string, v []byte) (uint64, error) { return k.kv.Put(key, v), nil }
func (k simKV) create(key string, v []byte) (uint64, error) {
	return k.kv.Create(key, v)
}
func (k simKV) update(key string, v []byte, rev uint64) (uint64, error) {
	return k.kv.Update(key, v, rev)
}
func (k simKV) del(key string, rev uint64) error { return k.kv.Delete(key, rev) }

// natsStore is the same suite on a real embedded nats-server: a stream
// configured as events.StreamConfig is (file storage, limits, direct get)
// but with a short duplicate window, and KV buckets as internal/lease
// makes them (History 1, TTL).
type natsStore struct {
	t      *testing.T
	js     jetstream.JetStream
	stream jetstream.Stream
	window time.Duration
	nkv    int
}

func newNATSStore(t *testing.T) *natsStore {
	srv := natsd.StartTest(t)
	nc := natsd.Connect(t, srv)
	js, err := jetstream.New(nc)
	must(t, err)
	const window = 2 * time.Second
	st, err := js.CreateStream(context.Background(), jetstream.StreamConfig{
		Name: "CONFORM", Subjects: []string{"t.>"}, Storage: jetstream.FileStorage,
		Retention: jetstream.LimitsPolicy, Discard: jetstream.DiscardNew, Duplicates: window, AllowDirect: true,
		AllowAtomicPublish: true,
	})
	must(t, err)
	return &natsStore{t: t, js: js, stream: st, window: window}
}

func ctx10() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 10*time.Second)
}

func mapErr(err error) error {
	var apiErr *jetstream.APIError
	switch {
	case err == nil:
		return nil
	case errors.Is(err, jetstream.ErrKeyNotFound), errors.Is(err, jetstream.ErrKeyDeleted), errors.Is(err, jetstream.ErrMsgNotFound):
		return fmt.Errorf("%w: %v", ErrNotFound, err)
	case errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant):
		return fmt.Errorf("%w: %v", ErrWrongLastSeq, err)
	}
	return err
}

func (s *natsStore) publish(m Msg, exp *Expect) (PubAck, error) {
	ctx, cancel := ctx10()
	defer cancel()
	nm := nats.NewMsg(m.Subject)
	nm.Data = m.Data
	if m.ID != "" {
		nm.Header.Set(jetstream.MsgIDHeader, m.ID)
	}
	if exp != nil {
		nm.Header.Set(jetstream.ExpectedLastSubjSeqHeader, strconv.FormatUint(exp.Seq, 10))
		nm.Header.Set(jetstream.ExpectedLastSubjSeqSubjHeader, exp.Filter)
	}
	a, err := s.js.PublishMsg(ctx, nm)
	if err != nil {
		return PubAck{}, mapErr(err)
	}
	return PubAck{Seq: a.Sequence, Duplicate: a.Duplicate}, nil
}

// publishBatch sends msgs with the batch headers, as events.Log does: the
// last one commits and alone is answered.
func (s *natsStore) publishBatch(msgs []Msg, exps []*Expect) ([]uint64, error) {
	ctx, cancel := ctx10()
	defer cancel()
	id := fmt.Sprintf("conform-%d", time.Now().UnixNano())
	nc := s.js.Conn()
	for i, m := range msgs {
		nm := nats.NewMsg(m.Subject)
		nm.Data = m.Data
		if m.ID != "" {
			nm.Header.Set(jetstream.MsgIDHeader, m.ID)
		}
		if exp := exps[i]; exp != nil {
			nm.Header.Set(jetstream.ExpectedLastSubjSeqHeader, strconv.FormatUint(exp.Seq, 10))
			nm.Header.Set(jetstream.ExpectedLastSubjSeqSubjHeader, exp.Filter)
		}
		nm.Header.Set("Nats-Batch-Id", id)
		nm.Header.Set("Nats-Batch-Sequence", strconv.Itoa(i+1))
		if i < len(msgs)-1 {
			must(s.t, nc.PublishMsg(nm))
			continue
		}
		nm.Header.Set("Nats-Batch-Commit", "1")
		resp, err := nc.RequestMsgWithContext(ctx, nm)
		must(s.t, err)
		var ack struct {
			Error *jetstream.APIError `json:"error"`
			Seq   uint64              `json:"seq"`
		}
		must(s.t, json.Unmarshal(resp.Data, &ack))
		if ack.Error != nil {
			if err := mapErr(ack.Error); errors.Is(err, ErrWrongLastSeq) {
				return nil, err
			}
			return nil, fmt.Errorf("%w: %v", ErrBatchRefused, ack.Error)
		}
		seqs := make([]uint64, len(msgs))
		for j := range seqs {
			seqs[j] = ack.Seq - uint64(len(msgs)-1-j)
		}
		return seqs, nil
	}
	return nil, nil
}

func (s *natsStore) get(seq uint64) (Msg, error) {
	ctx, cancel := ctx10()
	defer cancel()
	r, err := s.stream.GetMsg(ctx, seq)
	if err != nil {
		return Msg{}, mapErr(err)
	}
	return Msg{Subject: r.Subject, ID: r.Header.Get(jetstream.MsgIDHeader), Data: r.Data, Seq: r.Sequence, Time: r.Time}, nil
}

func (s *natsStore) last(filter string) (Msg, error) {
	ctx, cancel := ctx10()
	defer cancel()
	r, err := s.stream.GetLastMsgForSubject(ctx, filter)
	if err != nil {
		return Msg{}, mapErr(err)
	}
	return Msg{Subject: r.Subject, ID: r.Header.Get(jetstream.MsgIDHeader), Data: r.Data, Seq: r.Sequence, Time: r.Time}, nil
}

func (s *natsStore) dupWindow() time.Duration { return s.window }

// pass lets real time go by: the engine's windows are measured in it.
// Nothing is awaited here; outcomes are polled by within.
func (s *natsStore) pass(d time.Duration) { time.Sleep(d) }

func (s *natsStore) within(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(5*d + 10*time.Second)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (s *natsStore) consumer(cfg ConsumerConfig) storeConsumer {
	ctx, cancel := ctx10()
	defer cancel()
	cc := jetstream.ConsumerConfig{FilterSubjects: cfg.Filters, AckPolicy: jetstream.AckNonePolicy, MemoryStorage: true}
	if cfg.StartSeq > 0 {
		cc.DeliverPolicy, cc.OptStartSeq = jetstream.DeliverByStartSequencePolicy, cfg.StartSeq
	}
	if cfg.AckWait > 0 {
		cc.AckPolicy, cc.AckWait = jetstream.AckExplicitPolicy, cfg.AckWait
	}
	c, err := s.stream.CreateConsumer(ctx, cc)
	must(s.t, err)
	return &natsConsumer{t: s.t, c: c, msgs: map[uint64]jetstream.Msg{}}
}

type natsConsumer struct {
	t    *testing.T
	c    jetstream.Consumer
	msgs map[uint64]jetstream.Msg
}

func (c *natsConsumer) fetch(n int) []Delivery {
	var out []Delivery
	deadline := time.Now().Add(3 * time.Second)
	for len(out) < n && time.Now().Before(deadline) {
		b, err := c.c.Fetch(n-len(out), jetstream.FetchMaxWait(500*time.Millisecond))
		must(c.t, err)
		for m := range b.Messages() {
			md, err := m.Metadata()
			must(c.t, err)
			c.msgs[md.Sequence.Stream] = m
			out = append(out, Delivery{Msg: Msg{Subject: m.Subject(), ID: m.Headers().Get(jetstream.MsgIDHeader), Data: m.Data(), Seq: md.Sequence.Stream},
				NumDelivered: int(md.NumDelivered)})
		}
	}
	return out
}

func (c *natsConsumer) ack(seq uint64) {
	ctx, cancel := ctx10()
	defer cancel()
	must(c.t, c.msgs[seq].DoubleAck(ctx))
}

func (s *natsStore) kv(ttl time.Duration) storeKV {
	ctx, cancel := ctx10()
	defer cancel()
	s.nkv++
	kv, err := s.js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "conform" + strconv.Itoa(s.nkv), History: 1, TTL: ttl, Storage: jetstream.FileStorage})
	must(s.t, err)
	return natsKV{kv}
}

type natsKV struct{ kv jetstream.KeyValue }

func (k natsKV) get(key string) (Entry, error) {
	ctx, cancel := ctx10()
	defer cancel()
	e, err := k.kv.Get(ctx, key)
	if err != nil {
		return Entry{}, mapErr(err)
	}
	return Entry{Key: key, Value: e.Value(), Revision: e.Revision()}, nil
}

func (k natsKV) put(key string, v []byte) (uint64, error) {
	ctx, cancel := ctx10()
	defer cancel()
	r, err := k.kv.Put(ctx, key, v)
	return r, mapErr(err)
}

func (k natsKV) create(key string, v []byte) (uint64, error) {
	ctx, cancel := ctx10()
	defer cancel()
	r, err := k.kv.Create(ctx, key, v)
	if errors.Is(err, jetstream.ErrKeyExists) {
		// nats.go's ErrKeyExists is the engine's wrong-last-sequence
		// error (same code): here, on a create, it means the key is held.
		return 0, fmt.Errorf("%w: %v", ErrKeyExists, err)
	}
	return r, mapErr(err)
}

func (k natsKV) update(key string, v []byte, rev uint64) (uint64, error) {
	ctx, cancel := ctx10()
	defer cancel()
	r, err := k.kv.Update(ctx, key, v, rev)
	return r, mapErr(err)
}

func (k natsKV) del(key string, rev uint64) error {
	ctx, cancel := ctx10()
	defer cancel()
	var opts []jetstream.KVDeleteOpt
	if rev > 0 {
		opts = append(opts, jetstream.LastRevision(rev))
	}
	return mapErr(k.kv.Delete(ctx, key, opts...))
}
