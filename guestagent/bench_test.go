package guestagent_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vmguard/vmguard/events"
	"github.com/vmguard/vmguard/guestagent"
	"github.com/vmguard/vmguard/internal/natsd"
	"github.com/vmguard/vmguard/internal/natsd/natstest"
)

// latencies collects durations and reports percentiles as metrics.
type latencies struct {
	mu sync.Mutex
	d  []time.Duration
}

func (l *latencies) add(d time.Duration) {
	l.mu.Lock()
	l.d = append(l.d, d)
	l.mu.Unlock()
}

func (l *latencies) report(b *testing.B, name string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.d) == 0 {
		return
	}
	sort.Slice(l.d, func(i, j int) bool { return l.d[i] < l.d[j] })
	pct := func(p float64) float64 {
		i := int(p * float64(len(l.d)-1))
		return float64(l.d[i].Microseconds()) / 1000
	}
	b.ReportMetric(pct(0.50), name+"-p50-ms")
	b.ReportMetric(pct(0.99), name+"-p99-ms")
}

// benchEnv is a server (interval or durable mode), the log, a follower of
// the bench package's process events and an in-process agent.
type benchEnv struct {
	agent  *guestagent.Agent
	client *guestagent.Client
	seen   chan events.Event
	// inAgent holds exit observed -> log acknowledged, measured by the agent.
	inAgent latencies
}

func newBenchEnv(b *testing.B, durable bool) *benchEnv {
	s, err := natsd.Start(natsd.Config{StoreDir: b.TempDir(), Port: -1, Interval: !durable})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(s.Shutdown)
	l := openLog(b, s.ClientURL())
	env := &benchEnv{seen: make(chan events.Event, 1024)}
	a, err := guestagent.New(guestagent.Config{Guest: "bench", Conn: connect(b, s.ClientURL()), StateDir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	a.SetOnDelivered(func(kind string, at time.Time) {
		if kind == "exited" {
			env.inAgent.add(time.Since(at))
		}
	})
	env.agent = a
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := a.Run(ctx); err != nil {
			b.Error(err)
		}
	}()
	go func() {
		_ = l.Follow(ctx, events.ReadOptions{Subjects: []string{events.PackageFilter("bench")}}, func(e events.Event) error {
			env.seen <- e
			return nil
		})
	}()
	b.Cleanup(func() { cancel(); <-done })
	env.client = newClient(b, connect(b, s.ClientURL()), "bench")
	natstest.WaitFor(b, 10*time.Second, "agent", func() bool {
		_, err := env.client.Ping(context.Background())
		return err == nil
	})
	return env
}

// await returns once the log holds an event of typ for request id.
func (env *benchEnv) await(b *testing.B, typ, id string) {
	t := time.NewTimer(10 * time.Second)
	defer t.Stop()
	for {
		select {
		case e := <-env.seen:
			switch d := e.Data.(type) {
			case events.ProcessStarted:
				if typ == events.TypeProcessStarted && d.RequestID == id {
					return
				}
			case events.ProcessExited:
				if typ == events.TypeProcessExited && d.RequestID == id {
					return
				}
			}
		case <-t.C:
			b.Fatalf("no %s for %s in 10s", typ, id)
		}
	}
}

func modes(b *testing.B, f func(b *testing.B, durable bool)) {
	b.Run("interval", func(b *testing.B) { f(b, false) })
	b.Run("durable", func(b *testing.B) { f(b, true) })
}

// BenchmarkExitToLog measures a process's exit (the benchmark SIGKILLs it)
// until a log consumer receives its stored process.exited ("e2e"), and the
// agent's own part: exit observed until the log acknowledged the append
// ("agent").
func BenchmarkExitToLog(b *testing.B) {
	modes(b, func(b *testing.B, durable bool) {
		env := newBenchEnv(b, durable)
		var e2e latencies
		ctx := context.Background()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			id := fmt.Sprintf("x%d", i)
			r, err := env.client.Run(ctx, guestagent.RunRequest{Package: "bench", Service: "s", RequestID: id, Argv: []string{"sleep", "1000"}})
			if err != nil {
				b.Fatal(err)
			}
			env.await(b, events.TypeProcessStarted, id)
			t0 := time.Now()
			if err := syscall.Kill(r.Process.PID, syscall.SIGKILL); err != nil {
				b.Fatal(err)
			}
			env.await(b, events.TypeProcessExited, id)
			e2e.add(time.Since(t0))
		}
		b.StopTimer()
		e2e.report(b, "e2e")
		env.inAgent.report(b, "agent")
	})
}

// BenchmarkRunToStarted measures a run request sent by a client until a
// log consumer receives the stored process.started ("e2e"), and until the
// client has the reply ("reply": the process runs and its start is spooled).
func BenchmarkRunToStarted(b *testing.B) {
	modes(b, func(b *testing.B, durable bool) {
		env := newBenchEnv(b, durable)
		var e2e, reply latencies
		ctx := context.Background()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			id := fmt.Sprintf("r%d", i)
			t0 := time.Now()
			if _, err := env.client.Run(ctx, guestagent.RunRequest{Package: "bench", Service: "s", RequestID: id, Argv: []string{"true"}}); err != nil {
				b.Fatal(err)
			}
			reply.add(time.Since(t0))
			env.await(b, events.TypeProcessStarted, id)
			e2e.add(time.Since(t0))
			env.await(b, events.TypeProcessExited, id)
		}
		b.StopTimer()
		e2e.report(b, "e2e")
		reply.report(b, "reply")
	})
}

// BenchmarkAgentRSS builds the agent binaries, runs each as an agent and
// reports its resident memory (VmRSS, RssAnon, RssFile) idle, with 1,000
// processes, and after stopping them: `vmguard agent` (the one binary, with
// nats-server linked in), the slim `vmguard-agent`, and the slim one with
// --node while a lease is renewed (fencing on). It measures once per run:
// use -benchtime=1x.
func BenchmarkAgentRSS(b *testing.B) {
	for _, c := range []struct {
		name, pkg string
		args      []string
		node      bool
	}{
		{"vmguard", "github.com/vmguard/vmguard/cmd/vmguard", []string{"agent"}, false},
		{"vmguard-agent", "github.com/vmguard/vmguard/cmd/vmguard-agent", nil, false},
		{"vmguard-agent-node", "github.com/vmguard/vmguard/cmd/vmguard-agent", nil, true},
	} {
		b.Run(c.name, func(b *testing.B) { agentRSS(b, c.pkg, c.args, c.node) })
	}
}

func agentRSS(b *testing.B, pkg string, args []string, node bool) {
	gobin, err := exec.LookPath("go")
	if err != nil {
		b.Skip("go tool not in PATH: cannot build the agent")
	}
	bin := filepath.Join(b.TempDir(), "agent")
	build := exec.Command(gobin, "build", "-o", bin, pkg)
	if out, err := build.CombinedOutput(); err != nil {
		b.Fatalf("build %s: %v\n%s", pkg, err, out)
	}
	if fi, err := os.Stat(bin); err == nil {
		b.ReportMetric(float64(fi.Size())/1e6, "binary-MB")
	}
	s, err := natsd.Start(natsd.Config{StoreDir: b.TempDir(), Port: -1, Interval: true})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(s.Shutdown)
	openLog(b, s.ClientURL())
	nc := connect(b, s.ClientURL())
	hb, err := nc.SubscribeSync(guestagent.HeartbeatSubject("rss"))
	if err != nil {
		b.Fatal(err)
	}
	args = append(args, "--guest", "rss", "--nats", s.ClientURL(), "--state", b.TempDir())
	if node {
		const ttl = 5 * time.Second
		renewer(b, leaseBucket(b, s.ClientURL(), ttl), "node1", ttl)
		args = append(args, "--node", "node1")
	}
	cmd := exec.Command(bin, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	defer func() {
		if b.Failed() {
			b.Logf("agent stderr:\n%s", stderr.String())
		}
	}()
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
	}()
	c := newClient(b, nc, "rss")
	ctx := context.Background()
	// Idle: after five heartbeats.
	for range 5 {
		if _, err := hb.NextMsg(10 * time.Second); err != nil {
			b.Fatal(err)
		}
	}
	if node {
		natstest.WaitFor(b, 10*time.Second, "lease held", func() bool {
			p, err := c.Ping(ctx)
			return err == nil && p.Lease == guestagent.LeaseHeld
		})
	}
	idle := procStatus(b, cmd.Process.Pid)

	const n = 1000
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += 8 {
				_, err := c.Run(ctx, guestagent.RunRequest{Package: "rss", Service: fmt.Sprintf("s%d", i), RequestID: fmt.Sprintf("r%d", i), Argv: []string{"sleep", "1000"}})
				if err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	natstest.WaitFor(b, 30*time.Second, "spool delivered", func() bool {
		p, err := c.Ping(ctx)
		return err == nil && p.Running == n && p.Undelivered == 0
	})
	busy := procStatus(b, cmd.Process.Pid)
	sctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if _, err := c.Stop(sctx, guestagent.StopRequest{Package: "rss"}); err != nil {
		b.Fatal(err)
	}
	after := procStatus(b, cmd.Process.Pid)
	b.ReportMetric(idle.rss, "idle-RSS-MB")
	b.ReportMetric(idle.anon, "idle-RssAnon-MB")
	b.ReportMetric(idle.file, "idle-RssFile-MB")
	b.ReportMetric(idle.threads, "idle-threads")
	b.ReportMetric(busy.rss, "1000procs-RSS-MB")
	b.ReportMetric(busy.anon, "1000procs-RssAnon-MB")
	b.ReportMetric(busy.threads, "1000procs-threads")
	b.ReportMetric(after.rss, "after-stop-RSS-MB")
}

// memStatus is what procStatus reads, sizes in MB.
type memStatus struct{ rss, anon, file, threads float64 }

// procStatus returns VmRSS, RssAnon (the agent's own memory), RssFile (the
// binary's mapped pages) and the thread count of pid.
func procStatus(b *testing.B, pid int) memStatus {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	var m memStatus
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), ":")
		fields := strings.Fields(v)
		if len(fields) == 0 {
			continue
		}
		n, _ := strconv.ParseFloat(fields[0], 64)
		switch k {
		case "VmRSS":
			m.rss = n / 1024
		case "RssAnon":
			m.anon = n / 1024
		case "RssFile":
			m.file = n / 1024
		case "Threads":
			m.threads = n
		}
	}
	return m
}
