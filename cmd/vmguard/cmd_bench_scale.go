package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/vmguard/vmguard/config"
	"github.com/vmguard/vmguard/events"
	"github.com/vmguard/vmguard/failover"
	"github.com/vmguard/vmguard/hostmanager"
	"github.com/vmguard/vmguard/internal/invariant"
	"github.com/vmguard/vmguard/internal/simguest"
)

type benchScaleCmd struct {
	Nodes       int           `name:"nodes" default:"20" help:"Nodes, each a real host manager in this process."`
	Packages    int           `name:"packages" default:"100" help:"Packages, one simulated guest and one service each."`
	Candidates  int           `name:"candidates" default:"3" help:"Nodes each package may run on (consecutive nodes, spread evenly)."`
	Exits       int           `name:"exits" default:"100" help:"Service exits to inject (packages with restarts left: service.restarting)."`
	Failures    int           `name:"failures" default:"20" help:"Package failures to inject (a service exit with no restart: package.failed, then a failover)."`
	Lost        int           `name:"lost" default:"10" help:"Nodes lost at once (host manager and guests gone)."`
	NodeTimeout time.Duration `name:"node-timeout" default:"5s" help:"node_timeout of the benchmark cluster."`
	Heartbeat   time.Duration `name:"heartbeat" default:"1s" help:"Heartbeat interval of the simulated guests."`
	Durable     bool          `name:"durable" help:"Run the embedded server in the durable default (fsync per write) instead of interval mode."`
	Timeout     time.Duration `name:"timeout" default:"10m" help:"Bound of each phase."`
	MemProfile  string        `name:"memprofile" help:"Write a heap profile to this file once the cluster is up."`
	ReadAll     bool          `name:"read-all" help:"Host managers read and fold the whole log, as before they read only what concerns their node (for comparison)."`
	PerConn     int           `name:"per-conn" default:"50" help:"Host managers per group; each group has a NATS connection for its host managers' log, one for their leases and one for their simulated guests, so that one slow reader cannot cut off every part."`
	Controller  string        `name:"controller" enum:"process,inproc" default:"process" help:"Run the failover controller as its own OS process (vmguard failover, its memory measured alone) or in this process on a connection of its own (process, inproc)."`
	Bin         string        `name:"bin" help:"vmguard binary the controller process runs (default: this executable)."`
	ServerLog   string        `name:"server-log" help:"Keep the embedded server's log in this file (default: in the benchmark's directory, removed at the end; its warnings and errors are counted and summed up either way)."`
	CPUProfile  string        `name:"cpuprofile" help:"Write a CPU profile of the whole run to this file."`
	JoinWave    int           `name:"join-wave" help:"Start the host managers this many at a time, each wave once the one before has joined (bounded by --timeout), instead of all at once (0): 1,000 host managers reading a large configuration at once need its decoding's memory 1,000 times over."`
	HostLog     string        `name:"host-log" help:"Write every host manager's log (info and above) to this file."`
	OwnConfig   bool          `name:"own-config" help:"Each host manager parses and keeps its own copy of the configuration, as on a real host, instead of sharing one parse with the others in this process (hostmanager.ConfigCache): ~40 MB each at 10,000 packages."`
}

// scaleConfig returns the benchmark's configuration: even packages restart
// their service without limit, odd ones never (an exit fails the package
// on its node and the controller moves it).
func (c *benchScaleCmd) scaleConfig() string {
	var b strings.Builder
	fmt.Fprintf(&b, "cluster: scale\nnode_timeout: %s\nguest_timeout: 10s\nnodes:\n", c.NodeTimeout)
	for i := range c.Nodes {
		fmt.Fprintf(&b, "  - %s\n", scaleNode(i))
	}
	b.WriteString("packages:\n")
	for i := range c.Packages {
		var nodes []string
		for k := range min(c.Candidates, c.Nodes) {
			nodes = append(nodes, scaleNode((i+k)%c.Nodes))
		}
		restart := "unlimited"
		if i%2 == 1 {
			restart = "0"
		}
		fmt.Fprintf(&b, "  - name: %s\n    nodes: [%s]\n    guest: {name: %s, driver: process, start_timeout: 60s}\n"+
			"    services:\n      - {name: main, cmd: [sim], restart: %s, halt_timeout: 1s, backoff: {delay: 10ms, factor: 1, max: 10ms}}\n",
			scalePkg(i), strings.Join(nodes, ", "), "g"+scalePkg(i)[1:], restart)
	}
	return b.String()
}

func scaleNode(i int) string { return fmt.Sprintf("n%04d", i) }
func scalePkg(i int) string  { return fmt.Sprintf("p%05d", i) }

// Run builds the cluster, injects exits, failures and a loss of nodes and
// prints what it measured.
//
// Longer than 80 lines: a benchmark is one script of phases (build, inject,
// measure, print) that share its clocks, counters and servers; it reads top
// to bottom and has no caller but the CLI.
func (c *benchScaleCmd) Run(ctx context.Context, g *globals) error {
	if c.Candidates < 2 || c.Nodes < c.Candidates || c.Packages < 2 {
		return errors.New("bench scale: want --candidates >= 2, --nodes >= --candidates and --packages >= 2")
	}
	if c.PerConn < 1 {
		return errors.New("bench scale: want --per-conn >= 1")
	}
	if c.Lost > c.Nodes/c.Candidates {
		fmt.Fprintf(g.Stdout, "(--lost %d lowered to %d: the lost nodes are --candidates apart so that every package keeps a node)\n", c.Lost, c.Nodes/c.Candidates)
		c.Lost = c.Nodes / c.Candidates
	}
	out := g.Stdout
	if c.CPUProfile != "" {
		f, err := os.Create(c.CPUProfile)
		if err != nil {
			return fmt.Errorf("write cpu profile: %w", err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return fmt.Errorf("write cpu profile: %w", err)
		}
		defer pprof.StopCPUProfile()
	}
	rss0, _ := procMem("self")
	env, err := openBenchEnv(ctx, "scale", c.Durable)
	if err != nil {
		return err
	}
	defer env.Close()
	dir, nc, l := env.dir, env.nc, env.l
	serverLog := c.ServerLog
	if serverLog == "" {
		serverLog = filepath.Join(dir, "server.log")
	}
	cw, err := newConnWatch(serverLog)
	if err != nil {
		return err
	}
	env.srv.SetLogger(cw, false, false)
	defer func() {
		where := serverLog
		if c.ServerLog == "" {
			where = "removed with the benchmark's directory; --server-log keeps it"
		}
		cw.summary(out, where)
	}()
	cw.watch(nc, "bench")
	cl, err := config.Parse("scale.yaml", []byte(c.scaleConfig()))
	if err != nil {
		return err
	}
	mode := "interval"
	if c.Durable {
		mode = "durable (fsync per write)"
	}
	ngroups := (c.Nodes + c.PerConn - 1) / c.PerConn
	ctlWhere := "its own OS process (vmguard failover)"
	if c.Controller == "inproc" {
		ctlWhere = "this process, on a connection of its own"
	}
	share := "one parse of the configuration shared by all"
	if c.OwnConfig {
		share = "each with its own parse of the configuration"
	}
	fmt.Fprintf(out, "vmguard bench scale: %d nodes, %d packages (%d candidate nodes each), node_timeout %v; embedded server (%s); the failover controller in %s; %d host managers (%s) and %d simulated guests (internal/simguest) in this process, in %d groups of up to %d host managers, each group on 3 NATS connections (log, leases, guests); GOMAXPROCS %d\n",
		c.Nodes, c.Packages, c.Candidates, c.NodeTimeout, mode, ctlWhere, c.Nodes, share, c.Packages, ngroups, c.PerConn, runtime.GOMAXPROCS(0))

	var conns []*nats.Conn // closed once every part using them has stopped
	defer func() {
		for _, nc := range conns {
			nc.Close()
		}
	}()
	var ctl *controllerProc
	defer func() {
		if ctl != nil {
			ctl.stop()
		}
	}()
	runCtx, stopAll := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() { stopAll(); wg.Wait() }()
	// Every connection is opened before any host manager starts: a server
	// busy with hundreds of starting host managers can take longer than a
	// request's bound to answer the log's stream lookup.
	open := func(name string, withLog bool) (*nats.Conn, *events.Log, error) {
		gnc, err := cw.connect(env.srv.ClientURL(), name)
		if err != nil {
			return nil, nil, err
		}
		conns = append(conns, gnc)
		if !withLog {
			return gnc, nil, nil
		}
		gl, err := events.Open(ctx, gnc)
		return gnc, gl, err
	}
	type group struct {
		hm, guests *events.Log
		lease      *nats.Conn
	}
	var groups []group
	var hmConns, guestConns []*nats.Conn
	for i := range ngroups {
		name := fmt.Sprintf("group %d", i)
		hnc, hl, err := open(name+" host managers", true)
		if err != nil {
			return err
		}
		gnc, gl, err := open(name+" guests", true)
		if err != nil {
			return err
		}
		lnc, _, err := open(name+" leases", false)
		if err != nil {
			return err
		}
		groups = append(groups, group{hm: hl, guests: gl, lease: lnc})
		hmConns, guestConns = append(hmConns, hnc), append(guestConns, gnc)
	}
	var ctlLog *events.Log
	if c.Controller == "inproc" {
		if _, ctlLog, err = open("controller", true); err != nil {
			return err
		}
	}
	sim := simguest.New(runCtx, l, c.Heartbeat)
	w := newWatcher(ctx, l)
	defer w.stop()

	t0 := time.Now()
	if _, err := applyConfig(ctx, l, cl, "scale.yaml", "bench", ""); err != nil {
		return err
	}
	hosts := map[string]context.CancelFunc{}
	runners := map[string]*hostmanager.Runner{}
	hmLogger := slog.New(slog.DiscardHandler)
	if c.HostLog != "" {
		f, err := os.Create(c.HostLog)
		if err != nil {
			return fmt.Errorf("create host manager log: %w", err)
		}
		defer f.Close()
		hmLogger = slog.New(slog.NewTextHandler(f, nil))
	}
	var configs *hostmanager.ConfigCache
	if !c.OwnConfig {
		configs = hostmanager.NewConfigCache()
	}
	for i, n := range cl.Nodes {
		gr := groups[i/c.PerConn]
		hctx, cancel := context.WithCancel(runCtx)
		hm, err := hostmanager.NewRunner(hostmanager.Config{
			Node: n, Log: gr.hm, LeaseConn: gr.lease, Logger: hmLogger.With("node", n), StateDir: filepath.Join(dir, n), Version: version,
			Drivers:      map[string]hostmanager.Driver{config.DriverProcess: sim.DriverOn(n, gr.guests)},
			ReadWholeLog: c.ReadAll, Configs: configs,
		})
		if err != nil {
			cancel()
			return err
		}
		hosts[n], runners[n] = cancel, hm
		wg.Add(1)
		go func() { defer wg.Done(); _ = hm.Run(hctx) }()
		if c.JoinWave > 0 && (i+1)%c.JoinWave == 0 && i+1 < len(cl.Nodes) {
			if err := waitJoined(ctx, w, i+1, c.Timeout); err != nil {
				return err
			}
		}
	}
	if c.Controller == "inproc" {
		fo, err := failover.NewRunner(failover.Config{Log: ctlLog, Logger: slog.New(slog.DiscardHandler), ID: "bench"})
		if err != nil {
			return err
		}
		wg.Add(1)
		go func() { defer wg.Done(); _ = fo.Run(runCtx) }()
	} else {
		bin := c.Bin
		if bin == "" {
			if bin, err = os.Executable(); err != nil {
				return fmt.Errorf("find the vmguard binary: %w (use --bin)", err)
			}
		}
		if ctl, err = startController(bin, env.srv.ClientURL(), filepath.Join(dir, "controller.log")); err != nil {
			return err
		}
	}
	// ctlMem returns the controller process's RSS and its peak (0 in
	// process).
	ctlMem := func() (int64, int64) {
		if ctl == nil {
			return 0, 0
		}
		return procMem(strconv.Itoa(ctl.cmd.Process.Pid))
	}
	// ctlGone says why the phase that timed out may have: the controller
	// process ended.
	ctlGone := func() string {
		if ctl == nil {
			return ""
		}
		if ended, err := ctl.exited(); ended {
			return fmt.Sprintf(" (the controller process ended: %v)", err)
		}
		return ""
	}

	// Phase 1: every package running.
	running := map[string]bool{}
	joined, said := 0, time.Now()
	if w.next(ctx, c.Timeout, func(e events.Event) bool {
		switch e.Type() {
		case events.TypePackageStarted:
			running[e.Subject] = true
		case events.TypeNodeJoined:
			joined++
		}
		if time.Since(said) >= 30*time.Second {
			said = time.Now()
			fmt.Fprintf(out, "  (%v: %d node.joined, %d of %d packages running, log at seq %d)\n",
				time.Since(t0).Round(time.Second), joined, len(running), c.Packages, e.Seq)
		}
		return len(running) == c.Packages
	}) == nil {
		byType := map[string]int{}
		for _, e := range w.since(0) {
			byType[events.ShortType(e.Type())]++
		}
		return fmt.Errorf("only %d of %d packages running after %v; the log holds %v%s", len(running), c.Packages, c.Timeout, byType, ctlGone())
	}
	up := time.Since(t0)
	seqUp := w.last(func(events.Event) bool { return true }).Seq
	fmt.Fprintf(out, "cold cluster start: config applied -> all %d packages running in %v: %d events, %.0f events/s sustained\n",
		c.Packages, up.Round(time.Millisecond), seqUp, float64(seqUp)/up.Seconds())
	runtime.GC()
	rss, _ := procMem("self")
	what := "server, controller, host managers, simulated guests"
	if ctl != nil {
		what = "server, host managers, simulated guests"
	}
	fmt.Fprintf(out, "memory (this process: %s): RSS %.1f MB before, %.1f MB with the cluster up: %.1f KB per package, %.1f KB per node\n",
		what, mb(rss0), mb(rss), float64(rss-rss0)/1024/float64(c.Packages), float64(rss-rss0)/1024/float64(c.Nodes))
	if r, hwm := ctlMem(); ctl != nil {
		fmt.Fprintf(out, "memory (the controller process alone, %d packages): RSS %.1f MB with the cluster up, peak %.1f MB\n", c.Packages, mb(r), mb(hwm))
	}
	consumers := func() string {
		si, err := l.JetStream().Stream(ctx, events.StreamName)
		if err != nil {
			return "unknown: " + err.Error()
		}
		return strconv.Itoa(si.CachedInfo().State.Consumers)
	}
	fmt.Fprintf(out, "consumers on the log's stream with the cluster up: %s\n", consumers())
	if c.MemProfile != "" {
		if err := writeHeapProfile(c.MemProfile); err != nil {
			return err
		}
	}

	// Phase 2: service exits (restarts) and package failures (failovers).
	var restartDec, restartDone, failDec, failover1 []time.Duration
	decided := map[string]int{}
	// inject makes pkg's service exit and returns the exit, the node it
	// ran on and the decision that answered it: the first event about pkg
	// after the exit that a host manager or the controller wrote.
	inject := func(pkg string) (*events.Event, string, *events.Event, error) {
		trig, node, ok, err := sim.Exit(ctx, pkg, "main", 1)
		if err != nil || !ok {
			return nil, "", nil, fmt.Errorf("exit %s: running %v: %v", pkg, ok, err)
		}
		dec := w.next(ctx, c.Timeout, func(e events.Event) bool {
			return e.Subject == pkg && e.Seq > trig.Seq && !strings.HasPrefix(e.Source, "/vmguard/guests/")
		})
		if dec == nil {
			return nil, "", nil, fmt.Errorf("no decision on %s's exit", pkg)
		}
		decided[events.ShortType(dec.Type())]++
		return &trig, node, dec, nil
	}
	for k := range c.Exits {
		pkg := scalePkg((2 * k) % c.Packages &^ 1)
		trig, _, d, err := inject(pkg)
		if err != nil {
			return err
		}
		restartDec = append(restartDec, d.Time.Sub(trig.Time))
		st := w.next(ctx, c.Timeout, func(e events.Event) bool {
			return e.Subject == pkg && e.Type() == events.TypeProcessStarted && e.Seq > trig.Seq
		})
		if st == nil {
			return fmt.Errorf("%s's service did not restart", pkg)
		}
		restartDone = append(restartDone, st.Time.Sub(trig.Time))
	}
	// Printed now: a later phase that does not end leaves these behind.
	report(g, "decision: process.exited (restart left) appended -> host manager's decision appended", restartDec)
	report(g, "restart: process.exited -> process.started again", restartDone)
	for k := range min(c.Failures, c.Packages/2) {
		pkg := scalePkg(2*k + 1)
		trig, node, d, err := inject(pkg)
		if err != nil {
			return err
		}
		failDec = append(failDec, d.Time.Sub(trig.Time))
		st := w.next(ctx, c.Timeout, func(e events.Event) bool {
			s, ok := e.Data.(events.PackageStarted)
			return ok && e.Subject == pkg && s.Node != node
		})
		if st == nil {
			return fmt.Errorf("%s did not start on another node after failing on %s", pkg, node)
		}
		failover1 = append(failover1, st.Time.Sub(trig.Time))
	}
	fmt.Fprintf(out, "decisions on injected exits, by type: %v\n", decided)
	report(g, "decision: process.exited (no restart left) appended -> decision appended", failDec)
	report(g, "failover: process.exited (no restart left) -> package.started on another node", failover1)

	// Phase 3: a loss of c.Lost nodes at once, Candidates apart, so that
	// every package keeps a node to go to.
	lost := map[string]bool{}
	want := map[string]bool{}
	for i := range c.Lost {
		n := scaleNode(i * c.Candidates)
		lost[n] = true
		for _, p := range sim.Packages(n) {
			want[p] = true
		}
	}
	mark := w.last(func(events.Event) bool { return true }).Seq
	killed := time.Now()
	for n := range lost {
		hosts[n]() // the host manager stops dead: no halt, its lease lapses
		sim.Crash(n)
	}
	moved := map[string]time.Duration{}
	if len(want) > 0 && w.next(ctx, c.NodeTimeout+c.Timeout, func(e events.Event) bool {
		if s, ok := e.Data.(events.PackageStarted); ok && e.Seq > mark && want[e.Subject] && !lost[s.Node] {
			if _, seen := moved[e.Subject]; !seen {
				moved[e.Subject] = e.Time.Sub(killed)
			}
		}
		return len(moved) == len(want)
	}) == nil {
		return fmt.Errorf("%d of %d packages of the lost nodes running elsewhere", len(moved), len(want))
	}
	var mv []time.Duration
	for _, d := range moved {
		mv = append(mv, d)
	}
	sort.Slice(mv, func(i, j int) bool { return mv[i] < mv[j] })
	allMoved := time.Duration(0)
	if len(mv) > 0 {
		allMoved = mv[len(mv)-1]
	}
	fmt.Fprintf(out, "loss of %d nodes at once: all %d of their packages running elsewhere %v after the kill (node_timeout %v; target node_timeout + 2s = %v)\n",
		c.Lost, len(want), allMoved.Round(time.Millisecond), c.NodeTimeout, c.NodeTimeout+2*time.Second)
	report(g, "  per package: kill -> package.started elsewhere", mv)
	if r, hwm := ctlMem(); ctl != nil {
		fmt.Fprintf(out, "memory (the controller process alone, after the loss): RSS %.1f MB, peak %.1f MB over the whole run\n", mb(r), mb(hwm))
	}

	// Phase 4: controller cold start on the resulting log.
	// A standby (the controller "bench" leads) from New to caught up.
	last, err := l.LastSeq(ctx)
	if err != nil {
		return err
	}
	cold := func(id string, noSnap bool) (time.Duration, failover.Stats, error) {
		start := time.Now()
		r, err := failover.NewRunner(failover.Config{Log: l, Logger: slog.New(slog.DiscardHandler), ID: id, NoSnapshot: noSnap})
		if err != nil {
			return 0, failover.Stats{}, err
		}
		cctx, cancel := context.WithCancel(runCtx)
		done := make(chan struct{})
		go func() { defer close(done); _ = r.Run(cctx) }()
		defer func() { cancel(); <-done }() // a run that ends writes its snapshot
		select {
		case <-r.CaughtUp():
			return time.Since(start), r.Stats(), nil
		case <-time.After(c.Timeout):
			return 0, failover.Stats{}, fmt.Errorf("controller cold start: not caught up after %v", c.Timeout)
		}
	}
	took, _, err := cold("cold-replay", true)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "controller cold start without a snapshot: %v to catch up with %d events\n", took.Round(time.Millisecond), last)
	if _, _, err := cold("snapshot-writer", false); err != nil {
		return err
	}
	took, st, err := cold("cold-snapshot", false)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "controller cold start with a snapshot (at seq %d of %d): %v to catch up\n", st.SnapshotSeq, last, took.Round(time.Millisecond))

	// Read volume: what each host manager's reads received (replay,
	// follow, its index of placements and catch-ups).
	si, err := l.JetStream().Stream(ctx, events.StreamName)
	if err != nil {
		return err
	}
	info := si.CachedInfo()
	fmt.Fprintf(out, "consumers on the log's stream at the end: %d\n", info.State.Consumers)
	received := func(conns []*nats.Conn) (msgs, bytes uint64) {
		for _, nc := range conns {
			st := nc.Stats()
			msgs, bytes = msgs+st.InMsgs, bytes+st.InBytes
		}
		return msgs, bytes
	}
	hmMsgs, hmBytes := received(hmConns)
	gMsgs, gBytes := received(guestConns)
	var readMsgs, readBytes []int64
	var sumBytes int64
	for _, r := range runners {
		m, b := r.ReadStats()
		readMsgs, readBytes = append(readMsgs, int64(m)), append(readBytes, int64(b))
		sumBytes += int64(b)
	}
	slices.Sort(readMsgs)
	slices.Sort(readBytes)
	what = "each reads only its node's, the cluster's and its packages' subjects, and every package.placed"
	if c.ReadAll {
		what = "each reads the whole log (--read-all)"
	}
	fmt.Fprintf(out, "log: %d events, %.1f MB; host managers (%s): messages read per host p50 %d max %d, bytes per host p50 %.2f MB max %.2f MB, %.1f MB for the cluster; the host managers' %d log connections received %d messages, %.1f MB; the guests' %d connections %d messages, %.1f MB\n",
		info.State.Msgs, mb(int64(info.State.Bytes)), what, readMsgs[len(readMsgs)/2], readMsgs[len(readMsgs)-1],
		mb(readBytes[len(readBytes)/2]), mb(readBytes[len(readBytes)-1]), mb(sumBytes),
		len(hmConns), hmMsgs, mb(int64(hmBytes)), len(guestConns), gMsgs, mb(int64(gBytes)))

	evs, err := allEvents(ctx, l)
	if err != nil {
		return err
	}
	probs := invariant.Check(evs)
	fmt.Fprintf(out, "invariants over %d events: %d problems\n", len(evs), len(probs))
	for i, p := range probs {
		if i == 20 {
			fmt.Fprintf(out, "   ... %d more\n", len(probs)-20)
			break
		}
		fmt.Fprintln(out, "  ", p)
	}
	if len(probs) > 0 {
		return fmt.Errorf("bench scale: %d invariant problems", len(probs))
	}
	return nil
}

// waitJoined waits, at most timeout, until the log holds a node.joined of
// n nodes.
func waitJoined(ctx context.Context, w *watcher, n int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	for {
		joined := map[string]bool{}
		for _, e := range w.since(0) {
			if e.Type() == events.TypeNodeJoined {
				joined[e.Subject] = true
			}
		}
		if len(joined) >= n {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("bench scale: %d of the first %d host managers joined after %v", len(joined), n, timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

func mb(b int64) float64 { return float64(b) / (1 << 20) }

// writeHeapProfile writes the heap profile to path.
func writeHeapProfile(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("write heap profile: %w", err)
	}
	if err := pprof.WriteHeapProfile(f); err != nil {
		f.Close()
		return fmt.Errorf("write heap profile: %w", err)
	}
	return f.Close()
}
