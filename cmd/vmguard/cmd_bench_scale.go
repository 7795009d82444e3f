package main

import (
	"context"
	"errors"
	"fmt"
	"io"
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

// scaleRun is one run of bench scale: what its phases share (the server,
// the connections, the host managers, the controller and the watcher of
// the log) and what they must close at the end.
type scaleRun struct {
	*benchScaleCmd
	g   *globals
	out io.Writer

	env       *benchEnv
	serverLog string
	cw        *connWatch
	cl        *config.Cluster
	rss0      int64 // this process's RSS before the cluster

	conns               []*nats.Conn // closed once every part using them has stopped
	groups              []scaleGroup
	hmConns, guestConns []*nats.Conn
	ctlLog              *events.Log // the in-process controller's (--controller inproc)

	sim     *simguest.Cluster
	w       *watcher
	t0      time.Time
	hostLog *os.File
	hosts   map[string]context.CancelFunc
	runners map[string]*hostmanager.Runner
	ctl     *controllerProc // nil in process
	stopAll context.CancelFunc
	wg      sync.WaitGroup

	decided map[string]int // decisions on injected exits, by type
}

// scaleGroup is the connections one group of host managers shares.
type scaleGroup struct {
	hm, guests *events.Log
	lease      *nats.Conn
}

// Run builds the cluster, injects exits, failures and a loss of nodes and
// prints what it measured, one phase after another: set-up, bring-up,
// restarts, failovers, the loss of nodes, the controller's cold start and
// the report of the log's reads and invariants.
func (c *benchScaleCmd) Run(ctx context.Context, g *globals) error {
	if err := c.check(g.Stdout); err != nil {
		return err
	}
	if c.CPUProfile != "" {
		stop, err := startCPUProfile(c.CPUProfile)
		if err != nil {
			return err
		}
		defer stop()
	}
	r := &scaleRun{benchScaleCmd: c, g: g, out: g.Stdout, decided: map[string]int{}}
	r.rss0, _ = procMem("self")
	runCtx, stopAll := context.WithCancel(ctx)
	r.stopAll = stopAll
	defer r.close()
	if err := r.setUp(ctx); err != nil {
		return err
	}
	if err := r.bringUp(ctx, runCtx); err != nil {
		return err
	}
	if err := r.restartPhase(ctx); err != nil {
		return err
	}
	if err := r.failoverPhase(ctx); err != nil {
		return err
	}
	if err := r.nodeLossPhase(ctx); err != nil {
		return err
	}
	if err := r.coldStart(ctx, runCtx); err != nil {
		return err
	}
	if err := r.reportReads(ctx); err != nil {
		return err
	}
	return r.checkInvariants(ctx)
}

// check refuses flags that leave a package no node to go to and lowers
// --lost to what keeps every package a node, saying so on out.
func (c *benchScaleCmd) check(out io.Writer) error {
	if c.Candidates < 2 || c.Nodes < c.Candidates || c.Packages < 2 {
		return errors.New("bench scale: want --candidates >= 2, --nodes >= --candidates and --packages >= 2")
	}
	if c.PerConn < 1 {
		return errors.New("bench scale: want --per-conn >= 1")
	}
	if c.Lost > c.Nodes/c.Candidates {
		fmt.Fprintf(out, "(--lost %d lowered to %d: the lost nodes are --candidates apart so that every package keeps a node)\n", c.Lost, c.Nodes/c.Candidates)
		c.Lost = c.Nodes / c.Candidates
	}
	return nil
}

// startCPUProfile starts a CPU profile written to path; stop ends it.
func startCPUProfile(path string) (stop func(), err error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("write cpu profile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("write cpu profile: %w", err)
	}
	return func() { pprof.StopCPUProfile(); f.Close() }, nil
}

// close stops what the run started, in the order that lets each part end:
// the host managers and the controller before the connections they use,
// the connections before the server; then it sums up the server's log.
func (r *scaleRun) close() {
	if r.hostLog != nil {
		r.hostLog.Close()
	}
	if r.w != nil {
		r.w.stop()
	}
	r.stopAll()
	r.wg.Wait()
	if r.ctl != nil {
		r.ctl.stop()
	}
	for _, nc := range r.conns {
		nc.Close()
	}
	if r.cw != nil {
		where := r.serverLog
		if r.ServerLog == "" {
			where = "removed with the benchmark's directory; --server-log keeps it"
		}
		r.cw.summary(r.out, where)
	}
	if r.env != nil {
		r.env.Close()
	}
}

// setUp starts the embedded server with its log watched, parses the
// benchmark's configuration, prints what the run is and opens every
// connection.
func (r *scaleRun) setUp(ctx context.Context) error {
	env, err := openBenchEnv(ctx, "scale", r.Durable)
	if err != nil {
		return err
	}
	r.env = env
	r.serverLog = r.ServerLog
	if r.serverLog == "" {
		r.serverLog = filepath.Join(env.dir, "server.log")
	}
	cw, err := newConnWatch(r.serverLog)
	if err != nil {
		return err
	}
	env.srv.SetLogger(cw, false, false)
	r.cw = cw
	cw.watch(env.nc, "bench")
	if r.cl, err = config.Parse("scale.yaml", []byte(r.scaleConfig())); err != nil {
		return err
	}
	mode := "interval"
	if r.Durable {
		mode = "durable (fsync per write)"
	}
	ngroups := (r.Nodes + r.PerConn - 1) / r.PerConn
	ctlWhere := "its own OS process (vmguard failover)"
	if r.Controller == "inproc" {
		ctlWhere = "this process, on a connection of its own"
	}
	share := "one parse of the configuration shared by all"
	if r.OwnConfig {
		share = "each with its own parse of the configuration"
	}
	fmt.Fprintf(r.out, "vmguard bench scale: %d nodes, %d packages (%d candidate nodes each), node_timeout %v; embedded server (%s); the failover controller in %s; %d host managers (%s) and %d simulated guests (internal/simguest) in this process, in %d groups of up to %d host managers, each group on 3 NATS connections (log, leases, guests); GOMAXPROCS %d\n",
		r.Nodes, r.Packages, r.Candidates, r.NodeTimeout, mode, ctlWhere, r.Nodes, share, r.Packages, ngroups, r.PerConn, runtime.GOMAXPROCS(0))
	return r.openConns(ctx, ngroups)
}

// openConns opens the connections of ngroups groups of host managers and
// the in-process controller's. Every connection is opened before any host
// manager starts: a server busy with hundreds of starting host managers can
// take longer than a request's bound to answer the log's stream lookup.
func (r *scaleRun) openConns(ctx context.Context, ngroups int) error {
	hmLogger, err := r.hostLogger()
	if err != nil {
		return err
	}
	quiet := slog.New(slog.DiscardHandler)
	for i := range ngroups {
		name := fmt.Sprintf("group %d", i)
		hnc, hl, err := r.open(ctx, name+" host managers", true, hmLogger)
		if err != nil {
			return err
		}
		gnc, gl, err := r.open(ctx, name+" guests", true, quiet)
		if err != nil {
			return err
		}
		lnc, _, err := r.open(ctx, name+" leases", false, quiet)
		if err != nil {
			return err
		}
		r.groups = append(r.groups, scaleGroup{hm: hl, guests: gl, lease: lnc})
		r.hmConns, r.guestConns = append(r.hmConns, hnc), append(r.guestConns, gnc)
	}
	if r.Controller == "inproc" {
		if _, r.ctlLog, err = r.open(ctx, "controller", true, quiet); err != nil {
			return err
		}
	}
	return nil
}

// open opens a watched connection named name and, withLog, the event log
// on it, logging what it says (consumers replaced, messages skipped) to
// logger.
func (r *scaleRun) open(ctx context.Context, name string, withLog bool, logger *slog.Logger) (*nats.Conn, *events.Log, error) {
	nc, err := r.cw.connect(r.env.srv.ClientURL(), name)
	if err != nil {
		return nil, nil, err
	}
	r.conns = append(r.conns, nc)
	if !withLog {
		return nc, nil, nil
	}
	l, err := events.Open(ctx, nc, events.WithLogger(logger.With("conn", name)))
	return nc, l, err
}

// hostLogger returns the host managers' logger: to --host-log's file, or
// nowhere.
func (r *scaleRun) hostLogger() (*slog.Logger, error) {
	if r.HostLog == "" {
		return slog.New(slog.DiscardHandler), nil
	}
	if r.hostLog == nil {
		f, err := os.Create(r.HostLog)
		if err != nil {
			return nil, fmt.Errorf("create host manager log: %w", err)
		}
		r.hostLog = f
	}
	return slog.New(slog.NewTextHandler(r.hostLog, nil)), nil
}

// bringUp applies the configuration, starts the host managers and the
// controller, waits until every package runs and prints how long that
// took and the memory it takes (the cold cluster start).
func (r *scaleRun) bringUp(ctx, runCtx context.Context) error {
	l := r.env.l
	r.sim = simguest.New(runCtx, l, r.Heartbeat)
	r.w = newWatcher(ctx, l)
	r.t0 = time.Now()
	if _, err := applyConfig(ctx, l, r.cl, "scale.yaml", "bench", ""); err != nil {
		return err
	}
	if err := r.startHosts(ctx, runCtx); err != nil {
		return err
	}
	if err := r.startController(runCtx); err != nil {
		return err
	}
	if err := r.waitRunning(ctx); err != nil {
		return err
	}
	return r.reportUp(ctx)
}

// startHosts starts a host manager per node, in waves of --join-wave if
// set.
func (r *scaleRun) startHosts(ctx, runCtx context.Context) error {
	r.hosts = map[string]context.CancelFunc{}
	r.runners = map[string]*hostmanager.Runner{}
	hmLogger, err := r.hostLogger()
	if err != nil {
		return err
	}
	var configs *hostmanager.ConfigCache
	if !r.OwnConfig {
		configs = hostmanager.NewConfigCache()
	}
	for i, n := range r.cl.Nodes {
		gr := r.groups[i/r.PerConn]
		hctx, cancel := context.WithCancel(runCtx)
		hm, err := hostmanager.NewRunner(hostmanager.Config{
			Node: n, Log: gr.hm, LeaseConn: gr.lease, Logger: hmLogger.With("node", n), StateDir: filepath.Join(r.env.dir, n), Version: version,
			Drivers:      map[string]hostmanager.Driver{config.DriverProcess: r.sim.DriverOn(n, gr.guests)},
			ReadWholeLog: r.ReadAll, Configs: configs,
		})
		if err != nil {
			cancel()
			return err
		}
		r.hosts[n], r.runners[n] = cancel, hm
		r.wg.Add(1)
		go func() { defer r.wg.Done(); _ = hm.Run(hctx) }()
		if r.JoinWave > 0 && (i+1)%r.JoinWave == 0 && i+1 < len(r.cl.Nodes) {
			if err := waitJoined(ctx, r.w, i+1, r.Timeout); err != nil {
				return err
			}
		}
	}
	return nil
}

// startController starts the failover controller: in this process on its
// own connection, or as a vmguard failover process.
func (r *scaleRun) startController(runCtx context.Context) error {
	if r.Controller == "inproc" {
		fo, err := failover.NewRunner(failover.Config{Log: r.ctlLog, Logger: slog.New(slog.DiscardHandler), ID: "bench"})
		if err != nil {
			return err
		}
		r.wg.Add(1)
		go func() { defer r.wg.Done(); _ = fo.Run(runCtx) }()
		return nil
	}
	bin := r.Bin
	if bin == "" {
		var err error
		if bin, err = os.Executable(); err != nil {
			return fmt.Errorf("find the vmguard binary: %w (use --bin)", err)
		}
	}
	var err error
	r.ctl, err = startController(bin, r.env.srv.ClientURL(), filepath.Join(r.env.dir, "controller.log"))
	return err
}

// ctlMem returns the controller process's RSS and its peak (0 in process).
func (r *scaleRun) ctlMem() (int64, int64) {
	if r.ctl == nil {
		return 0, 0
	}
	return procMem(strconv.Itoa(r.ctl.cmd.Process.Pid))
}

// ctlGone says why the phase that timed out may have: the controller
// process ended.
func (r *scaleRun) ctlGone() string {
	if r.ctl == nil {
		return ""
	}
	if ended, err := r.ctl.exited(); ended {
		return fmt.Sprintf(" (the controller process ended: %v)", err)
	}
	return ""
}

// waitRunning waits until every package runs, saying every 30 s how far
// the cluster got.
func (r *scaleRun) waitRunning(ctx context.Context) error {
	running := map[string]bool{}
	joined, said := 0, time.Now()
	if r.w.next(ctx, r.Timeout, func(e events.Event) bool {
		switch e.Type() {
		case events.TypePackageStarted:
			running[e.Subject] = true
		case events.TypeNodeJoined:
			joined++
		}
		if time.Since(said) >= 30*time.Second {
			said = time.Now()
			fmt.Fprintf(r.out, "  (%v: %d node.joined, %d of %d packages running, log at seq %d)\n",
				time.Since(r.t0).Round(time.Second), joined, len(running), r.Packages, e.Seq)
		}
		return len(running) == r.Packages
	}) == nil {
		byType := map[string]int{}
		for _, e := range r.w.since(0) {
			byType[events.ShortType(e.Type())]++
		}
		return fmt.Errorf("only %d of %d packages running after %v; the log holds %v%s", len(running), r.Packages, r.Timeout, byType, r.ctlGone())
	}
	return nil
}

// reportUp prints the cold cluster start: how long, how many events, the
// memory of this process and the controller's, the log's consumers; and
// writes the heap profile if asked.
func (r *scaleRun) reportUp(ctx context.Context) error {
	up := time.Since(r.t0)
	seqUp := r.w.last(func(events.Event) bool { return true }).Seq
	fmt.Fprintf(r.out, "cold cluster start: config applied -> all %d packages running in %v: %d events, %.0f events/s sustained\n",
		r.Packages, up.Round(time.Millisecond), seqUp, float64(seqUp)/up.Seconds())
	runtime.GC()
	rss, _ := procMem("self")
	what := "server, controller, host managers, simulated guests"
	if r.ctl != nil {
		what = "server, host managers, simulated guests"
	}
	fmt.Fprintf(r.out, "memory (this process: %s): RSS %.1f MB before, %.1f MB with the cluster up: %.1f KB per package, %.1f KB per node\n",
		what, mb(r.rss0), mb(rss), float64(rss-r.rss0)/1024/float64(r.Packages), float64(rss-r.rss0)/1024/float64(r.Nodes))
	if m, hwm := r.ctlMem(); r.ctl != nil {
		fmt.Fprintf(r.out, "memory (the controller process alone, %d packages): RSS %.1f MB with the cluster up, peak %.1f MB\n", r.Packages, mb(m), mb(hwm))
	}
	consumers := "unknown"
	if si, err := r.env.l.JetStream().Stream(ctx, events.StreamName); err != nil {
		consumers += ": " + err.Error()
	} else {
		consumers = strconv.Itoa(si.CachedInfo().State.Consumers)
	}
	var creates, late, kept uint64
	for _, hm := range r.runners {
		st := hm.ReadStats()
		creates, late, kept = creates+st.Creates, late+st.Late, kept+st.Kept
	}
	fmt.Fprintf(r.out, "consumers on the log's stream with the cluster up: %s; the host managers asked for %d so far (%d answered late and used), and read on %d whose heartbeats came late\n", consumers, creates, late, kept)
	if r.MemProfile != "" {
		return writeHeapProfile(r.MemProfile)
	}
	return nil
}

// inject makes pkg's service exit and returns the exit, the node it ran on
// and the decision that answered it: the first event about pkg after the
// exit that a host manager or the controller wrote.
// A package not running at that moment (its guest lost on the loaded
// cores, its failover under way) is waited for, up to injectWait.
func (r *scaleRun) inject(ctx context.Context, pkg string) (*events.Event, string, *events.Event, error) {
	var trig events.Event
	var node string
	var ok bool
	var err error
	for give := time.Now().Add(injectWait); ; {
		trig, node, ok, err = r.sim.Exit(ctx, pkg, "main", 1)
		if err != nil || ok || time.Now().After(give) {
			break
		}
		select {
		case <-ctx.Done():
			return nil, "", nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	if err != nil || !ok {
		return nil, "", nil, fmt.Errorf("exit %s: running %v after %v: %v", pkg, ok, injectWait, err)
	}
	dec := r.w.next(ctx, r.Timeout, func(e events.Event) bool {
		return e.Subject == pkg && e.Seq > trig.Seq && !strings.HasPrefix(e.Source, "/vmguard/guests/")
	})
	if dec == nil {
		return nil, "", nil, fmt.Errorf("no decision on %s's exit", pkg)
	}
	r.decided[events.ShortType(dec.Type())]++
	return &trig, node, dec, nil
}

// injectWait bounds the wait for a package to run before its exit is
// injected.
const injectWait = time.Minute

// restartPhase makes --exits services of packages with restarts left exit
// and prints how long the decision and the restart took.
func (r *scaleRun) restartPhase(ctx context.Context) error {
	var restartDec, restartDone []time.Duration
	for k := range r.Exits {
		pkg := scalePkg((2 * k) % r.Packages &^ 1)
		trig, _, d, err := r.inject(ctx, pkg)
		if err != nil {
			return err
		}
		restartDec = append(restartDec, d.Time.Sub(trig.Time))
		st := r.w.next(ctx, r.Timeout, func(e events.Event) bool {
			return e.Subject == pkg && e.Type() == events.TypeProcessStarted && e.Seq > trig.Seq
		})
		if st == nil {
			return fmt.Errorf("%s's service did not restart", pkg)
		}
		restartDone = append(restartDone, st.Time.Sub(trig.Time))
	}
	// Printed now: a later phase that does not end leaves these behind.
	report(r.g, "decision: process.exited (restart left) appended -> host manager's decision appended", restartDec)
	report(r.g, "restart: process.exited -> process.started again", restartDone)
	return nil
}

// failoverPhase makes --failures services with no restart left exit and
// prints how long the decision and the start on another node took.
func (r *scaleRun) failoverPhase(ctx context.Context) error {
	var failDec, failover1 []time.Duration
	for k := range min(r.Failures, r.Packages/2) {
		pkg := scalePkg(2*k + 1)
		trig, node, d, err := r.inject(ctx, pkg)
		if err != nil {
			return err
		}
		failDec = append(failDec, d.Time.Sub(trig.Time))
		st := r.w.next(ctx, r.Timeout, func(e events.Event) bool {
			s, ok := e.Data.(events.PackageStarted)
			return ok && e.Subject == pkg && s.Node != node
		})
		if st == nil {
			return fmt.Errorf("%s did not start on another node after failing on %s", pkg, node)
		}
		failover1 = append(failover1, st.Time.Sub(trig.Time))
	}
	fmt.Fprintf(r.out, "decisions on injected exits, by type: %v\n", r.decided)
	report(r.g, "decision: process.exited (no restart left) appended -> decision appended", failDec)
	report(r.g, "failover: process.exited (no restart left) -> package.started on another node", failover1)
	return nil
}

// nodeLossPhase loses --lost nodes at once, --candidates apart so that
// every package keeps a node to go to, and prints how long their packages
// took to run elsewhere.
func (r *scaleRun) nodeLossPhase(ctx context.Context) error {
	lost := map[string]bool{}
	want := map[string]bool{}
	for i := range r.Lost {
		n := scaleNode(i * r.Candidates)
		lost[n] = true
		for _, p := range r.sim.Packages(n) {
			want[p] = true
		}
	}
	mark := r.w.last(func(events.Event) bool { return true }).Seq
	killed := time.Now()
	for n := range lost {
		r.hosts[n]() // the host manager stops dead: no halt, its lease lapses
		r.sim.Crash(n)
	}
	moved := map[string]time.Duration{}
	if len(want) > 0 && r.w.next(ctx, r.NodeTimeout+r.Timeout, func(e events.Event) bool {
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
	fmt.Fprintf(r.out, "loss of %d nodes at once: all %d of their packages running elsewhere %v after the kill (node_timeout %v; target node_timeout + 2s = %v)\n",
		r.Lost, len(want), allMoved.Round(time.Millisecond), r.NodeTimeout, r.NodeTimeout+2*time.Second)
	report(r.g, "  per package: kill -> package.started elsewhere", mv)
	if m, hwm := r.ctlMem(); r.ctl != nil {
		fmt.Fprintf(r.out, "memory (the controller process alone, after the loss): RSS %.1f MB, peak %.1f MB over the whole run\n", mb(m), mb(hwm))
	}
	return nil
}

// coldStart starts standby controllers (the controller "bench" leads) on
// the resulting log and prints how long each took from New to caught up:
// without a snapshot, then with one that a first run wrote.
func (r *scaleRun) coldStart(ctx, runCtx context.Context) error {
	last, err := r.env.l.LastSeq(ctx)
	if err != nil {
		return err
	}
	took, _, err := r.cold(runCtx, "cold-replay", true)
	if err != nil {
		return err
	}
	fmt.Fprintf(r.out, "controller cold start without a snapshot: %v to catch up with %d events\n", took.Round(time.Millisecond), last)
	if _, _, err := r.cold(runCtx, "snapshot-writer", false); err != nil {
		return err
	}
	took, st, err := r.cold(runCtx, "cold-snapshot", false)
	if err != nil {
		return err
	}
	fmt.Fprintf(r.out, "controller cold start with a snapshot (at seq %d of %d): %v to catch up\n", st.SnapshotSeq, last, took.Round(time.Millisecond))
	return nil
}

// cold runs a controller named id until it has caught up with the log and
// returns how long that took and its stats; the run ends (and writes its
// snapshot unless noSnap) before cold returns.
func (r *scaleRun) cold(ctx context.Context, id string, noSnap bool) (time.Duration, failover.Stats, error) {
	start := time.Now()
	fo, err := failover.NewRunner(failover.Config{Log: r.env.l, Logger: slog.New(slog.DiscardHandler), ID: id, NoSnapshot: noSnap})
	if err != nil {
		return 0, failover.Stats{}, err
	}
	cctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); _ = fo.Run(cctx) }()
	defer func() { cancel(); <-done }() // a run that ends writes its snapshot
	select {
	case <-fo.CaughtUp():
		return time.Since(start), fo.Stats(), nil
	case <-time.After(r.Timeout):
		return 0, failover.Stats{}, fmt.Errorf("controller cold start: not caught up after %v", r.Timeout)
	}
}

// reportReads prints the read volume: what each host manager's reads
// received (replay, follow, its index of placements and catch-ups) and
// what the groups' connections received.
func (r *scaleRun) reportReads(ctx context.Context) error {
	si, err := r.env.l.JetStream().Stream(ctx, events.StreamName)
	if err != nil {
		return err
	}
	info := si.CachedInfo()
	fmt.Fprintf(r.out, "consumers on the log's stream at the end: %d\n", info.State.Consumers)
	hmMsgs, hmBytes := received(r.hmConns)
	gMsgs, gBytes := received(r.guestConns)
	var readMsgs, readBytes, creates []int64
	var sumBytes, sumCreates int64
	for _, hm := range r.runners {
		st := hm.ReadStats()
		readMsgs, readBytes = append(readMsgs, int64(st.Messages)), append(readBytes, int64(st.Bytes))
		creates = append(creates, int64(st.Creates))
		sumBytes += int64(st.Bytes)
		sumCreates += int64(st.Creates)
	}
	slices.Sort(readMsgs)
	slices.Sort(readBytes)
	slices.Sort(creates)
	what := "each reads only its node's, the cluster's and its packages' subjects, and its node's placement markers"
	if r.ReadAll {
		what = "each reads the whole log (--read-all)"
	}
	fmt.Fprintf(r.out, "log: %d events, %.1f MB; host managers (%s): messages read per host p50 %d max %d, bytes per host p50 %.2f MB max %.2f MB, %.1f MB for the cluster; the host managers' %d log connections received %d messages, %.1f MB; the guests' %d connections %d messages, %.1f MB\n",
		info.State.Msgs, mb(int64(info.State.Bytes)), what, readMsgs[len(readMsgs)/2], readMsgs[len(readMsgs)-1],
		mb(readBytes[len(readBytes)/2]), mb(readBytes[len(readBytes)-1]), mb(sumBytes),
		len(r.hmConns), hmMsgs, mb(int64(hmBytes)), len(r.guestConns), gMsgs, mb(int64(gBytes)))
	fmt.Fprintf(r.out, "consumers the host managers asked for (replays, follows, their replacements, catch-ups; each costs the server a walk of the stream's subjects): %d, per host p50 %d max %d\n",
		sumCreates, creates[len(creates)/2], creates[len(creates)-1])
	return nil
}

// received sums what conns received: messages and bytes.
func received(conns []*nats.Conn) (msgs, bytes uint64) {
	for _, nc := range conns {
		st := nc.Stats()
		msgs, bytes = msgs+st.InMsgs, bytes+st.InBytes
	}
	return msgs, bytes
}

// checkInvariants checks the whole log's invariants and prints the first
// 20 problems; any problem fails the run.
func (r *scaleRun) checkInvariants(ctx context.Context) error {
	evs, err := allEvents(ctx, r.env.l)
	if err != nil {
		return err
	}
	probs := invariant.Check(evs)
	fmt.Fprintf(r.out, "invariants over %d events: %d problems\n", len(evs), len(probs))
	for i, p := range probs {
		if i == 20 {
			fmt.Fprintf(r.out, "   ... %d more\n", len(probs)-20)
			break
		}
		fmt.Fprintln(r.out, "  ", p)
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
