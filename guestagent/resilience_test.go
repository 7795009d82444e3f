package guestagent_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/vmguard/vmguard/events"
	"github.com/vmguard/vmguard/guestagent"
	"github.com/vmguard/vmguard/internal/natsd/natstest"
)

// childEnv makes the test binary run an agent instead of the tests (see
// TestMain), so a test can kill it with SIGKILL.
const childEnv = "GUESTAGENT_TEST_CHILD"

// childAgent runs an agent configured by the environment until SIGTERM.
func childAgent() int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	nc, err := nats.Connect(os.Getenv("AGENT_NATS"), nats.MaxReconnects(-1), nats.RetryOnFailedConnect(true),
		nats.ReconnectWait(20*time.Millisecond))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer nc.Close()
	a, err := guestagent.New(guestagent.Config{Guest: os.Getenv("AGENT_GUEST"), Conn: nc, StateDir: os.Getenv("AGENT_STATE")})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if err := a.Run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// startChild starts an agent in a child process.
func startChild(t *testing.T, url, guest, state string) *exec.Cmd {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), childEnv+"=1", "AGENT_NATS="+url, "AGENT_GUEST="+guest, "AGENT_STATE="+state)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	return cmd
}

// exitsByRequest counts events per request id and kind.
func countEvents(evs []events.Event) map[string]int {
	n := map[string]int{}
	for _, e := range evs {
		switch d := e.Data.(type) {
		case events.ProcessStarted:
			n[d.RequestID+" started"]++
		case events.ProcessExited:
			n[d.RequestID+" exited"]++
		}
	}
	return n
}

func TestNATSOutage(t *testing.T) {
	srv, url, l := startOutageServer(t)
	ta := startAgent(t, url, nil)
	dir := t.TempDir()
	const n = 5
	for i := range n {
		id := fmt.Sprintf("r%d", i)
		script := fmt.Sprintf(`while [ ! -e %s/go%d ]; do sleep 0.01; done; exit %d`, dir, i, 10+i)
		run(t, ta.client, sh("web", fmt.Sprintf("svc%d", i), id, script))
	}
	natstest.WaitFor(t, 10*time.Second, "starts in the log", func() bool { return len(procEvents(t, l, "web")) == n })

	srv.stop()
	// Let the processes exit in a known order while NATS is down.
	order := []int{3, 0, 4, 1, 2}
	for k, i := range order {
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("go%d", i)), nil, 0o600); err != nil {
			t.Fatal(err)
		}
		natstest.WaitFor(t, 10*time.Second, fmt.Sprintf("agent to see exit %d", k+1), func() bool {
			exited := 0
			for _, p := range ta.Processes() {
				if p.State == guestagent.StateExited {
					exited++
				}
			}
			return exited == k+1
		})
	}
	if u := ta.Undelivered(); u != n {
		t.Fatalf("%d undelivered while the server is down, want %d", u, n)
	}

	srv.start()
	xs := waitExits(t, l, "web", n)
	natstest.WaitFor(t, 10*time.Second, "spool delivered", func() bool { return ta.Undelivered() == 0 })
	xs = exitsOf(procEvents(t, l, "web"))
	if len(xs) != n {
		t.Fatalf("%d exits in the log, want %d", len(xs), n)
	}
	for k, i := range order {
		if xs[k].RequestID != fmt.Sprintf("r%d", i) || xs[k].ExitCode != 10+i {
			t.Errorf("exit %d: %s code %d, want r%d code %d", k, xs[k].RequestID, xs[k].ExitCode, i, 10+i)
		}
	}
	for k, c := range countEvents(procEvents(t, l, "web")) {
		if c != 1 {
			t.Errorf("%s: %d times", k, c)
		}
	}
}

func TestAgentKilledAndRestarted(t *testing.T) {
	srv, url, l := startOutageServer(t)
	state := t.TempDir()
	dir := t.TempDir()
	c := newClient(t, connect(t, url), "g9")
	ping := func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, err := c.Ping(ctx)
		return err == nil
	}

	child := startChild(t, url, "g9", state)
	natstest.WaitFor(t, 20*time.Second, "child agent", ping)
	run(t, c, sh("web", "quick", "r-quick", "echo one; exit 0"))
	tree := run(t, c, sh("web", "tree", "r-tree", "sleep 300 & sleep 300 & wait"))
	run(t, c, sh("web", "late", "r-late", fmt.Sprintf(`while [ ! -e %s/go ]; do sleep 0.01; done; exit 7`, dir)))
	waitExit(t, l, "web", "r-quick")
	natstest.WaitFor(t, 10*time.Second, "starts in the log", func() bool { return len(procEvents(t, l, "web")) == 4 })
	natstest.WaitFor(t, 10*time.Second, "the tree", func() bool { return len(groupMembers(tree.Process.PID)) == 3 })

	// NATS goes away; r-late exits and the agent spools it; then the agent
	// is killed with SIGKILL before it could deliver.
	srv.stop()
	if err := os.WriteFile(filepath.Join(dir, "go"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	natstest.WaitFor(t, 10*time.Second, "r-late's exit in the spool", func() bool {
		files, _ := filepath.Glob(filepath.Join(state, "spool", "journal.*"))
		for _, f := range files {
			b, _ := os.ReadFile(f)
			for _, line := range strings.Split(string(b), "\n") {
				if strings.Contains(line, `"kind":"exited"`) && strings.Contains(line, `"request_id":"r-late"`) {
					return true
				}
			}
		}
		return false
	})
	if err := child.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = child.Wait()
	// The tree's shell died with the agent (parent-death signal), its
	// children are orphans now.
	natstest.WaitFor(t, 10*time.Second, "the tree's leader to die", func() bool { return len(groupMembers(tree.Process.PID)) == 2 })

	srv.start()
	startChild(t, url, "g9", state)
	natstest.WaitFor(t, 20*time.Second, "restarted agent", ping)
	natstest.WaitFor(t, 10*time.Second, "the tree's orphans to be killed", func() bool { return len(groupMembers(tree.Process.PID)) == 0 })
	natstest.WaitFor(t, 20*time.Second, "everything delivered", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		p, err := c.Ping(ctx)
		return err == nil && p.Undelivered == 0 && len(exitsOf(procEvents(t, l, "web"))) == 3
	})

	evs := procEvents(t, l, "web")
	for k, n := range countEvents(evs) {
		if n != 1 {
			t.Errorf("%s: %d times, want once", k, n)
		}
	}
	xs := exitsOf(evs)
	want := []struct {
		id     string
		code   int
		reason string
	}{{"r-quick", 0, ""}, {"r-late", 7, ""}, {"r-tree", -1, guestagent.ReasonAgentRestart}}
	if len(xs) != len(want) {
		t.Fatalf("exits %+v", xs)
	}
	for i, w := range want {
		if xs[i].RequestID != w.id || xs[i].ExitCode != w.code || xs[i].Reason != w.reason {
			t.Errorf("exit %d: %+v, want %+v", i, xs[i], w)
		}
	}
	// The restarted agent still knows the requests: repeats start nothing.
	for _, w := range want {
		r := run(t, c, sh("web", strings.TrimPrefix(w.id, "r-"), w.id, "exit 99"))
		if !r.Duplicate || r.Process.Exit == nil || r.Process.Exit.Reason != w.reason {
			t.Errorf("repeat of %s: %+v", w.id, r)
		}
	}
	if n := len(exitsOf(procEvents(t, l, "web"))); n != 3 {
		t.Errorf("%d exits after repeats, want 3", n)
	}
}

func TestThousandProcesses(t *testing.T) {
	s := startServer(t, t.TempDir(), 0)
	l := openLog(t, s.ClientURL())
	ta := startAgent(t, s.ClientURL(), nil)
	const n = 1000
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += 8 {
				req := guestagent.RunRequest{Package: "big", Service: fmt.Sprintf("s%04d", i), RequestID: fmt.Sprintf("r%04d", i),
					Argv: []string{"sleep", "1000"}}
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				_, err := ta.client.Run(ctx, req)
				cancel()
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	// List and ping while the starts go on (the race detector watches).
	listing := make(chan struct{})
	listed := make(chan int)
	go func() {
		calls := 0
		for {
			select {
			case <-listing:
				listed <- calls
				return
			default:
			}
			if _, err := ta.client.List(context.Background(), guestagent.ListRequest{Exited: true}); err == nil {
				calls++
			}
			_, _ = ta.client.Ping(context.Background())
		}
	}()
	wg.Wait()
	close(listing)
	t.Logf("%d lists during the starts", <-listed)
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	t.Logf("started %d processes in %s", n, time.Since(start))
	ctx := context.Background()
	p, err := ta.client.Ping(ctx)
	if err != nil || p.Running != n {
		t.Fatalf("ping: %+v, %v", p, err)
	}
	list, err := ta.client.List(ctx, guestagent.ListRequest{Package: "big"})
	if err != nil || len(list.Processes) != n {
		t.Fatalf("list: %d, %v", len(list.Processes), err)
	}
	start = time.Now()
	sctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	reply, err := ta.client.Stop(sctx, guestagent.StopRequest{Package: "big"})
	if err != nil || len(reply.Processes) != n {
		t.Fatalf("stop: %d, %v", len(reply.Processes), err)
	}
	for _, p := range reply.Processes {
		if p.Exit == nil || p.Exit.Signal != "SIGTERM" || p.Exit.Reason != guestagent.ReasonStopped {
			t.Fatalf("exit %+v", p)
		}
	}
	t.Logf("stopped %d processes in %s", n, time.Since(start))
	natstest.WaitFor(t, 30*time.Second, "every exit in the log", func() bool { return ta.Undelivered() == 0 })
	counts := countEvents(procEvents(t, l, "big"))
	if len(counts) != 2*n {
		t.Errorf("%d distinct events, want %d", len(counts), 2*n)
	}
	for k, c := range counts {
		if c != 1 {
			t.Errorf("%s: %d times", k, c)
		}
	}
}
