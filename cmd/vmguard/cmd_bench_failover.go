package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/vmguard/vmguard/config"
	"github.com/vmguard/vmguard/events"
	"github.com/vmguard/vmguard/failover"
	"github.com/vmguard/vmguard/hostmanager"
	"github.com/vmguard/vmguard/internal/invariant"
)

// benchFailoverConfig: web's "main" service exits soon after it starts and
// has no restarts, so every start ends in package.failed and a failover;
// "aux" runs until stopped. db never fails; it is what a lost node carries.
const benchFailoverConfig = `cluster: bench
node_timeout: %s
guest_timeout: 5s
nodes: [node1, node2]
packages:
  - name: web
    nodes: [node1, node2]
    guest: {name: webvm, driver: process}
    services:
      - name: main
        cmd: ["sh", "-c", "sleep 0.3; exit 1"]
        halt_timeout: 1s
      - name: aux
        cmd: ["sh", "-c", "while :; do sleep 60; done"]
        halt_timeout: 1s
  - name: db
    nodes: [node1, node2]
    guest: {name: dbvm, driver: process}
    services:
      - name: store
        cmd: ["sh", "-c", "while :; do sleep 60; done"]
        halt_timeout: 1s
`

type benchFailoverCmd struct {
	Failovers   int           `name:"failovers" default:"200" help:"Failovers to measure (package.failed -> every service running on the next node)."`
	NodeLosses  int           `name:"node-losses" default:"5" help:"Node losses to measure (host manager killed -> its packages running elsewhere)."`
	NodeTimeout time.Duration `name:"node-timeout" default:"2s" help:"node_timeout of the benchmark cluster."`
	Durable     bool          `name:"durable" help:"Run the embedded server in the durable default (fsync per write) instead of interval mode."`
}

// benchCluster runs one server, the failover controller and a host manager
// per node in this process, as `vmguard up` does.
type benchCluster struct {
	l     *events.Log
	dir   string
	url   string
	bin   string
	ctx   context.Context
	hosts map[string]context.CancelFunc
	wg    sync.WaitGroup
}

func (b *benchCluster) startHost(node string) error {
	ctx, cancel := context.WithCancel(b.ctx)
	hm, err := hostmanager.NewRunner(hostmanager.Config{
		Node: node, Log: b.l, StateDir: filepath.Join(b.dir, node), AgentBin: b.bin, NATSURL: b.url, Version: version,
	})
	if err != nil {
		cancel()
		return err
	}
	b.hosts[node] = cancel
	b.wg.Add(1)
	go func() { defer b.wg.Done(); _ = hm.Run(ctx) }()
	return nil
}

// Run measures failover and node-loss latency and prints p50/p99.
func (c *benchFailoverCmd) Run(ctx context.Context, g *globals) error {
	env, err := openBenchEnv(ctx, "failover", c.Durable)
	if err != nil {
		return err
	}
	defer env.Close()
	dir, srv, l := env.dir, env.srv, env.l
	cl, err := config.Parse("bench.yaml", []byte(fmt.Sprintf(benchFailoverConfig, c.NodeTimeout)))
	if err != nil {
		return err
	}
	if _, err := applyConfig(ctx, l, cl, "bench.yaml", "bench", ""); err != nil {
		return err
	}
	bin, err := os.Executable()
	if err != nil {
		return err
	}
	runCtx, stopAll := context.WithCancel(ctx)
	b := &benchCluster{l: l, dir: dir, url: srv.ClientURL(), bin: bin, ctx: runCtx, hosts: map[string]context.CancelFunc{}}
	defer func() {
		stopAll()
		b.wg.Wait()
		killStrays(dir)
	}()
	for _, n := range cl.Nodes {
		if err := b.startHost(n); err != nil {
			return err
		}
	}
	fo, err := failover.NewRunner(failover.Config{Log: l, Logger: slog.New(slog.DiscardHandler), ID: "bench"})
	if err != nil {
		return err
	}
	b.wg.Add(1)
	go func() { defer b.wg.Done(); _ = fo.Run(runCtx) }()

	mode := "interval"
	if c.Durable {
		mode = "durable (fsync per write)"
	}
	fmt.Fprintf(g.Stdout, "vmguard bench failover: embedded server (%s), failover controller and 2 host managers in one process, process-driver guests\n", mode)

	w := newWatcher(ctx, l)
	defer w.stop()
	if err := c.failovers(ctx, g, l, w); err != nil {
		return err
	}
	if err := c.nodeLosses(ctx, g, b, w); err != nil {
		return err
	}
	evs, err := allEvents(ctx, l)
	if err != nil {
		return err
	}
	probs := invariant.Check(evs)
	fmt.Fprintf(g.Stdout, "invariants over %d events: %d problems\n", len(evs), len(probs))
	for _, p := range probs {
		fmt.Fprintln(g.Stdout, "  ", p)
	}
	return nil
}

// failovers measures --failovers failovers of web (its main service exits
// with no restart left), from package.failed to every service running on
// the next node, prints the last one step by step, and resets web's failed
// nodes after each so that it may come back.
func (c *benchFailoverCmd) failovers(ctx context.Context, g *globals, l *events.Log, w *watcher) error {
	var fo1 []time.Duration
	for len(fo1) < c.Failovers {
		failed, last, err := nextFailover(ctx, w)
		if err != nil {
			return err
		}
		fo1 = append(fo1, last.Time.Sub(failed.Time))
		if len(fo1) == c.Failovers {
			fmt.Fprintln(g.Stdout, "the last failover, step by step:")
			for _, e := range w.since(failed.Seq - 1) {
				if e.Subject == "web" && e.Seq <= last.Seq {
					fmt.Fprintf(g.Stdout, "  +%7.1fms %s %s\n", float64(e.Time.Sub(failed.Time).Microseconds())/1000, events.ShortType(e.Type()), e.Summary())
				}
			}
		}
		// Clear the failed nodes so the package may come back.
		if _, err := runCommand(ctx, l, failover.Command{Op: failover.OpReset, Package: "web", By: "bench"}); err != nil {
			return err
		}
	}
	report(g, "failover: package.failed -> every service running on the next node", fo1)
	return nil
}

// nextFailover waits for web's next package.failed and returns it with the
// process.started of the last of its services on the node it was placed
// on next.
func nextFailover(ctx context.Context, w *watcher) (failed, last *events.Event, err error) {
	failed = w.next(ctx, 60*time.Second, func(e events.Event) bool {
		_, ok := e.Data.(events.PackageFailed)
		return ok && e.Subject == "web"
	})
	if failed == nil {
		return nil, nil, errors.New("no package.failed of web within 60s")
	}
	placed := w.next(ctx, 30*time.Second, func(e events.Event) bool {
		_, ok := e.Data.(events.PackagePlaced)
		return ok && e.Subject == "web" && e.Seq > failed.Seq
	})
	if placed == nil {
		return nil, nil, errors.New("web was not placed after its failure")
	}
	epoch := placed.Data.(events.PackagePlaced).Epoch
	running := map[string]bool{}
	last = w.next(ctx, 30*time.Second, func(e events.Event) bool {
		if d, ok := e.Data.(events.ProcessStarted); ok && e.Subject == "web" && d.Epoch == epoch {
			running[d.Service] = true
		}
		return len(running) == 2
	})
	if last == nil {
		return nil, nil, errors.New("web's services did not all start on the next node")
	}
	return failed, last, nil
}

// nodeLosses measures --node-losses losses of db's node: its host manager
// killed, until db runs on the other node; the lost node's host manager is
// started again and must rejoin before the next.
func (c *benchFailoverCmd) nodeLosses(ctx context.Context, g *globals, b *benchCluster, w *watcher) error {
	var losses []time.Duration
	for range c.NodeLosses {
		start := w.last(func(e events.Event) bool {
			_, ok := e.Data.(events.PackageStarted)
			return ok && e.Subject == "db"
		})
		if start == nil {
			return errors.New("db is not running")
		}
		node := start.Data.(events.PackageStarted).Node
		killed := time.Now()
		b.hosts[node]() // the host manager stops dead: no halt, its lease lapses
		placed := w.next(ctx, c.NodeTimeout+30*time.Second, func(e events.Event) bool {
			d, ok := e.Data.(events.PackageStarted)
			return ok && e.Subject == "db" && d.Node != node
		})
		if placed == nil {
			return fmt.Errorf("db did not move off the lost node %s", node)
		}
		losses = append(losses, placed.Time.Sub(killed))
		if err := b.startHost(node); err != nil {
			return err
		}
		if w.next(ctx, 30*time.Second, func(e events.Event) bool {
			return e.Type() == events.TypeNodeJoined && e.Subject == node
		}) == nil {
			return fmt.Errorf("node %s did not rejoin", node)
		}
	}
	report(g, fmt.Sprintf("node loss: host manager killed -> packages running elsewhere (node_timeout %v)", c.NodeTimeout), losses)
	return nil
}

func report(g *globals, what string, d []time.Duration) {
	if len(d) == 0 {
		return
	}
	s := slices.Clone(d)
	slices.Sort(s)
	fmt.Fprintf(g.Stdout, "%s: n=%d p50 %v p99 %v max %v\n", what, len(s), s[len(s)/2].Round(time.Microsecond),
		s[min(len(s)-1, len(s)*99/100)].Round(time.Microsecond), s[len(s)-1].Round(time.Microsecond))
}

func allEvents(ctx context.Context, l *events.Log) ([]events.Event, error) {
	var evs []events.Event
	_, err := l.Replay(ctx, events.ReadOptions{}, func(e events.Event) error { evs = append(evs, e); return nil })
	return evs, err
}

// watcher follows the log into memory so a benchmark can wait for events in
// order without re-reading it.
type watcher struct {
	mu     sync.Mutex
	evs    []events.Event
	pos    int
	notify chan struct{}
	cancel context.CancelFunc
}

func newWatcher(ctx context.Context, l *events.Log) *watcher {
	ctx, cancel := context.WithCancel(ctx)
	w := &watcher{notify: make(chan struct{}, 1), cancel: cancel}
	go func() {
		_ = l.Follow(ctx, events.ReadOptions{}, func(e events.Event) error {
			w.mu.Lock()
			w.evs = append(w.evs, e)
			w.mu.Unlock()
			select {
			case w.notify <- struct{}{}:
			default:
			}
			return nil
		})
	}()
	return w
}

func (w *watcher) stop() { w.cancel() }

// next returns the first event from the current position on that matches,
// and moves past it; nil after timeout.
func (w *watcher) next(ctx context.Context, timeout time.Duration, match func(events.Event) bool) *events.Event {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		w.mu.Lock()
		for w.pos < len(w.evs) {
			e := w.evs[w.pos]
			w.pos++
			if match(e) {
				w.mu.Unlock()
				return &e
			}
		}
		w.mu.Unlock()
		select {
		case <-w.notify:
		case <-deadline.C:
			return nil
		case <-ctx.Done():
			return nil
		}
	}
}

// last returns the last event so far that matches, or nil.
func (w *watcher) last(match func(events.Event) bool) *events.Event {
	w.mu.Lock()
	defer w.mu.Unlock()
	for i := len(w.evs) - 1; i >= 0; i-- {
		if match(w.evs[i]) {
			e := w.evs[i]
			return &e
		}
	}
	return nil
}

// since returns the events after stream sequence seq.
func (w *watcher) since(seq uint64) []events.Event {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []events.Event
	for _, e := range w.evs {
		if e.Seq > seq {
			out = append(out, e)
		}
	}
	return out
}
