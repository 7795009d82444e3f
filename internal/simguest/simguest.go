// Package simguest is a simulated guest driver for benchmarks at scale:
// thousands of guests in one process, each an in-process agent that speaks
// the guest agent's NATS protocol (guestagent.Subject endpoints run, stop,
// list, ping and place; heartbeats on guestagent.HeartbeatSubject) over a
// shared NATS connection (the cluster's, or its driver's: DriverOn) and appends the same process.started and
// process.exited events to the log as a real agent, under the agent's
// source. No process is forked: a "process" is a record with a made-up pid
// that runs until it is stopped or the benchmark makes it exit (Exit).
//
// What it leaves out of a real agent (guestagent): the spool (events are
// appended straight to the log, once, before the run is answered), lease
// fencing (a simulated guest does not watch its node's lease; a lost node
// is simulated by Crash, which makes its guests vanish at once, like a
// machine that loses power), the log check of a place request to another
// node (the request is trusted), output capture and health. Each Driver is
// one node's hostmanager.Driver; register it as the "process" driver
// (hostmanager.Config.Drivers) so an unchanged configuration runs on it.
package simguest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/vmguard/vmguard/events"
	"github.com/vmguard/vmguard/guestagent"
	"github.com/vmguard/vmguard/hostmanager"
)

// Cluster holds the simulated guests of every node of one benchmark and
// sends their heartbeats.
type Cluster struct {
	log     *events.Log
	version string
	pid     atomic.Int64

	mu     sync.Mutex
	guests map[string]*guest // by "<node>/<guest>": a guest may briefly run on two nodes, as VMs can
	down   map[string]bool   // crashed nodes
}

// New returns a cluster of simulated guests on the log's connection that
// sends each live guest's heartbeat every interval until ctx ends.
func New(ctx context.Context, l *events.Log, interval time.Duration) *Cluster {
	c := &Cluster{log: l, version: "0.0.0-sim", guests: map[string]*guest{}, down: map[string]bool{}}
	go func() {
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				c.mu.Lock()
				live := make([]*guest, 0, len(c.guests))
				for _, g := range c.guests {
					live = append(live, g)
				}
				c.mu.Unlock()
				for _, g := range live {
					g.beat()
				}
			}
		}
	}()
	return c
}

// Driver returns node's driver; its guests use the cluster's log and
// connection.
func (c *Cluster) Driver(node string) *Driver { return &Driver{c: c, node: node, log: c.log} }

// DriverOn returns node's driver whose guests answer, send heartbeats and
// append over l and its connection instead of the cluster's, so that a
// benchmark can spread thousands of guests over several connections.
func (c *Cluster) DriverOn(node string, l *events.Log) *Driver {
	return &Driver{c: c, node: node, log: l}
}

// Crash simulates the loss of node's machine: its guests stop answering
// and sending heartbeats at once, and write nothing more.
func (c *Cluster) Crash(node string) {
	c.mu.Lock()
	c.down[node] = true
	var gone []*guest
	for key, g := range c.guests {
		if g.node == node {
			gone = append(gone, g)
			delete(c.guests, key)
		}
	}
	c.mu.Unlock()
	for _, g := range gone {
		g.kill()
	}
}

// Revive lets node's driver start guests again after Crash.
func (c *Cluster) Revive(node string) {
	c.mu.Lock()
	delete(c.down, node)
	c.mu.Unlock()
}

// Guests returns how many simulated guests run.
func (c *Cluster) Guests() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.guests)
}

// Exit makes the running process of pkg's service exit with code, as a
// crash of the service would: the guest appends its process.exited and
// Exit returns that event (Seq set) and the node it ran on; false if the
// service does not run.
func (c *Cluster) Exit(ctx context.Context, pkg, service string, code int) (events.Event, string, bool, error) {
	c.mu.Lock()
	var target *guest
	for _, g := range c.guests {
		g.mu.Lock()
		p := g.services[pkg+"/"+service]
		g.mu.Unlock()
		if p != nil {
			target = g
			break
		}
	}
	c.mu.Unlock()
	if target == nil {
		return events.Event{}, "", false, nil
	}
	target.mu.Lock()
	defer target.mu.Unlock()
	p := target.services[pkg+"/"+service]
	if p == nil {
		return events.Event{}, "", false, nil
	}
	e, err := target.exitLocked(ctx, p, code, "", "")
	return e, target.node, err == nil, err
}

// Packages returns the packages with a process running on node.
func (c *Cluster) Packages(node string) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	seen := map[string]bool{}
	var out []string
	for _, g := range c.guests {
		if g.node != node {
			continue
		}
		g.mu.Lock()
		for _, p := range g.services {
			if !seen[p.req.Package] {
				seen[p.req.Package] = true
				out = append(out, p.req.Package)
			}
		}
		g.mu.Unlock()
	}
	return out
}

// Driver is one node's simulated guest driver (hostmanager.Driver).
type Driver struct {
	c    *Cluster
	node string
	log  *events.Log // its guests' log and connection (Cluster.DriverOn)
}

var _ hostmanager.Driver = (*Driver)(nil)

// Start brings the guest up on the driver's node: it answers on the
// agent's subjects and sends its first heartbeat at once. A guest that
// already runs here counts as started.
func (d *Driver) Start(ctx context.Context, ref hostmanager.GuestRef) error {
	c := d.c
	name := ref.Name()
	key := d.node + "/" + name
	c.mu.Lock()
	if c.down[d.node] {
		c.mu.Unlock()
		return fmt.Errorf("start guest %s: node %s is down", name, d.node)
	}
	if g := c.guests[key]; g != nil {
		c.mu.Unlock()
		g.beat()
		return nil
	}
	g := &guest{c: c, log: d.log, name: name, node: d.node, started: time.Now(),
		procs: map[string]*proc{}, services: map[string]*proc{}, epochs: map[string]uint64{}}
	c.guests[key] = g
	c.mu.Unlock()
	sub, err := d.log.Conn().Subscribe(guestagent.Subject(name, "*"), g.handle)
	if err == nil {
		// The host manager's first request may come over another
		// connection (DriverOn): the server must know the subscription
		// before Start returns, or that request finds no responder.
		err = d.log.Conn().FlushWithContext(ctx)
		if err != nil {
			_ = sub.Unsubscribe()
		}
	}
	if err != nil {
		c.mu.Lock()
		delete(c.guests, key)
		c.mu.Unlock()
		return fmt.Errorf("start guest %s: subscribe: %w", name, err)
	}
	g.mu.Lock()
	g.sub = sub
	g.mu.Unlock()
	g.beat()
	return nil
}

// Stop stops the guest: gracefully, its processes exit with reason
// agent_stopped first; forced, they end without a word, as with a killed VM.
func (d *Driver) Stop(ctx context.Context, ref hostmanager.GuestRef, force bool) error {
	c := d.c
	key := d.node + "/" + ref.Name()
	c.mu.Lock()
	g := c.guests[key]
	if g == nil {
		c.mu.Unlock()
		return nil
	}
	delete(c.guests, key)
	c.mu.Unlock()
	if !force {
		g.mu.Lock()
		for _, p := range g.live() {
			if _, err := g.exitLocked(ctx, p, -1, "SIGTERM", guestagent.ReasonAgentStopped); err != nil {
				g.mu.Unlock()
				return fmt.Errorf("stop guest %s: %w", ref.Name(), err)
			}
		}
		g.mu.Unlock()
	}
	g.kill()
	return nil
}

// Status reports whether the guest runs on the driver's node.
func (d *Driver) Status(ctx context.Context, ref hostmanager.GuestRef) (bool, error) {
	d.c.mu.Lock()
	defer d.c.mu.Unlock()
	return d.c.guests[d.node+"/"+ref.Name()] != nil, nil
}

type proc struct {
	req       guestagent.RunRequest
	pid       int
	startedID string
	started   time.Time
	exit      *guestagent.ExitInfo
}

// guest is one simulated guest and its agent.
type guest struct {
	c       *Cluster
	log     *events.Log // its driver's
	name    string
	node    string
	started time.Time

	mu       sync.Mutex
	sub      *nats.Subscription
	dead     bool
	procs    map[string]*proc // by request id
	services map[string]*proc // "<package>/<service>" -> the live one
	epochs   map[string]uint64

	// What a heartbeat says, kept beside mu: a request holds mu while it
	// appends (run, stop), which a busy server answers in seconds, and
	// the one goroutine that beats for every guest of the cluster waited
	// for it, so one slow append held back every guest's heartbeat after
	// it; at 1,000 nodes their host managers reported thousands of guests
	// lost (docs/bench/scale.md, session 12).
	quiet   atomic.Bool  // dead
	running atomic.Int64 // len(services)
}

func (g *guest) kill() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.dead = true
	g.quiet.Store(true)
	if g.sub != nil {
		_ = g.sub.Unsubscribe()
	}
}

// beat sends g's heartbeat, without waiting for g.mu (see quiet).
func (g *guest) beat() {
	if g.quiet.Load() {
		return
	}
	hb := guestagent.Heartbeat{Guest: g.name, Running: int(g.running.Load()), Version: g.c.version, Time: time.Now().UTC(), Node: g.node}
	b, _ := json.Marshal(hb)
	_ = g.log.Conn().Publish(guestagent.HeartbeatSubject(g.name), b)
}

func (g *guest) live() []*proc {
	out := make([]*proc, 0, len(g.services))
	for _, p := range g.services {
		out = append(out, p)
	}
	return out
}

// twin reports whether another instance of the guest runs on another node.
func (g *guest) twin() bool {
	g.c.mu.Lock()
	defer g.c.mu.Unlock()
	for _, o := range g.c.guests {
		if o != g && o.name == g.name {
			return true
		}
	}
	return false
}

// handle answers one request; each runs on the subscription's goroutine,
// in order, as the guest's requests are few. While a twin runs on another
// node (the old instance not yet stopped there) an instance leaves
// unanswered what is not its own: a run or place naming another node, a
// stop of a request id it does not know.
func (g *guest) handle(m *nats.Msg) {
	endpoint := m.Subject[strings.LastIndexByte(m.Subject, '.')+1:]
	var (
		reply any
		err   error
	)
	var probe struct {
		Node      string `json:"node"`
		RequestID string `json:"request_id"`
	}
	_ = json.Unmarshal(m.Data, &probe)
	if g.twin() {
		g.mu.Lock()
		known := g.procs[probe.RequestID] != nil
		g.mu.Unlock()
		switch {
		case (endpoint == guestagent.EndpointRun || endpoint == guestagent.EndpointPlace) && probe.Node != "" && probe.Node != g.node:
			return
		case endpoint == guestagent.EndpointStop && probe.RequestID != "" && !known:
			return
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	switch endpoint {
	case guestagent.EndpointRun:
		var req guestagent.RunRequest
		if err = json.Unmarshal(m.Data, &req); err == nil {
			reply, err = g.run(ctx, req)
		}
	case guestagent.EndpointStop:
		var req guestagent.StopRequest
		if err = json.Unmarshal(m.Data, &req); err == nil {
			reply, err = g.stop(ctx, req)
		}
	case guestagent.EndpointList:
		var req guestagent.ListRequest
		_ = json.Unmarshal(m.Data, &req)
		reply = g.list(req)
	case guestagent.EndpointPing:
		g.mu.Lock()
		reply = guestagent.PingReply{Guest: g.name, Node: g.node, Version: g.c.version, Running: len(g.services),
			MaxProcs: guestagent.DefaultMaxProcs, Started: g.started.UTC(), Lease: guestagent.LeaseHeld}
		g.mu.Unlock()
	case guestagent.EndpointPlace:
		var req guestagent.PlaceRequest
		if err = json.Unmarshal(m.Data, &req); err == nil {
			reply, err = g.place(req)
		}
	default:
		err = &guestagent.RemoteError{Code: guestagent.CodeNotFound, Message: "no endpoint " + endpoint}
	}
	if err != nil {
		var re *guestagent.RemoteError
		if !errors.As(err, &re) {
			re = &guestagent.RemoteError{Code: guestagent.CodeBadRequest, Message: err.Error()}
		}
		msg := nats.NewMsg(m.Reply)
		msg.Header.Set(micro.ErrorCodeHeader, re.Code)
		msg.Header.Set(micro.ErrorHeader, re.Message)
		_ = m.RespondMsg(msg)
		return
	}
	b, _ := json.Marshal(reply)
	_ = m.Respond(b)
}

func (g *guest) place(req guestagent.PlaceRequest) (guestagent.PlaceReply, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if req.Epoch < g.epochs[req.Package] {
		return guestagent.PlaceReply{}, &guestagent.RemoteError{Code: guestagent.CodeConflict,
			Message: fmt.Sprintf("package %s: epoch %d is older than epoch %d", req.Package, req.Epoch, g.epochs[req.Package])}
	}
	g.epochs[req.Package] = req.Epoch
	return guestagent.PlaceReply{Node: g.node, Epoch: req.Epoch, Lease: guestagent.LeaseHeld}, nil
}

func (g *guest) info(p *proc) guestagent.ProcessInfo {
	st := guestagent.StateRunning
	var x *guestagent.ExitInfo
	if p.exit != nil {
		st = guestagent.StateExited
		c := *p.exit
		x = &c
	}
	return guestagent.ProcessInfo{RequestID: p.req.RequestID, Package: p.req.Package, Service: p.req.Service, Argv: p.req.Argv,
		Epoch: p.req.Epoch, PID: p.pid, State: st, StartedAt: p.started.UTC(), StartedEventID: p.startedID, Exit: x}
}

// run starts a simulated process: it appends process.started, then answers.
func (g *guest) run(ctx context.Context, req guestagent.RunRequest) (guestagent.RunReply, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.dead {
		return guestagent.RunReply{}, &guestagent.RemoteError{Code: guestagent.CodeUnavailable, Message: "guest is stopping"}
	}
	if req.Epoch < g.epochs[req.Package] {
		return guestagent.RunReply{}, &guestagent.RemoteError{Code: guestagent.CodeConflict, Message: "epoch older than the guest's placement"}
	}
	g.epochs[req.Package] = max(g.epochs[req.Package], req.Epoch)
	if p := g.procs[req.RequestID]; p != nil {
		return guestagent.RunReply{Process: g.info(p), Duplicate: true}, nil
	}
	key := req.Package + "/" + req.Service
	if q := g.services[key]; q != nil {
		return guestagent.RunReply{}, &guestagent.RemoteError{Code: guestagent.CodeConflict,
			Message: fmt.Sprintf("service %s already runs (request id %q)", key, q.req.RequestID)}
	}
	p := &proc{req: req, pid: int(g.c.pid.Add(1)), startedID: events.NewID(), started: time.Now()}
	p.req.Env = nil
	e := events.Event{ID: p.startedID, Source: guestagent.Source(g.name), Subject: req.Package, Time: p.started.UTC(), CauseID: causeOf(req),
		Data: events.ProcessStarted{Guest: g.name, Service: req.Service, PID: p.pid, RequestID: req.RequestID, Epoch: req.Epoch}}
	if _, err := g.log.Append(ctx, e); err != nil {
		return guestagent.RunReply{}, &guestagent.RemoteError{Code: guestagent.CodeInternal, Message: fmt.Sprintf("append process.started: %v", err)}
	}
	g.procs[req.RequestID] = p
	g.services[key] = p
	g.running.Store(int64(len(g.services)))
	return guestagent.RunReply{Process: g.info(p)}, nil
}

// exitLocked ends p and appends its process.exited; g.mu is held.
func (g *guest) exitLocked(ctx context.Context, p *proc, code int, sig, reason string) (events.Event, error) {
	at := time.Now()
	rt := at.Sub(p.started).Milliseconds()
	e := events.Event{ID: events.NewID(), Source: guestagent.Source(g.name), Subject: p.req.Package, Time: at.UTC(), CauseID: causeOf(p.req),
		Data: events.ProcessExited{Guest: g.name, Service: p.req.Service, PID: p.pid, ExitCode: code, Signal: sig,
			RuntimeMS: rt, RequestID: p.req.RequestID, Epoch: p.req.Epoch, Reason: reason}}
	seq, err := g.log.Append(ctx, e)
	if err != nil {
		return events.Event{}, fmt.Errorf("append process.exited: %w", err)
	}
	e.Seq = seq
	p.exit = &guestagent.ExitInfo{ExitCode: code, Signal: sig, Reason: reason, RuntimeMS: rt, At: at.UTC(), EventID: e.ID}
	delete(g.services, p.req.Package+"/"+p.req.Service)
	g.running.Store(int64(len(g.services)))
	return e, nil
}

func (g *guest) stop(ctx context.Context, req guestagent.StopRequest) (guestagent.StopReply, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	var targets []*proc
	if req.RequestID != "" {
		p := g.procs[req.RequestID]
		if p == nil {
			return guestagent.StopReply{}, &guestagent.RemoteError{Code: guestagent.CodeNotFound, Message: fmt.Sprintf("no process with request id %q", req.RequestID)}
		}
		targets = append(targets, p)
	} else {
		for _, p := range g.services {
			if p.req.Package == req.Package && (req.Service == "" || p.req.Service == req.Service) {
				targets = append(targets, p)
			}
		}
	}
	reply := guestagent.StopReply{Processes: []guestagent.ProcessInfo{}}
	for _, p := range targets {
		if p.exit == nil {
			if _, err := g.exitLocked(ctx, p, -1, "SIGTERM", guestagent.ReasonStopped); err != nil {
				return guestagent.StopReply{}, &guestagent.RemoteError{Code: guestagent.CodeInternal, Message: err.Error()}
			}
		}
		reply.Processes = append(reply.Processes, g.info(p))
	}
	return reply, nil
}

func (g *guest) list(req guestagent.ListRequest) guestagent.ListReply {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := guestagent.ListReply{Guest: g.name, Processes: []guestagent.ProcessInfo{}}
	for _, p := range g.procs {
		if (req.Package == "" || p.req.Package == req.Package) && (p.exit == nil || req.Exited) {
			out.Processes = append(out.Processes, g.info(p))
		}
	}
	return out
}

// causeOf is the agent's causeid of a run's events.
func causeOf(req guestagent.RunRequest) string {
	if req.CauseID != "" {
		return req.CauseID
	}
	if c, ok := strings.CutSuffix(req.RequestID, "/"+req.Service); ok && c != "" {
		return c
	}
	return req.RequestID
}
