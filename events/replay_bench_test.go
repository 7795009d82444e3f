package events

import (
	"context"
	"io"
	"log/slog"
	"maps"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// fakeMsg is a delivered message as nats.go hands it over: its own copy of
// the data and headers, and a reply subject saying where it stands.
type fakeMsg struct {
	jetstream.Msg
	subject, reply string
	hdr            nats.Header
	data           []byte
}

func (m *fakeMsg) Subject() string      { return m.subject }
func (m *fakeMsg) Reply() string        { return m.reply }
func (m *fakeMsg) Headers() nats.Header { return m.hdr }
func (m *fakeMsg) Data() []byte         { return m.data }

// Metadata allocates its answer, as nats.go's does.
func (m *fakeMsg) Metadata() (*jetstream.MsgMetadata, error) {
	p, err := positionOf(&fakeMsg{reply: m.reply, Msg: m.Msg})
	if err != nil {
		return nil, err
	}
	meta := &jetstream.MsgMetadata{NumPending: p.pending, Timestamp: time.Unix(0, 1700000000000000000), Stream: StreamName, Consumer: "c"}
	meta.Sequence.Stream, meta.Sequence.Consumer = p.stream, p.consumer
	return meta, nil
}

// fakeIter delivers n copies of one message, as a consumer would.
type fakeIter struct {
	jetstream.MessagesContext
	m    *nats.Msg
	i, n int
}

func (it *fakeIter) Next(...jetstream.NextOpt) (jetstream.Msg, error) {
	if it.i == it.n {
		return nil, io.EOF
	}
	it.i++
	seq := strconv.Itoa(it.i)
	return &fakeMsg{subject: it.m.Subject, hdr: maps.Clone(it.m.Header), data: append([]byte(nil), it.m.Data...),
		reply: "$JS.ACK.VMGUARD.c.1." + seq + "." + seq + ".1700000000000000000." + strconv.Itoa(it.n-it.i)}, nil
}

func (it *fakeIter) Stop() {}

// BenchmarkReplayPipeline measures what a replay costs the client beyond
// the delivery itself: reading each message's position, the decoding
// workers, the in-order hand-off and their garbage, on messages shaped as
// nats.go delivers them (bench log's process.exited), without a server.
// cpu-ns/op is the CPU time an event took on every core.
func BenchmarkReplayPipeline(b *testing.B) {
	l := &Log{logger: slog.New(slog.DiscardHandler)}
	var err error
	if l.codec, err = NewCodec(); err != nil {
		b.Fatal(err)
	}
	m, err := l.codec.Encode(benchEvent(7))
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	c0 := cpuTime(b)
	n := 0
	_, err = l.decodeOrdered(context.Background(), &fakeIter{m: m, n: b.N}, func(Event) error { n++; return nil }, nil, nil, 0, false)
	if err != nil {
		b.Fatal(err)
	}
	if n != b.N {
		b.Fatalf("%d events, want %d", n, b.N)
	}
	b.ReportMetric(float64(cpuTime(b)-c0)/float64(n), "cpu-ns/op")
}
