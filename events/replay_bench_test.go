package events

import (
	"context"
	"log/slog"
	"maps"
	"strconv"
	"sync"
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

// fakeSource delivers n copies of one message to a Consume handler, on one
// goroutine, as a consumer would.
type fakeSource struct {
	m *nats.Msg
	n int
}

// fakeConsume is fakeSource's ConsumeContext.
type fakeConsume struct {
	stop, closed chan struct{}
	once         sync.Once
}

func (c *fakeConsume) Stop()                   { c.once.Do(func() { close(c.stop) }) }
func (c *fakeConsume) Drain()                  { c.Stop() }
func (c *fakeConsume) Closed() <-chan struct{} { return c.closed }

func (s *fakeSource) Consume(handle jetstream.MessageHandler, _ ...jetstream.PullConsumeOpt) (jetstream.ConsumeContext, error) {
	c := &fakeConsume{stop: make(chan struct{}), closed: make(chan struct{})}
	go func() {
		defer close(c.closed)
		for i := 1; i <= s.n; i++ {
			select {
			case <-c.stop:
				return
			default:
			}
			seq := strconv.Itoa(i)
			handle(&fakeMsg{subject: s.m.Subject, hdr: maps.Clone(s.m.Header), data: append([]byte(nil), s.m.Data...),
				reply: "$JS.ACK.VMGUARD.c.1." + seq + "." + seq + ".1700000000000000000." + strconv.Itoa(s.n-i)})
		}
		<-c.stop
	}()
	return c, nil
}

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
	_, err = l.decodeOrdered(context.Background(), &fakeSource{m: m, n: b.N}, func(Event) error { n++; return nil }, replayRead{pull: replayPull(0, 0)})
	if err != nil {
		b.Fatal(err)
	}
	if n != b.N {
		b.Fatalf("%d events, want %d", n, b.N)
	}
	b.ReportMetric(float64(cpuTime(b)-c0)/float64(n), "cpu-ns/op")
}
