package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/vmguard/vmguard/events"
	"github.com/vmguard/vmguard/internal/natsconn"
	"github.com/vmguard/vmguard/internal/natsd"
)

type benchCmd struct {
	Log      benchLogCmd      `cmd:"" help:"Measure the event log: sync append, async append, replay with decode and schema checks."`
	Failover benchFailoverCmd `cmd:"" help:"Measure failover latency and node-loss recovery with in-process controller, host managers and process-driver guests."`
	Scale    benchScaleCmd    `cmd:"" help:"Measure decisions, failovers, a loss of nodes, cold start, memory and read volume on a simulated cluster (real controller and host managers, simulated guests)."`
}

type benchLogCmd struct {
	Sync       int    `name:"sync" default:"20000" help:"Events for the sync append run."`
	Async      int    `name:"async" default:"200000" help:"Events for the async append run."`
	Replay     int    `name:"replay" default:"1000000" help:"Events in the log for the replay run (filled with async appends)."`
	Durable    bool   `name:"durable" help:"Run the embedded server in the durable default (fsync per write) instead of interval mode."`
	External   bool   `name:"external" help:"Use the server at --nats instead of an embedded one. Its VMGUARD stream must be empty or absent: the benchmark writes fake events, and refuses a log that holds any."`
	Store      string `name:"store" help:"Store dir of the embedded server (default: a temp dir, removed after)."`
	CPUProfile string `name:"cpuprofile" help:"Write a CPU profile of the replay runs (raw and decoded) to this file."`
	Rounds     int    `name:"rounds" default:"1" help:"Replay rounds, each a raw replay then a decoded one."`
}

// Run starts a server (unless --external), runs each measurement and prints
// one line per result.
func (c *benchLogCmd) Run(ctx context.Context, g *globals) error {
	nc, closeServer, err := c.connect(ctx, g)
	if err != nil {
		return err
	}
	defer closeServer()
	defer nc.Close()
	l, err := events.Open(ctx, nc)
	if err != nil {
		return err
	}
	b := &logBench{benchLogCmd: c, out: g.Stdout, nc: nc, l: l}
	for _, measure := range []func(context.Context) error{b.syncAppend, b.rawSync, b.rawAsync, b.rawBatch, b.asyncAppend, b.replay} {
		if err := measure(ctx); err != nil {
			return err
		}
	}
	return nil
}

// connect starts the embedded server (unless --external: the server at
// --nats, refused unless its log is empty), prints which server and mode
// the run measures, and connects to it. closeServer stops the embedded
// server and removes its temporary store.
func (c *benchLogCmd) connect(ctx context.Context, g *globals) (nc *nats.Conn, closeServer func(), err error) {
	url := g.NATS
	mode := "unknown: an external server's sync setting is not visible to a client (its vmguard server banner says it)"
	// An external server is dialled with the connection flags (--creds,
	// --nkey, --tls*, or their variables), as every client is.
	connect := func(opts ...nats.Option) (*nats.Conn, error) { return g.Flags.Connect("vmguard bench log", opts...) }
	closeServer = func() {}
	if c.External {
		if err := refuseNonEmpty(ctx, url, connect); err != nil {
			return nil, nil, err
		}
	} else {
		store, removeStore := c.Store, func() {}
		if store == "" {
			dir, err := os.MkdirTemp("", "vmguard-bench-")
			if err != nil {
				return nil, nil, err
			}
			store, removeStore = dir, func() { os.RemoveAll(dir) }
		}
		s, err := natsd.Start(natsd.Config{StoreDir: store, Port: -1, Interval: !c.Durable})
		if err != nil {
			removeStore()
			return nil, nil, err
		}
		closeServer = func() { s.Shutdown(); removeStore() }
		url = s.ClientURL()
		mode = syncMode(s)
		connect = func(opts ...nats.Option) (*nats.Conn, error) { return nats.Connect(url, opts...) }
	}
	fmt.Fprintf(g.Stdout, "vmguard bench log: server %s, mode %s, GOMAXPROCS %d, over TCP\n", natsconn.Redact(url), mode, runtime.GOMAXPROCS(0))
	if nc, err = connect(); err != nil {
		closeServer()
		return nil, nil, fmt.Errorf("connect: %w", err)
	}
	return nc, closeServer, nil
}

// logBench is one run of bench log: its flags, output and log.
type logBench struct {
	*benchLogCmd
	out io.Writer
	nc  *nats.Conn
	l   *events.Log
}

// benchSample is the benchmark's i-th event: a process exit of a realistic size.
func benchSample(i int) events.Event {
	e := events.New("/vmguard/guests/webvm/agent", "web", events.ProcessExited{
		Guest: "webvm", Service: "httpd", PID: 1000 + i%30000, ExitCode: i % 4, RuntimeMS: int64(i % 5000),
		RequestID: fmt.Sprintf("req-%d", i), Epoch: 1, Output: []string{"starting", "listening on :8080", "fatal: out of cheese"},
	})
	e.CauseID = fmt.Sprintf("req-%d", i)
	return e
}

// rate prints one result line: what, n events in el, their rate and CPU
// per event since c0, then note.
func (b *logBench) rate(what string, n int, el, c0 time.Duration, note string) {
	fmt.Fprintf(b.out, "%-14s %8d events in %7.2fs = %8.0f events/s  %s%s\n", what+":", n, el.Seconds(), float64(n)/el.Seconds(), cpuPer(c0, n), note)
}

// syncAppend appends --sync events one at a time, each waiting for its
// ack.
func (b *logBench) syncAppend(ctx context.Context) error {
	if b.Sync <= 0 {
		return nil
	}
	lat := make([]time.Duration, 0, b.Sync)
	start, c0 := time.Now(), cpuTime()
	for i := range b.Sync {
		t0 := time.Now()
		if _, err := b.l.Append(ctx, benchSample(i)); err != nil {
			return err
		}
		lat = append(lat, time.Since(t0))
	}
	el := time.Since(start)
	slices.Sort(lat)
	b.rate("sync append", b.Sync, el, c0, fmt.Sprintf(" (latency p50 %v, p99 %v)", lat[len(lat)/2], lat[len(lat)*99/100]))
	return nil
}

// raw times publishing n pre-encoded sample events (from the first-th)
// through JetStream alone with publish, which returns how it published
// them, and prints the rate as what: what the server and the round trip
// cost without vmguard's encoding.
func (b *logBench) raw(what string, n, first int, publish func(msgs []*nats.Msg) (string, error)) error {
	if n <= 0 {
		return nil
	}
	msgs, err := encodeAll(b.l, n, func(i int) events.Event { return benchSample(i + first) })
	if err != nil {
		return err
	}
	start, c0 := time.Now(), cpuTime()
	how, err := publish(msgs)
	if err != nil {
		return err
	}
	b.rate(what, n, time.Since(start), c0, how)
	return nil
}

// rawSync publishes --sync messages (raw), each waiting for its ack.
func (b *logBench) rawSync(ctx context.Context) error {
	return b.raw("raw sync", b.Sync, 10_000_000, func(msgs []*nats.Msg) (string, error) {
		for _, m := range msgs {
			if _, err := b.l.JetStream().PublishMsg(ctx, m); err != nil {
				return "", err
			}
		}
		return " (JetStream only, pre-encoded)", nil
	})
}

// rawAsync publishes --async messages (raw), one at a time without
// waiting, and waits for every ack.
func (b *logBench) rawAsync(ctx context.Context) error {
	return b.raw("raw async", b.Async, 20_000_000, func(msgs []*nats.Msg) (string, error) {
		for _, m := range msgs {
			if _, err := b.l.JetStream().PublishMsgAsync(m, jetstream.WithStallWait(30*time.Second)); err != nil {
				return "", err
			}
		}
		// Every ack, not only the batcher's (Log.Flush): without this the
		// last few thousand acks were counted in the next line's time.
		select {
		case <-b.l.JetStream().PublishAsyncComplete():
		case <-ctx.Done():
			return "", ctx.Err()
		}
		return " (JetStream only, pre-encoded, one message at a time)", nil
	})
}

// rawBatch publishes --async messages (raw) in atomic batches of 1,000,
// one in flight, as AppendAsync groups a burst: what the batches
// themselves cost the server, without vmguard.
func (b *logBench) rawBatch(ctx context.Context) error {
	return b.raw("raw batch", b.Async, 30_000_000, func(msgs []*nats.Msg) (string, error) {
		n, err := rawBatches(ctx, b.nc, msgs, 1000)
		return fmt.Sprintf(" (JetStream only, pre-encoded, %d atomic batches)", n), err
	})
}

// asyncAppend appends --async events with AppendAsync.
func (b *logBench) asyncAppend(ctx context.Context) error {
	if b.Async <= 0 {
		return nil
	}
	b0, c0 := b.l.Batches(), cpuTime()
	el, err := appendAsync(ctx, b.l, b.Async, benchSample)
	if err != nil {
		return err
	}
	b.rate("async append", b.Async, el, c0, fmt.Sprintf(" (%d atomic batches)", b.l.Batches()-b0))
	return nil
}

// replay fills the log up to --replay events and replays it, --rounds
// times: raw, raw as Replay reads, then decoded; under the CPU profile if
// asked.
func (b *logBench) replay(ctx context.Context) error {
	if b.Replay <= 0 {
		return nil
	}
	have, err := b.l.LastSeq(ctx)
	if err != nil {
		return err
	}
	if missing := b.Replay - int(have); missing > 0 {
		el, err := appendAsync(ctx, b.l, missing, func(i int) events.Event { return benchSample(i + int(have)) })
		if err != nil {
			return err
		}
		fmt.Fprintf(b.out, "fill:          %8d events in %7.2fs = %8.0f events/s\n", missing, el.Seconds(), float64(missing)/el.Seconds())
	}
	if b.CPUProfile != "" {
		f, err := os.Create(b.CPUProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return fmt.Errorf("start cpu profile: %w", err)
		}
		defer pprof.StopCPUProfile()
	}
	// Rounds alternate raw and decoded replays, so that both see the
	// same share of a machine whose load changes.
	for range max(b.Rounds, 1) {
		c0 := cpuTime()
		n, el, err := rawReplay(ctx, b.l)
		if err != nil {
			return err
		}
		b.rate("raw replay", n, el, c0, " (JetStream only, no decode)")
		c0 = cpuTime()
		if n, el, err = rawConsume(ctx, b.l); err != nil {
			return err
		}
		b.rate("raw consume", n, el, c0, " (JetStream only, no decode, read as Replay reads)")
		n = 0
		start, c0 := time.Now(), cpuTime()
		if _, err := b.l.Replay(ctx, events.ReadOptions{}, func(events.Event) error { n++; return nil }); err != nil {
			return err
		}
		b.rate("replay", n, time.Since(start), c0, fmt.Sprintf(" (decoded and schema-checked; skipped %d)", b.l.Skipped()))
	}
	return nil
}

// cpuTime is the CPU time this process used so far, user and system, every
// thread (the embedded server's too).
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// cpuPer says how much CPU time each of n events took since c0: unlike the
// rate, it does not depend on the share of the machine the run got.
func cpuPer(c0 time.Duration, n int) string {
	if n == 0 {
		return ""
	}
	return fmt.Sprintf("[cpu %5.1f µs/event]", float64(cpuTime()-c0)/float64(n)/1e3)
}

// appendAsync appends n events with AppendAsync from one goroutine per core
// (encoding and schema checks run in parallel) and waits for every ack.
func appendAsync(ctx context.Context, l *events.Log, n int, mk func(int) events.Event) (time.Duration, error) {
	start := time.Now()
	workers := runtime.GOMAXPROCS(0)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += workers {
				if _, err := l.AppendAsync(mk(i)); err != nil {
					mu.Lock()
					firstErr = err
					mu.Unlock()
					return
				}
			}
		}()
	}
	wg.Wait()
	if firstErr != nil {
		return 0, firstErr
	}
	if err := l.Flush(ctx); err != nil {
		return 0, err
	}
	return time.Since(start), nil
}

// rawBatches sends msgs as atomic batches of up to size messages, one
// batch in flight, with the batch headers set directly (no vmguard code),
// and returns how many batches it sent. The stream must allow atomic
// batches.
func rawBatches(ctx context.Context, nc *nats.Conn, msgs []*nats.Msg, size int) (int, error) {
	n := 0
	for len(msgs) > 0 {
		b := msgs[:min(size, len(msgs))]
		msgs = msgs[len(b):]
		id := events.NewID()
		for i, m := range b {
			m.Header.Set("Nats-Batch-Id", id)
			m.Header.Set("Nats-Batch-Sequence", strconv.Itoa(i+1))
			if i < len(b)-1 {
				if err := nc.PublishMsg(m); err != nil {
					return n, fmt.Errorf("send raw batch: %w", err)
				}
			}
		}
		last := b[len(b)-1]
		last.Header.Set("Nats-Batch-Commit", "1")
		rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		resp, err := nc.RequestMsgWithContext(rctx, last)
		cancel()
		if err != nil {
			return n, fmt.Errorf("commit raw batch: %w", err)
		}
		var ack struct {
			Error *struct {
				Description string `json:"description"`
			} `json:"error"`
			Count int `json:"count"`
		}
		if err := json.Unmarshal(resp.Data, &ack); err != nil {
			return n, fmt.Errorf("commit raw batch: read ack %q: %w", resp.Data, err)
		}
		if ack.Error != nil || ack.Count != len(b) {
			return n, fmt.Errorf("commit raw batch: %s", resp.Data)
		}
		n++
	}
	return n, nil
}

// encodeAll encodes n events into NATS messages.
func encodeAll(l *events.Log, n int, mk func(int) events.Event) ([]*nats.Msg, error) {
	msgs := make([]*nats.Msg, n)
	for i := range n {
		m, err := l.Codec().Encode(mk(i))
		if err != nil {
			return nil, err
		}
		msgs[i] = m
	}
	return msgs, nil
}

// rawReplay reads the whole stream with an ordered consumer, without
// decoding, to show what JetStream alone delivers.
func rawReplay(ctx context.Context, l *events.Log) (int, time.Duration, error) {
	last, err := l.LastSeq(ctx)
	if err != nil {
		return 0, 0, err
	}
	start := time.Now()
	cons, err := l.JetStream().OrderedConsumer(ctx, events.StreamName, jetstream.OrderedConsumerConfig{})
	if err != nil {
		return 0, 0, err
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(4096))
	if err != nil {
		return 0, 0, err
	}
	defer it.Stop()
	n := 0
	for {
		m, err := it.Next()
		if err != nil {
			return n, 0, err
		}
		n++
		meta, err := m.Metadata()
		if err != nil {
			return n, 0, err
		}
		if meta.Sequence.Stream >= last {
			return n, time.Since(start), nil
		}
	}
}

// rawConsume reads the whole stream as Log.Replay does (a consumer without
// acknowledgements, Consume's handler, the same pull size) but without
// decoding: the raw peer of a replay, where rawReplay is nats.go's
// ordered consumer.
func rawConsume(ctx context.Context, l *events.Log) (int, time.Duration, error) {
	last, err := l.LastSeq(ctx)
	if err != nil {
		return 0, 0, err
	}
	start := time.Now()
	st, err := l.JetStream().Stream(ctx, events.StreamName)
	if err != nil {
		return 0, 0, err
	}
	cons, err := st.CreateConsumer(ctx, jetstream.ConsumerConfig{AckPolicy: jetstream.AckNonePolicy, MemoryStorage: true, InactiveThreshold: time.Minute})
	if err != nil {
		return 0, 0, err
	}
	defer func() { _ = st.DeleteConsumer(context.WithoutCancel(ctx), cons.CachedInfo().Name) }()
	n := 0
	done := make(chan struct{})
	errs := make(chan error, 1)
	cc, err := cons.Consume(func(m jetstream.Msg) {
		n++
		meta, err := m.Metadata()
		if err != nil {
			select {
			case errs <- err:
			default:
			}
			return
		}
		if meta.Sequence.Stream == last {
			close(done)
		}
	}, jetstream.PullMaxMessagesWithBytesLimit(4096, 4*events.MaxEventSize))
	if err != nil {
		return 0, 0, err
	}
	defer cc.Stop()
	select {
	case <-done:
	case err := <-errs:
		return 0, 0, err
	case <-ctx.Done():
		return 0, 0, ctx.Err()
	}
	el := time.Since(start)
	cc.Stop()
	<-cc.Closed()
	return n, el, nil
}

// refuseNonEmpty refuses a server whose VMGUARD stream holds events: a
// benchmark's fake events in a live log would drive real decisions.
func refuseNonEmpty(ctx context.Context, url string, connect func(...nats.Option) (*nats.Conn, error)) error {
	nc, err := connect(nats.Timeout(5 * time.Second))
	if err != nil {
		return fmt.Errorf("connect to %s: %w", natsconn.Redact(url), err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, events.StreamName)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read stream %s on %s: %w", events.StreamName, url, err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		return fmt.Errorf("read stream %s on %s: %w", events.StreamName, url, err)
	}
	if n := info.State.Msgs; n > 0 {
		return fmt.Errorf("%w: stream %s on %s holds %d events (last seq %d); bench log writes fake events and runs only against an empty log: use a server of its own (no --external)",
			errUsage, events.StreamName, url, n, info.State.LastSeq)
	}
	return nil
}

// benchEnv is a benchmark's own embedded server, in a temporary directory,
// and a connection to it with the event log open.
type benchEnv struct {
	dir string
	srv *server.Server
	nc  *nats.Conn
	l   *events.Log
}

// openBenchEnv starts the server of a benchmark named name, in interval
// mode unless durable; Close stops it and removes its directory.
func openBenchEnv(ctx context.Context, name string, durable bool) (*benchEnv, error) {
	dir, err := os.MkdirTemp("", "vmguard-bench-"+name+"-")
	if err != nil {
		return nil, err
	}
	e := &benchEnv{dir: dir}
	if e.srv, err = natsd.Start(natsd.Config{StoreDir: filepath.Join(dir, "nats"), Port: -1, Interval: !durable}); err != nil {
		e.Close()
		return nil, err
	}
	if e.nc, err = nats.Connect(e.srv.ClientURL(), nats.MaxReconnects(-1)); err != nil {
		e.Close()
		return nil, err
	}
	if e.l, err = events.Open(ctx, e.nc); err != nil {
		e.Close()
		return nil, err
	}
	return e, nil
}

// Close closes the connection, stops the server and removes the directory.
func (e *benchEnv) Close() {
	if e.nc != nil {
		e.nc.Close()
	}
	if e.srv != nil {
		e.srv.Shutdown()
	}
	_ = os.RemoveAll(e.dir)
}
