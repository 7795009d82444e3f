package main

import (
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/vmguard/vmguard/events"
	"github.com/vmguard/vmguard/internal/invariant"
	"github.com/vmguard/vmguard/internal/lease"
	"github.com/vmguard/vmguard/internal/natsd/natstest"
	"github.com/vmguard/vmguard/internal/netlab"
	"github.com/vmguard/vmguard/internal/timeline"
)

var (
	partitions    = flag.String("partitions", "short", "TestPartition: short (the fixed schedule CI runs, ~2-3 min) or long (random schedules, see -partition-runs)")
	partitionSeed = flag.Uint64("partition-seed", 0, "seed of TestPartition's random schedules (0: from the clock); a failure prints it, to replay")
	partitionRuns = flag.Int("partition-runs", 100, "random schedules of -partitions=long")
	partitionNT   = flag.Duration("partition-node-timeout", 20*time.Second, "node_timeout of TestPartition's cluster (the README's advice for a cluster)")
	partitionN    = flag.Int("partition-hosts", 3, "hosts of TestPartition's cluster, 3 to 5: a server member (stream and buckets R<hosts>), a host manager and a controller on each")
	partitionFor  = flag.Duration("partition-budget", 0, "-partitions=long: start no step after this long (0: no limit); the end checks and figures still run")
	partitionStep = flag.Int("partition-step", 0, "-partitions=long: run only this step (1-based) of the seed's schedule, to replay it")
)

// partConfig is TestPartition's cluster: three nodes, one per host; app
// runs one service until stopped, restarted without limit so that only a
// placement ends it; probe never runs and carries the writer's events.
func partConfig(nt time.Duration, marker string, nodes []string) string {
	list := strings.Join(nodes, ", ")
	return fmt.Sprintf(`cluster: part
node_timeout: %s
guest_timeout: 10s
nodes: [%s]
packages:
  - name: app
    nodes: [%s]
    guest: {name: appvm, driver: process, start_timeout: 30s}
    services:
      - name: svc
        cmd: ["sh", "-c", "while :; do sleep 1; done # %s"]
        restart: unlimited
        halt_timeout: 1s
  - name: probe
    nodes: [%s]
    auto_run: false
    guest: {name: probevm, driver: process}
    services:
      - name: idle
        cmd: ["sh", "-c", "while :; do sleep 1; done"]
        halt_timeout: 1s
`, nt, list, list, marker, list)
}

// partEnv is a cluster of three hosts in network namespaces: on each a
// `vmguard server` member (R3), a host manager and a failover controller,
// all separate processes; the test process reaches the servers through
// forwards that no fault touches, so its writer and readers see whatever
// the cluster acknowledges.
type partEnv struct {
	t      *testing.T
	lab    *netlab.Lab
	dir    string
	nt     time.Duration
	tl     timeline.Timeline
	marker string
	labURL string // what the daemons in the lab use
	fwdURL string // what the test process uses

	mu    sync.Mutex
	procs map[string]*exec.Cmd // "server h1", "host h1", "failover h1"
	outs  map[string]*syncBuffer

	log    *clusterLog
	samp   *sampler
	resets int // app failed on every node and was reset
	w      *writer
	st     *stalls
	rn     *renewals
	sp     *storeProbe // the lease store's own availability, as the test sees it
}

// needNetns fails the test unless network namespaces can be made here when
// CI is set (.ci/run sets it and installs what they need); elsewhere a
// machine without root, iproute2 or iptables skips it, saying what is
// missing, so that `go test ./...` on a fresh machine with only Go passes.
// VMGUARD_NO_NETNS=1 skips it on purpose.
func needNetns(t *testing.T) {
	t.Helper()
	if os.Getenv("VMGUARD_NO_NETNS") == "1" {
		t.Skip("VMGUARD_NO_NETNS=1: partition tests across network namespaces skipped")
	}
	if err := netlab.Available(); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("partition tests need network namespaces (root, iproute2, iptables): %v; set VMGUARD_NO_NETNS=1 to skip them on purpose", err)
		}
		t.Skipf("partition tests need network namespaces (%v): run as root with iproute2 and iptables installed, as .ci/run does", err)
	}
}

// newPartEnv makes the lab, starts the servers and waits for the R3 stream,
// applies the config and starts the host managers and controllers.
func newPartEnv(t *testing.T, ctx context.Context) *partEnv {
	t.Helper()
	if *partitionN < 3 || *partitionN > 5 {
		t.Fatalf("-partition-hosts %d: want 3 to 5", *partitionN)
	}
	lab, err := netlab.New(ctx, *partitionN)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	p := &partEnv{
		t: t, lab: lab, dir: dir, nt: *partitionNT, tl: timeline.Default(*partitionNT),
		marker: fmt.Sprintf("vmguard-part-%d", rand.Uint32()),
		procs:  map[string]*exec.Cmd{}, outs: map[string]*syncBuffer{},
	}
	t.Cleanup(func() {
		p.stopAll()
		lab.Close()
		killStrays(dir)
	})
	var labURLs, fwdURLs []string
	for _, h := range lab.Hosts {
		// Every connection between hosts passes a proxy in the target
		// host, so that latency can be added; the servers listen on
		// loopback and advertise the proxies.
		for _, port := range []string{"4222", "6222"} {
			if _, err := lab.Proxy(h, h.Addr+":"+port, "127.0.0.1:"+port); err != nil {
				t.Fatal(err)
			}
		}
		fw, err := lab.Forward(h, "127.0.0.1:4222")
		if err != nil {
			t.Fatal(err)
		}
		labURLs = append(labURLs, "nats://"+h.Addr+":4222")
		fwdURLs = append(fwdURLs, "nats://"+fw.Addr())
		var routes []string
		for _, o := range lab.Hosts {
			if o != h {
				routes = append(routes, "nats-route://"+o.Addr+":6222")
			}
		}
		conf := fmt.Sprintf(`server_name: %s
listen: 127.0.0.1:4222
client_advertise: "%s:4222"
jetstream { store_dir: %q }
cluster {
  name: part
  listen: 127.0.0.1:6222
  advertise: "%s:6222"
  routes: [%s]
}
`, h.Name, h.Addr, filepath.Join(dir, h.Name, "store"), h.Addr, strings.Join(routes, ", "))
		if err := os.MkdirAll(filepath.Join(dir, h.Name), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, h.Name, "nats.conf"), []byte(conf), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	p.labURL, p.fwdURL = strings.Join(labURLs, ","), strings.Join(fwdURLs, ",")
	begin := time.Now()
	for _, h := range lab.Hosts {
		p.startServer(h)
	}
	for _, h := range lab.Hosts {
		ready := fmt.Sprintf("stream VMGUARD ready (R%d)", len(lab.Hosts))
		natstest.WaitFor(t, 90*time.Second, h.Name+"'s server: "+ready, func() bool {
			return strings.Contains(p.out("server "+h.Name), ready)
		})
	}
	t.Logf("lab %s: %d hosts, servers formed an R%d cluster in %v", lab.ID, len(lab.Hosts), len(lab.Hosts), time.Since(begin).Round(time.Millisecond))

	obs := clusterConn(t, p.fwdURL, "observer")
	l, err := events.Open(ctx, obs, events.WithoutCreate())
	if err != nil {
		t.Fatal(err)
	}
	p.log = &clusterLog{t: t, l: l}
	file := filepath.Join(dir, "cluster.yaml")
	if err := os.WriteFile(file, []byte(partConfig(p.nt, p.marker, p.nodes())), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(vmguardBin, "--nats", p.fwdURL, "apply", "-f", file).CombinedOutput(); err != nil {
		t.Fatalf("vmguard apply: %v\n%s", err, out)
	}
	for _, h := range lab.Hosts {
		p.startFailover(h)
		p.startHost(h)
	}
	natstest.WaitFor(t, 90*time.Second, "every node joined", func() bool {
		joined := map[string]bool{}
		for _, e := range p.log.all() {
			if e.Type() == events.TypeNodeJoined {
				joined[e.Subject] = true
			}
		}
		return len(joined) == len(lab.Hosts)
	})
	return p
}

// start runs vmguard with args in host h under name.
func (p *partEnv) start(h *netlab.Host, name string, args ...string) {
	p.t.Helper()
	cmd := h.Command(vmguardBin, args...)
	// Killed with the test process (a -timeout panic runs no cleanup);
	// what they started, guards and guests, the next lab's sweep kills.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.WaitDelay = 2 * time.Second // guests outlive their host manager
	if err := cmd.Start(); err != nil {
		p.t.Fatal(err)
	}
	p.mu.Lock()
	if old := p.outs[name]; old != nil {
		out.Write([]byte(old.String() + "--- restarted\n"))
	}
	p.procs[name], p.outs[name] = cmd, out
	p.mu.Unlock()
}

func (p *partEnv) startServer(h *netlab.Host) {
	p.start(h, "server "+h.Name, "server", "-c", filepath.Join(p.dir, h.Name, "nats.conf"), "--replicas", strconv.Itoa(len(p.lab.Hosts)), "--sync-interval", "-q")
}

// nodes names the lab's hosts, which are the cluster's nodes.
func (p *partEnv) nodes() []string {
	var out []string
	for _, h := range p.lab.Hosts {
		out = append(out, h.Name)
	}
	return out
}

func (p *partEnv) startHost(h *netlab.Host) {
	p.start(h, "host "+h.Name, "--nats", p.labURL, "host", "--node", h.Name, "--state", filepath.Join(p.dir, h.Name, "host"), "--agent-bin", vmguardBin)
}

func (p *partEnv) startFailover(h *netlab.Host) {
	p.start(h, "failover "+h.Name, "--nats", p.labURL, "failover", "--id", "ctl-"+h.Name)
}

// out returns what the process name printed so far.
func (p *partEnv) out(name string) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if o := p.outs[name]; o != nil {
		return o.String()
	}
	return ""
}

// checkAlive fails the test for every daemon that exited by itself (none
// should, whatever the network does: a host manager or controller waits
// for the cluster, `--cluster-wait`) and starts it again, as systemd's
// Restart=always would, so that the schedule goes on.
func (p *partEnv) checkAlive() {
	p.mu.Lock()
	var dead []string
	for name, cmd := range p.procs {
		st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", cmd.Process.Pid))
		if err != nil || isZombie(st) {
			dead = append(dead, name)
		}
	}
	p.mu.Unlock()
	for _, name := range dead {
		p.t.Errorf("%s exited by itself:\n%s", name, lastLines(p.out(name), 15))
		p.kill9(name) // reaps it
		p.restart(name)
	}
}

// signal sends sig to the process name.
func (p *partEnv) signal(name string, sig syscall.Signal) {
	p.mu.Lock()
	cmd := p.procs[name]
	p.mu.Unlock()
	if cmd != nil {
		_ = cmd.Process.Signal(sig)
	}
}

// kill9 kills the process name with SIGKILL and waits for it.
func (p *partEnv) kill9(name string) {
	p.mu.Lock()
	cmd := p.procs[name]
	delete(p.procs, name)
	p.mu.Unlock()
	if cmd != nil {
		_ = cmd.Process.Signal(syscall.SIGCONT)
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}
}

// restart starts the process name again (after kill9).
func (p *partEnv) restart(name string) {
	role, host, _ := strings.Cut(name, " ")
	h := p.lab.Host(host)
	switch role {
	case "server":
		p.startServer(h)
	case "host":
		p.startHost(h)
	case "failover":
		p.startFailover(h)
	}
}

// stopAll kills every process; on a failure it prints their output, the
// guards' logs and the log's events.
func (p *partEnv) stopAll() {
	p.mu.Lock()
	procs := p.procs
	p.procs = map[string]*exec.Cmd{}
	p.mu.Unlock()
	for _, cmd := range procs {
		_ = cmd.Process.Signal(syscall.SIGCONT)
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}
	if !p.t.Failed() {
		return
	}
	names := slices.Sorted(func(yield func(string) bool) {
		for n := range p.outs {
			if !yield(n) {
				return
			}
		}
	})
	for _, n := range names {
		p.t.Logf("--- output of %s:\n%s", n, lastLines(p.out(n), 80))
	}
	for _, h := range p.lab.Hosts {
		if b, err := os.ReadFile(filepath.Join(p.dir, h.Name, "host", "guard.log")); err == nil {
			p.t.Logf("--- guard log of %s:\n%s", h.Name, lastLines(string(b), 30))
		}
	}
	if p.samp != nil {
		p.samp.mu.Lock()
		p.t.Logf("sampler violations: %v", p.samp.violations)
		p.samp.mu.Unlock()
	}
	if p.log != nil {
		var lines []string
		for _, e := range p.log.evs {
			if e.Subject != "probe" {
				lines = append(lines, formatEvent(e))
			}
		}
		p.t.Logf("the log, without the writer's events (the last 400):\n%s", strings.Join(lines[max(0, len(lines)-400):], "\n"))
	}
}

// sampler checks, every 50 ms, in which hosts app's service runs: never in
// two at once. It keeps, per host, when the service was last seen there.
type sampler struct {
	lab    *netlab.Lab
	marker string

	mu         sync.Mutex
	violations []string
	samples    int
	where      string               // the host it ran in at the last sample ("" none)
	lastSeen   map[string]time.Time // host -> last sample that saw it there
	since      time.Time            // when where last changed
	pids       []int
	lastSample time.Time
}

func (s *sampler) run(ctx context.Context) {
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		found, err := s.lab.Find(s.marker)
		now := time.Now()
		if err != nil {
			continue
		}
		var hosts []string
		var pids []int
		for h, ps := range found {
			hosts = append(hosts, h)
			pids = append(pids, ps...)
		}
		sort.Strings(hosts)
		if len(hosts) > 1 && stillAlive(found) {
			// The scan is not atomic: a pid is counted only if it
			// still runs after the scan, so both ran at that moment.
			s.mu.Lock()
			s.violations = append(s.violations, fmt.Sprintf("%s: app's service alive in %v at once: %v", now.Format("15:04:05.000"), hosts, found))
			s.mu.Unlock()
		}
		s.mu.Lock()
		s.samples++
		for _, h := range hosts {
			s.lastSeen[h] = now
		}
		w := strings.Join(hosts, ",")
		if w != s.where {
			s.where, s.since = w, now
		}
		s.pids = pids
		s.lastSample = now
		s.mu.Unlock()
	}
}

// stillAlive reports whether, in at least two hosts, a process found there
// still runs.
func stillAlive(found map[string][]int) bool {
	n := 0
	for _, ps := range found {
		for _, pid := range ps {
			if st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil && !isZombie(st) {
				n++
				break
			}
		}
	}
	return n > 1
}

// goneFrom returns when app's service was last seen on host, if a later
// sample saw it there no more.
func (s *sampler) goneFrom(host string) (time.Time, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	last := s.lastSeen[host]
	return last, !last.IsZero() && s.lastSample.After(last)
}

// state returns where app's service runs now, since when, its pids, and
// when it was last seen on host.
func (s *sampler) state(host string) (where string, since time.Time, pids []int, last time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.where, s.since, slices.Clone(s.pids), s.lastSeen[host]
}

// waitWhere waits until app's service runs in exactly one host, for hold,
// and the log says app runs there; it returns the host.
func (p *partEnv) waitRunningOne(bound, hold time.Duration, what string) (string, []int) {
	p.t.Helper()
	var host string
	var pids []int
	var why string
	defer func() {
		if p.t.Failed() {
			p.t.Logf("while waiting for %s: %s", what, why)
		}
	}()
	natstest.WaitFor(p.t, bound, what, func() bool {
		w, since, ps, _ := p.samp.state("")
		evs := p.log.all()
		if failedEverywhere(evs) {
			// Failed on every node is where the policy leaves it
			// (converged); an operator's reset lets the schedule go on.
			if out, err := exec.Command(vmguardBin, "--nats", p.fwdURL, "pkg", "reset", "app", "--reason", "partition test: failed on every node").CombinedOutput(); err != nil {
				p.t.Logf("vmguard pkg reset app: %v\n%s", err, out)
			} else {
				p.mu.Lock()
				p.resets++
				p.mu.Unlock()
				p.t.Logf("app failed on every node; reset it")
			}
			return false
		}
		node, seq := appRunsOn(evs)
		why = fmt.Sprintf("service in [%s] since %s (pids %v); the log says app runs on %q (seq %d)", w, since.Format("15:04:05.000"), ps, node, seq)
		if w == "" || strings.Contains(w, ",") || time.Since(since) < hold {
			return false
		}
		host, pids = w, ps
		return node == w
	})
	return host, pids
}

// appRunsOn returns the node app runs on by the log (its current placement,
// the highest epoch, has started and not halted, halting or failed) and
// that start's sequence. A late report about an older placement (its
// fenced node halting it after the fact) changes nothing.
func appRunsOn(evs []events.Event) (string, uint64) {
	var epoch uint64
	node, seq := "", uint64(0)
	for _, e := range evs {
		if e.Subject != "app" {
			continue
		}
		switch d := e.Data.(type) {
		case events.PackagePlaced:
			if d.Epoch > epoch {
				epoch, node, seq = d.Epoch, "", 0
			}
		case events.PackageStarted:
			if d.Epoch == epoch {
				node, seq = d.Node, e.Seq
			}
		case events.PackageHalting:
			if d.Epoch == epoch {
				node, seq = "", 0
			}
		case events.PackageHalted:
			if d.Epoch == epoch {
				node, seq = "", 0
			}
		case events.PackageFailed:
			if d.Epoch == epoch {
				node, seq = "", 0
			}
		}
	}
	return node, seq
}

// stepResult is what one fault of a schedule showed.
type stepResult struct {
	class     string
	recovery  time.Duration // cut -> app started on another host (0: it did not move)
	converged time.Duration // heal -> app runs on one host, as the log says, every node joined
	moved     bool
	failed    bool     // a check failed (long run)
	falseLoss []string // node.lost/fenced/placements where the fault must cause none
	// storeFences are fences (and what followed them) in a step whose fault
	// must cause none, each after the lease store itself took no writes for
	// long enough to fence a node renewing on time: by design (a store
	// outage longer than 0.6 node_timeout - a renewal interval fences),
	// counted apart from false fences.
	storeFences []string
}

// TestPartition runs vmguard across three hosts in network namespaces
// (internal/netlab): a server member, a host manager and a controller on
// each, app on one. It cuts and degrades the network under them, with
// kills and pauses of the daemons, and checks, all along, that app's
// service never runs in two hosts at once (pids per namespace); per fault,
// that the cut-off host fences itself within its bound, the majority
// places app elsewhere only after that bound, faults below node_timeout
// (loss, latency) move nothing, and everything converges after healing;
// at the end, that `vmguard verify` is clean and every write the cluster
// acknowledged is in the log. -partitions=long runs -partition-runs random
// schedules from -partition-seed.
func TestPartition(t *testing.T) {
	if testing.Short() {
		t.Skip("partition test with network namespaces and OS processes; run without -short")
	}
	needNetns(t)
	seed := *partitionSeed
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	t.Logf("partition seed %d (replay: go test ./cmd/vmguard -run TestPartition -partitions=%s -partition-seed %d)", seed, *partitions, seed)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p := newPartEnv(t, ctx)
	p.st = &stalls{}
	go p.st.run(ctx)
	p.samp = &sampler{lab: p.lab, marker: p.marker, lastSeen: map[string]time.Time{}}
	go p.samp.run(ctx)
	p.rn = &renewals{seen: map[string][]time.Time{}}
	go p.rn.run(ctx, clusterJS(t, p.fwdURL), p.nodes())
	p.sp = &storeProbe{}
	go p.sp.run(ctx, clusterJS(t, p.fwdURL))
	p.w = &writer{}
	wctx, stopWriter := context.WithCancel(ctx)
	wl, err := events.Open(ctx, clusterConn(t, p.fwdURL, "writer"), events.WithoutCreate())
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); p.w.run(wctx, wl) }()
	defer func() { stopWriter(); wg.Wait() }()

	host, _ := p.waitRunningOne(90*time.Second, time.Second, "app running on one host")
	t.Logf("app runs on %s", host)

	var steps []partStep
	if *partitions == "long" {
		steps = randomSchedule(seed, max(*partitionRuns, *partitionStep))
		if *partitionStep > 0 {
			steps = steps[*partitionStep-1 : *partitionStep]
		}
	} else {
		steps = shortSchedule()
	}
	var results []stepResult
	failedInARow := 0
	begin := time.Now()
	for i, s := range steps {
		if *partitionFor > 0 && time.Since(begin) > *partitionFor {
			t.Logf("-partition-budget %v spent after %d of %d steps; stopping here", *partitionFor, i, len(steps))
			break
		}
		t.Logf("step %d/%d: %s", i+1, len(steps), s)
		if *partitions != "long" {
			results = append(results, p.runStep(ctx, s))
			if t.Failed() {
				t.Logf("failed at step %d (%s); replay with -partitions=%s -partition-seed %d", i+1, s, *partitions, seed)
				break
			}
			continue
		}
		// The long run goes on past a failed step, to count: each step is
		// a subtest, and the next one first waits for the cluster to settle.
		r := stepResult{class: s.class()}
		ok := t.Run(fmt.Sprintf("step%03d", i+1), func(st *testing.T) {
			p.t, p.log.t = st, st
			defer func() { p.t, p.log.t = t, t }()
			r = p.runStep(ctx, s)
		})
		if !ok {
			r.failed = true
			t.Logf("step %d (%s) failed; replay with -partitions=long -partition-seed %d", i+1, s, seed)
			failedInARow++
		} else {
			failedInARow = 0
		}
		results = append(results, r)
		if failedInARow == 3 {
			t.Errorf("three steps in a row failed; the cluster may not recover, stopping")
			break
		}
	}
	stopWriter()
	wg.Wait()
	p.checkEnd()
	partReport(t, results, p)
}

// checkEnd runs `vmguard verify` and checks every acknowledged write and
// the sampler's record.
func (p *partEnv) checkEnd() {
	t := p.t
	out, err := exec.Command(vmguardBin, "--nats", p.fwdURL, "verify").CombinedOutput()
	if err != nil {
		t.Errorf("vmguard verify: %v\n%s", err, out)
	} else {
		t.Logf("vmguard verify: %s", strings.TrimSpace(lastLine(string(out))))
	}
	evs := p.log.all()
	bySeq := map[uint64]events.Event{}
	for _, e := range evs {
		bySeq[e.Seq] = e
	}
	p.w.mu.Lock()
	acked := slices.Clone(p.w.acked)
	failed := p.w.failed
	p.w.mu.Unlock()
	lost := 0
	for _, a := range acked {
		if e, ok := bySeq[a.seq]; !ok || e.ID != a.id {
			lost++
			if lost <= 10 {
				t.Errorf("acknowledged write %s at seq %d (acked %s) is not in the log", a.id, a.seq, a.at.Format("15:04:05.000"))
			}
		}
	}
	t.Logf("writer: %d writes acknowledged, %d lost; %d not acknowledged (refused or timed out during faults)", len(acked), lost, failed)
	for _, v := range invariant.Check(evs) {
		t.Errorf("invariant: %s", v)
	}
	p.samp.mu.Lock()
	defer p.samp.mu.Unlock()
	for _, v := range p.samp.violations {
		t.Errorf("violation: %s", v)
	}
	t.Logf("sampler: %d samples of app's service pids per namespace, %d violations", p.samp.samples, len(p.samp.violations))
}

// partReport logs the figures of the run, per fault class.
func partReport(t *testing.T, results []stepResult, p *partEnv) {
	byClass := map[string][]stepResult{}
	for _, r := range results {
		byClass[r.class] = append(byClass[r.class], r)
	}
	classes := slices.Sorted(func(yield func(string) bool) {
		for c := range byClass {
			if !yield(c) {
				return
			}
		}
	})
	var b strings.Builder
	fmt.Fprintf(&b, "figures (node_timeout %v, %d steps; app failed on every node and was reset %d times):\n", p.nt, len(results), p.resets)
	fmt.Fprintf(&b, "%-34s %5s %6s %6s %-26s %-26s %5s %s\n", "class", "runs", "failed", "moved", "recovery min/med/max", "converged min/med/max", "false fences", "store-outage fences")
	for _, c := range classes {
		rs := byClass[c]
		var rec, conv []time.Duration
		moved, falseN, storeN, failed := 0, 0, 0, 0
		for _, r := range rs {
			falseN += len(r.falseLoss)
			storeN += len(r.storeFences)
			if r.failed {
				failed++
				continue
			}
			if r.moved {
				moved++
				rec = append(rec, r.recovery)
			}
			conv = append(conv, r.converged)
		}
		fmt.Fprintf(&b, "%-34s %5d %6d %6d %-26s %-26s %5d %d\n", c, len(rs), failed, moved, spread(rec), spread(conv), falseN, storeN)
	}
	t.Log(b.String())
}

// spread formats min/median/max of ds.
func spread(ds []time.Duration) string {
	if len(ds) == 0 {
		return "-"
	}
	slices.Sort(ds)
	r := func(d time.Duration) string { return d.Round(100 * time.Millisecond).String() }
	return r(ds[0]) + " / " + r(ds[len(ds)/2]) + " / " + r(ds[len(ds)-1])
}

// partStep is one fault of a schedule: a network fault (or none), possibly
// with a process fault, held for For, then healed.
type partStep struct {
	Net    string        // isolate, split, oneway, flap, loss, latency, none
	Target string        // app: the host app runs on; other: another one; any
	P      float64       // loss
	Delay  time.Duration // latency
	Proc   string        // kill-server, stop-server, kill-host, stop-host, kill-controller, stop-controller, "" none
	ProcOn string        // app, other
	For    time.Duration // how long the fault lasts
	Benign bool          // below node_timeout: must move nothing
	// LeaseAway moves the lease bucket's leader off the target host before
	// the cut: until the lease store's own outage stops reading as every
	// node's death (docs/bench/partitions.md, known bugs), a cut of the
	// host that leads it makes healthy nodes lost.
	LeaseAway bool
	// LeaseCut cuts the host that leads the lease bucket, after moving
	// that leadership off app's host: the other nodes, healthy, must not
	// fence themselves or be lost, and app must stay, unless the lease
	// store's election outlasted what a holder renewing on time rides out.
	LeaseCut bool
	HostIdx  int // which "other"/"any" host, 0..2
}

func (s partStep) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s", s.Net)
	switch s.Net {
	case "loss":
		fmt.Fprintf(&b, " %.0f%%", s.P*100)
	case "latency":
		fmt.Fprintf(&b, " %v", s.Delay)
	}
	if s.LeaseCut {
		b.WriteString(" on the lease leader's host")
	} else if s.Net != "none" {
		fmt.Fprintf(&b, " on %s host", s.Target)
	}
	if s.Proc != "" {
		fmt.Fprintf(&b, " + %s on %s host", s.Proc, s.ProcOn)
	}
	if s.LeaseAway {
		b.WriteString(" (lease leader elsewhere)")
	}
	fmt.Fprintf(&b, " for %v", s.For.Round(100*time.Millisecond))
	return b.String()
}

// class names a step's fault class for the figures.
func (s partStep) class() string {
	c := s.Net
	if s.Net == "none" {
		c = s.Proc
	} else if s.Proc != "" {
		c += "+" + s.Proc
	}
	if s.LeaseCut {
		c += "(lease leader)"
	} else if s.Net == "isolate" || s.Net == "split" || s.Net == "oneway" || s.Net == "flap" {
		c += "(" + s.Target + ")"
	}
	return c
}

// shortSchedule is what CI runs (~3 min at node_timeout 20 s): the host
// app runs on cut off for 2.5 node_timeout (app must move, the host must
// fence itself first), loss and latency below node_timeout (nothing may
// move), then the host app runs on unable to send, with a controller
// killed. The cuts first move the log's and the lease bucket's leaders off
// the host they cut: with a cut leader the lease store is out for seconds
// (docs/bench/partitions.md). 2.5, not 1.5: the controller declares a node
// lost only once the lease store has taken writes for node_timeout, and
// moving the leaders restarts that window. Last, the host that leads the
// lease bucket (not app's) is cut off for node_timeout: the healthy nodes
// ride out the store's election without a fence, and app stays.
func shortSchedule() []partStep {
	nt := *partitionNT
	return []partStep{
		{Net: "isolate", Target: "app", For: nt * 5 / 2, LeaseAway: true},
		{Net: "loss", Target: "app", P: 0.05, For: nt / 2, Benign: true},
		{Net: "latency", Target: "any", Delay: 100 * time.Millisecond, For: nt / 2, Benign: true},
		{Net: "oneway", Target: "app", For: nt * 5 / 2, Proc: "kill-controller", ProcOn: "other", LeaseAway: true},
		{Net: "isolate", For: nt, LeaseCut: true},
	}
}

// randomSchedule draws n steps from seed: the same seed, the same steps.
func randomSchedule(seed uint64, n int) []partStep {
	nt := *partitionNT
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	nets := []string{"isolate", "split", "oneway", "flap", "loss", "latency", "none"}
	procs := []string{"", "", "kill-server", "stop-server", "kill-host", "stop-host", "kill-controller", "stop-controller"}
	var steps []partStep
	for range n {
		s := partStep{Net: nets[r.IntN(len(nets))], HostIdx: r.IntN(3)}
		s.Target = []string{"app", "other", "any"}[r.IntN(3)]
		s.For = nt/2 + time.Duration(r.Int64N(int64(2*nt)))
		switch s.Net {
		case "loss":
			s.P = 0.01 + r.Float64()*0.09
			s.Benign = true
		case "latency":
			s.Delay = time.Duration(20+r.IntN(280)) * time.Millisecond
			s.Benign = true
		}
		if s.Net == "none" || r.IntN(2) == 0 {
			s.Proc = procs[2+r.IntN(len(procs)-2)]
			s.ProcOn = []string{"app", "other"}[r.IntN(2)]
			s.Benign = false
		}
		steps = append(steps, s)
	}
	return steps
}

// pick returns the host a step's target names, given where app runs.
// eligibleElsewhere returns the hosts other than appHost that app has
// not failed on since its last reset (package.failed names the node).
func (p *partEnv) eligibleElsewhere(appHost string) []string {
	failed := map[string]bool{}
	for _, e := range p.log.all() {
		if e.Subject != "app" {
			continue
		}
		switch d := e.Data.(type) {
		case events.PackageReset:
			clear(failed)
		case events.PackageFailed:
			failed[d.Node] = true
		}
	}
	var out []string
	for _, h := range p.lab.Hosts {
		if h.Name != appHost && !failed[h.Name] {
			out = append(out, h.Name)
		}
	}
	return out
}

func (p *partEnv) pick(target string, idx int, appHost string) *netlab.Host {
	switch target {
	case "app":
		return p.lab.Host(appHost)
	case "other":
		var others []*netlab.Host
		for _, h := range p.lab.Hosts {
			if h.Name != appHost {
				others = append(others, h)
			}
		}
		return others[idx%len(others)]
	default:
		return p.lab.Hosts[idx%len(p.lab.Hosts)]
	}
}

// convergeBound is how soon after healing everything must have settled:
// app running on one host as the log says, every node joined. A cut-off
// host fences itself and rejoins (node_timeout for its lease, a join); a
// killed server must catch up; app may have to move once more.
func (p *partEnv) convergeBound() time.Duration { return 3*p.nt + 60*time.Second }

// runStep applies one fault, holds it, heals, and checks what it must.
func (p *partEnv) runStep(ctx context.Context, s partStep) stepResult {
	t := p.t
	res := stepResult{class: s.class()}
	var fromSeqForDump uint64
	defer func() {
		if !t.Failed() {
			return
		}
		var lines []string
		for _, e := range p.log.evs {
			if e.Seq > fromSeqForDump && e.Subject != "probe" {
				lines = append(lines, formatEvent(e))
			}
		}
		t.Logf("the log during the step (without the writer's events):\n%s", strings.Join(lines[max(0, len(lines)-300):], "\n"))
	}()
	appHost, appPids := p.waitRunningOne(p.convergeBound(), time.Second, "app running on one host before the step")
	target := p.pick(s.Target, s.HostIdx, appHost)
	if s.LeaseCut {
		p.leaderAway("KV_"+lease.Bucket, appHost)
		leader := leaderOf(clusterJS(t, p.fwdURL), "KV_"+lease.Bucket)
		if target = p.lab.Host(leader); target == nil {
			t.Fatalf("%s: the lease bucket's leader %q is not a host of the lab", s, leader)
		}
	}
	if s.LeaseAway {
		p.leaderAway(events.StreamName, target.Name) // the log's leader too: fewer moving parts
		p.leaderAway("KV_"+lease.Bucket, target.Name)
	}
	// Where app may go: the hosts it has not failed on since its last
	// reset, other than its own. None left is the policy's answer to a
	// cut (it waits for its node), not a fault of the step.
	elsewhere := p.eligibleElsewhere(appHost)
	p.log.all()
	fromSeq := p.log.last
	fromSeqForDump = fromSeq
	js := clusterJS(t, p.fwdURL)
	leaders := fmt.Sprintf("app on %s, target %s; leaders: log %s, leases %s", appHost, target.Name,
		leaderOf(js, events.StreamName), leaderOf(js, "KV_"+lease.Bucket))
	t.Logf("%s: %s", s, leaders)
	cut := time.Now()
	var err error
	switch s.Net {
	case "isolate":
		err = p.lab.Isolate(ctx, target)
	case "split":
		var rest []*netlab.Host
		for _, h := range p.lab.Hosts {
			if h != target {
				rest = append(rest, h)
			}
		}
		err = p.lab.Split(ctx, []*netlab.Host{target}, rest)
	case "oneway":
		// What target sends is lost; it still hears the others.
		err = p.lab.DropOneWay(ctx, target, p.pick("other", s.HostIdx, target.Name))
		if err == nil {
			err = p.lab.DropOneWay(ctx, target, p.pick("other", s.HostIdx+1, target.Name))
		}
	case "flap":
		err = p.lab.Flap(ctx, target, 2*time.Second, 2*time.Second)
	case "loss":
		err = p.lab.Loss(ctx, target, s.P)
	case "latency":
		p.lab.Delay(target, s.Delay)
	}
	if err != nil {
		t.Fatal(err)
	}
	var procName string
	if s.Proc != "" {
		ph := p.pick(s.ProcOn, s.HostIdx+1, appHost)
		role, how, _ := strings.Cut(s.Proc, "-")
		if how == "server" || how == "host" || how == "controller" {
			role, how = how, role
		}
		if role == "controller" {
			role = "failover"
		}
		procName = role + " " + ph.Name
		if how == "kill" {
			p.kill9(procName)
		} else {
			p.signal(procName, syscall.SIGSTOP)
		}
	}
	// Hold the fault; meanwhile the sampler checks, and we note when app
	// left its host and started on another.
	end := cut.Add(s.For)
	var goneAt time.Time
	for time.Now().Before(end) {
		if goneAt.IsZero() {
			if last, gone := p.samp.goneFrom(appHost); gone {
				goneAt = last
			}
		}
		if procName != "" && strings.HasPrefix(s.Proc, "kill") && time.Since(cut) > 2*time.Second {
			// systemd's Restart=always, a moment later.
			p.mu.Lock()
			_, running := p.procs[procName]
			p.mu.Unlock()
			if !running {
				p.restart(procName)
			}
		}
		time.Sleep(50 * time.Millisecond) // the fault's duration, not an outcome
	}
	if procName != "" {
		p.mu.Lock()
		_, running := p.procs[procName]
		p.mu.Unlock()
		if !running {
			p.restart(procName)
		} else {
			p.signal(procName, syscall.SIGCONT)
		}
	}
	if err := p.lab.Heal(ctx); err != nil {
		t.Fatal(err)
	}
	healed := time.Now()
	p.checkAlive()
	newHost, _ := p.waitRunningOne(p.convergeBound(), 2*time.Second, "app running on one host after healing ("+s.String()+")")
	p.waitJoined(p.convergeBound()-time.Since(healed), fromSeq)
	res.converged = time.Since(healed)

	evs := p.log.all()
	var started, placed events.Event
	var lastRenewal time.Time
	storeFenced := map[string]bool{} // nodes fenced by a lease store outage in a benign step
	var consequences []string        // placements, failures, a moved service in a benign step
	released := false                // app's old host said it stopped app (fenced, halted, failed) before the placement
	for _, e := range evs {
		if e.Seq <= fromSeq {
			continue
		}
		switch d := e.Data.(type) {
		case events.NodeFenced:
			released = released || (placed.ID == "" && e.Subject == appHost)
		case events.PackageHalted:
			released = released || (placed.ID == "" && e.Subject == "app" && d.Node == appHost)
		case events.PackageFailed:
			released = released || (placed.ID == "" && e.Subject == "app" && d.Node == appHost)
		case events.NodeLost:
			// The controller may record a loss only once the lease key
			// expired: node_timeout after the last renewal it saw.
			if !d.LastSeen.IsZero() && e.Time.Before(d.LastSeen.Add(p.nt-time.Second)) {
				t.Errorf("%s: %s recorded %v after the last renewal it names, before its lease (node_timeout %v) could have expired: %s",
					s, e.Subject, e.Time.Sub(d.LastSeen).Round(time.Millisecond), p.nt, formatEvent(e))
			}
		case events.PackagePlaced:
			if e.Subject == "app" && placed.ID == "" && d.Node != appHost {
				placed = e
			}
		case events.PackageStarted:
			if e.Subject == "app" && started.ID == "" && d.Node != appHost {
				started = e
			}
		}
		if s.LeaseCut && e.Subject == target.Name {
			continue // the cut host fences itself, and may be lost
		}
		if s.Benign || s.LeaseCut {
			switch d := e.Data.(type) {
			case events.NodeFenced:
				// A holder fences itself only if it could not renew for
				// 0.6 node_timeout; if the lease store itself took no
				// writes for most of that (its leader lost to a loaded
				// machine's stalls, say), the fence is the design's answer
				// to a store outage, not a false one.
				at := d.Since
				if at.IsZero() {
					at = e.Time
				}
				if out, need := p.storeOutage(at); out >= need {
					storeFenced[e.Subject] = true
					res.storeFences = append(res.storeFences, fmt.Sprintf("%s (the lease store took no writes for %v before it)", formatEvent(e), out.Round(time.Millisecond)))
				} else {
					res.falseLoss = append(res.falseLoss, fmt.Sprintf("%s (the lease store's longest outage before it: %v, under the %v that could fence a holder renewing on time)",
						formatEvent(e), out.Round(time.Millisecond), need.Round(time.Millisecond)))
				}
			case events.NodeLost:
				if storeFenced[e.Subject] {
					res.storeFences = append(res.storeFences, formatEvent(e))
				} else {
					res.falseLoss = append(res.falseLoss, formatEvent(e))
				}
			case events.PackagePlaced, events.PackageFailed, events.GuestLost:
				consequences = append(consequences, formatEvent(e))
			}
		}
	}
	_, _, pidsNow, _ := p.samp.state("")
	if (s.Benign || s.LeaseCut) && (newHost != appHost || !slices.Equal(sorted(pidsNow), sorted(appPids))) {
		consequences = append(consequences, fmt.Sprintf("app's service changed from %s %v to %s %v", appHost, appPids, newHost, pidsNow))
	}
	if len(storeFenced) > 0 {
		// What a fence by a store outage brings (app moved off a fenced
		// node) is the design's too.
		res.storeFences = append(res.storeFences, consequences...)
	} else {
		res.falseLoss = append(res.falseLoss, consequences...)
	}
	for _, f := range res.falseLoss {
		if s.LeaseCut {
			t.Errorf("%s: a healthy node or app, yet: %s", s, f)
			continue
		}
		t.Errorf("%s: below node_timeout, yet: %s", s, f)
	}
	for _, f := range res.storeFences {
		t.Logf("%s: fenced by a lease store outage (by design, not a false fence): %s", s, f)
	}
	if s.LeaseCut {
		var gaps []string
		for _, n := range p.nodes() {
			if n != target.Name {
				g, _ := p.rn.maxGap(n, cut, healed)
				gaps = append(gaps, fmt.Sprintf("%s %v", n, g.Round(time.Millisecond)))
			}
		}
		t.Logf("%s: the lease store took no writes for %v at most; longest renewal gap of the healthy nodes: %s (they fence at %v)",
			s, p.sp.longestGap(cut, healed).Round(time.Millisecond), strings.Join(gaps, ", "), lease.FenceAfter(p.nt))
	}
	if started.ID != "" {
		res.moved = true
		res.recovery = started.Time.Sub(cut)
		// The majority placed app elsewhere only after app's old host
		// fenced itself: its last lease renewal + the guard's bound.
		for _, r := range p.rn.seenOf(appHost) {
			if r.Before(cut) {
				lastRenewal = r
			}
		}
		if !goneAt.IsZero() && placed.ID != "" && placed.Time.Before(goneAt) {
			t.Errorf("%s: app placed on %s at %s, before its service on %s was gone (last seen %s)", s,
				placed.Data.(events.PackagePlaced).Node, placed.Time.Format("15:04:05.000"), appHost, goneAt.Format("15:04:05.000"))
		}
		if !released && !lastRenewal.IsZero() && placed.ID != "" && placed.Time.Before(lastRenewal.Add(p.tl.GuestsDownBy())) {
			t.Errorf("%s: app placed on %s at %s, before %s's fencing bound (last renewal %s + %v)", s,
				placed.Data.(events.PackagePlaced).Node, placed.Time.Format("15:04:05.000"), appHost, lastRenewal.Format("15:04:05.000"), p.tl.GuestsDownBy())
		}
		if (s.Net == "isolate" || s.Net == "split") && s.Target == "app" && s.Proc == "" {
			// The cut-off host stopped app's service within its bound.
			bound := p.tl.GuestsDownBy() + time.Second + p.st.max(cut, time.Now())
			if goneAt.IsZero() || goneAt.Sub(cut) > bound {
				t.Errorf("%s: %s's service still ran %v after the cut (last seen %s), want gone within %v", s, appHost,
					goneAt.Sub(cut).Round(time.Millisecond), goneAt.Format("15:04:05.000"), bound)
			}
		}
		t.Logf("%s: app moved %s -> %s: service gone from %s %v after the cut, placed %v, started %v after the cut; converged %v after healing",
			s, appHost, newHost, appHost, durSince(goneAt, cut), durSince(placed.Time, cut), res.recovery.Round(time.Millisecond), res.converged.Round(time.Millisecond))
	} else {
		t.Logf("%s: app stayed on %s; converged %v after healing", s, appHost, res.converged.Round(time.Millisecond))
	}
	mustMove := (s.Net == "isolate" || s.Net == "split") && s.Target == "app" && s.Proc == "" && s.For > p.nt+5*time.Second
	if mustMove && len(elsewhere) == 0 {
		t.Logf("%s: app may not move off %s: it failed on every other host since its last reset", s, appHost)
		if res.moved {
			t.Errorf("%s: app moved %s -> %s, a host it failed on since its last reset", s, appHost, newHost)
		}
	} else if mustMove && !res.moved {
		t.Errorf("%s: app did not move off its cut-off host %s (it may run on %v)", s, appHost, elsewhere)
	}
	return res
}

// storeOutage returns the longest time the lease store took none of the
// test's probe writes within the fence window before at (when a node fenced
// itself: FenceAfter after its last renewal), and how long an outage must
// be to fence a holder renewing on time: its renewal falls due a renewal
// interval into the window, so the store must refuse it for the rest, less
// a second for the probe's own cadence and timeouts and what the test
// process stalled (a machine that stalls the test stalls the daemons too).
func (p *partEnv) storeOutage(at time.Time) (out, need time.Duration) {
	from := at.Add(-lease.FenceAfter(p.nt) - time.Second)
	need = lease.FenceAfter(p.nt) - lease.RenewEvery(p.nt) - time.Second - p.st.max(from, at)
	return p.sp.longestGap(from, at), need
}

// leaderOf names the server that leads stream, "?" if unknown.
func leaderOf(js jetstream.JetStream, stream string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, stream)
	if err != nil || st.CachedInfo().Cluster == nil || st.CachedInfo().Cluster.Leader == "" {
		return "?"
	}
	return st.CachedInfo().Cluster.Leader
}

// leaderAway asks stream's leader to step down until a server other than
// host leads it.
func (p *partEnv) leaderAway(stream, host string) {
	p.t.Helper()
	nc := clusterConn(p.t, p.fwdURL, "stepdown")
	defer nc.Close()
	js := clusterJS(p.t, p.fwdURL)
	natstest.WaitFor(p.t, 60*time.Second, stream+"'s leader off "+host, func() bool {
		info := streamInfo(p.t, js, stream)
		if info.Cluster != nil && info.Cluster.Leader != "" && info.Cluster.Leader != host && allCurrent(info) {
			return true
		}
		if info.Cluster != nil && info.Cluster.Leader == host {
			_, _ = nc.Request("$JS.API.STREAM.LEADER.STEPDOWN."+stream, nil, 2*time.Second)
			time.Sleep(time.Second) // let the election end before looking again
		}
		return false
	})
}

// waitJoined waits until every node's last membership event after seq,
// if any, is a join: cut-off nodes that were lost or fenced came back.
func (p *partEnv) waitJoined(bound time.Duration, seq uint64) {
	p.t.Helper()
	natstest.WaitFor(p.t, max(bound, 10*time.Second), "every node joined again", func() bool {
		up := map[string]bool{}
		for _, e := range p.log.all() {
			if e.Seq <= seq {
				continue
			}
			switch e.Data.(type) {
			case events.NodeLost, events.NodeFenced:
				up[e.Subject] = false
			case events.NodeJoined:
				up[e.Subject] = true
			}
		}
		for _, ok := range up {
			if !ok {
				return false
			}
		}
		return true
	})
}

// seenOf returns the renewals of node's lease seen so far.
func (r *renewals) seenOf(node string) []time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.seen[node])
}

func sorted(s []int) []int { s = slices.Clone(s); slices.Sort(s); return s }

func durSince(t, from time.Time) string {
	if t.IsZero() {
		return "?"
	}
	return t.Sub(from).Round(time.Millisecond).String()
}

// TestPartitionSchedule: a seed gives the same schedule every time, and
// different seeds differ.
func TestPartitionSchedule(t *testing.T) {
	a, b := randomSchedule(42, 20), randomSchedule(42, 20)
	if !slices.Equal(a, b) {
		t.Fatalf("seed 42 gave two schedules:\n%v\n%v", a, b)
	}
	if slices.Equal(a, randomSchedule(43, 20)) {
		t.Fatal("seeds 42 and 43 gave the same schedule")
	}
	for _, s := range a {
		if s.For < *partitionNT/2 || s.For > *partitionNT*5/2 || (s.Benign && s.Proc != "") {
			t.Errorf("step out of range: %+v", s)
		}
	}
}

// TestStoreProbeGap: the longest time without an acknowledged probe write
// within a window counts the window's edges, so an outage still going on at
// a fence, or begun before the window, counts only inside it.
func TestStoreProbeGap(t *testing.T) {
	t0 := time.Date(2026, 12, 2, 6, 0, 0, 0, time.UTC)
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	p := &storeProbe{}
	for _, s := range []float64{0, 0.05, 0.1, 7.1, 7.15, 20} { // out from 0.1 to 7.1, and from 7.15 to 20
		p.acked = append(p.acked, [2]time.Time{at(s - 0.01), at(s)})
	}
	for _, c := range []struct {
		from, to float64
		want     time.Duration
	}{
		{0, 7.15, 7 * time.Second},
		{1, 7.15, 6100 * time.Millisecond},  // the outage began before the window
		{7.15, 10, 2850 * time.Millisecond}, // still out at the window's end
		{0, 0.1, 50 * time.Millisecond},     // writes every 50 ms
		{8, 9, time.Second},                 // no write at all inside
		{-1, 0.1, 1000 * time.Millisecond},  // before the first write
		{7.1, 7.15, 50 * time.Millisecond},
	} {
		if got := p.longestGap(at(c.from), at(c.to)); got != c.want {
			t.Errorf("longestGap(%v, %v) = %v, want %v", c.from, c.to, got, c.want)
		}
	}
}
