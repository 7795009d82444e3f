package guestagent_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/vmguard/vmguard/events"
	"github.com/vmguard/vmguard/guestagent"
	"github.com/vmguard/vmguard/internal/natsd"
	"github.com/vmguard/vmguard/internal/natsd/natstest"
)

// testAgent is an agent running in-process against a real server.
type testAgent struct {
	*guestagent.Agent
	client *guestagent.Client
	state  string
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
}

// stop cancels the agent and waits for Run to return.
func (ta *testAgent) stop(t testing.TB) {
	t.Helper()
	ta.once.Do(func() {
		ta.cancel()
		select {
		case err := <-ta.done:
			if err != nil {
				t.Errorf("agent run: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Errorf("agent did not stop in 30s")
		}
	})
}

func connect(t testing.TB, url string) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(url, nats.MaxReconnects(-1), nats.ReconnectWait(20*time.Millisecond),
		nats.RetryOnFailedConnect(true))
	if err != nil {
		t.Fatalf("connect %s: %v", url, err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// startAgent runs an agent for guest g1 on its own connection to url.
func startAgent(t testing.TB, url string, mod func(*guestagent.Config)) *testAgent {
	t.Helper()
	return startAgentWith(t, url, mod, nil)
}

// startAgentWith is startAgent, calling before (if set) on the agent before
// it runs.
func startAgentWith(t testing.TB, url string, mod func(*guestagent.Config), before func(*guestagent.Agent)) *testAgent {
	t.Helper()
	cfg := guestagent.Config{
		Guest:     "g1",
		Conn:      connect(t, url),
		StateDir:  t.TempDir(),
		Heartbeat: 50 * time.Millisecond,
		Version:   "1.2.3",
	}
	if mod != nil {
		mod(&cfg)
	}
	// The agent does not provision the stream; the server side does.
	if _, err := events.Open(context.Background(), cfg.Conn); err != nil {
		t.Fatal(err)
	}
	a, err := guestagent.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if before != nil {
		before(a)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ta := &testAgent{Agent: a, state: cfg.StateDir, cancel: cancel, done: make(chan error, 1)}
	go func() { ta.done <- a.Run(ctx) }()
	t.Cleanup(func() { ta.stop(t) })
	ta.client = newClient(t, connect(t, url), cfg.Guest)
	natstest.WaitFor(t, 10*time.Second, "agent ping", func() bool {
		pctx, c := context.WithTimeout(context.Background(), time.Second)
		defer c()
		_, err := ta.client.Ping(pctx)
		return err == nil
	})
	return ta
}

func newClient(t testing.TB, nc *nats.Conn, guest string) *guestagent.Client {
	t.Helper()
	c, err := guestagent.NewClient(nc, guest)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// startServer runs a server in interval mode; port 0 picks a free one.
func startServer(t testing.TB, dir string, port int) *server.Server {
	t.Helper()
	if port == 0 {
		port = -1
	}
	s, err := natsd.Start(natsd.Config{StoreDir: dir, Port: port, Interval: true})
	if err != nil {
		t.Fatalf("start nats server: %v", err)
	}
	t.Cleanup(s.Shutdown)
	return s
}

// outageServer is a test server that goes away and comes back on the
// same store and port, for the tests of NATS outages.
type outageServer struct {
	t     testing.TB
	store string
	port  int
	s     *server.Server
}

// startOutageServer starts an outageServer and opens the log on it; it
// returns the server, its URL and the log.
func startOutageServer(t testing.TB) (*outageServer, string, *events.Log) {
	t.Helper()
	o := &outageServer{t: t, store: t.TempDir()}
	o.s = startServer(t, o.store, 0)
	o.port = o.s.Addr().(*net.TCPAddr).Port
	url := o.s.ClientURL()
	return o, url, openLog(t, url)
}

// stop shuts the server down and waits until it is down.
func (o *outageServer) stop() {
	o.s.Shutdown()
	o.s.WaitForShutdown()
}

// start starts the server again on its store and port.
func (o *outageServer) start() {
	o.t.Helper()
	o.s = startServer(o.t, o.store, o.port)
}

// openLog opens the log (creating the stream) on its own connection.
func openLog(t testing.TB, url string) *events.Log {
	t.Helper()
	l, err := events.Open(context.Background(), connect(t, url))
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// procEvents returns the process events of pkg in log order.
func procEvents(t testing.TB, l *events.Log, pkg string) []events.Event {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var out []events.Event
	_, err := l.Replay(ctx, events.ReadOptions{Subjects: []string{
		events.PackageSubject(pkg, "process", "started"), events.PackageSubject(pkg, "process", "exited"),
	}}, func(e events.Event) error {
		out = append(out, e)
		return nil
	})
	if err != nil {
		t.Fatalf("replay %s: %v", pkg, err)
	}
	return out
}

// exitsOf returns the process.exited events of pkg, in log order.
func exitsOf(evs []events.Event) []events.ProcessExited {
	var out []events.ProcessExited
	for _, e := range evs {
		if x, ok := e.Data.(events.ProcessExited); ok {
			out = append(out, x)
		}
	}
	return out
}

// waitExits waits until pkg has n process.exited events and returns them.
func waitExits(t testing.TB, l *events.Log, pkg string, n int) []events.ProcessExited {
	t.Helper()
	var xs []events.ProcessExited
	natstest.WaitFor(t, 20*time.Second, fmt.Sprintf("%d exits of %s in the log", n, pkg), func() bool {
		xs = exitsOf(procEvents(t, l, pkg))
		return len(xs) >= n
	})
	return xs
}

// waitExit waits for the exit of one request.
func waitExit(t testing.TB, l *events.Log, pkg, requestID string) (events.Event, events.ProcessExited) {
	t.Helper()
	var ev events.Event
	var x events.ProcessExited
	natstest.WaitFor(t, 20*time.Second, "exit of "+requestID, func() bool {
		for _, e := range procEvents(t, l, pkg) {
			if d, ok := e.Data.(events.ProcessExited); ok && d.RequestID == requestID {
				ev, x = e, d
				return true
			}
		}
		return false
	})
	return ev, x
}

// sh builds a run request for `sh -c script`.
func sh(pkg, svc, id, script string) guestagent.RunRequest {
	return guestagent.RunRequest{Package: pkg, Service: svc, RequestID: id, Epoch: 7, Argv: []string{"sh", "-c", script}}
}

func run(t testing.TB, c *guestagent.Client, req guestagent.RunRequest) guestagent.RunReply {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := c.Run(ctx, req)
	if err != nil {
		t.Fatalf("run %s: %v", req.RequestID, err)
	}
	return r
}

// groupMembers lists live (non-zombie) processes in process group pgid.
func groupMembers(pgid int) []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		i := strings.LastIndexByte(string(b), ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b[i+1:]))
		if len(f) < 3 || f[0] == "Z" {
			continue
		}
		if g, _ := strconv.Atoi(f[2]); g == pgid {
			pids = append(pids, pid)
		}
	}
	return pids
}
