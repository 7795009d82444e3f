package guestagent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/vmguard/vmguard/events"
)

// Defaults of Config.
const (
	DefaultMaxProcs        = 1024
	DefaultHeartbeat       = time.Second
	DefaultLogMaxBytes     = 10 << 20
	DefaultShutdownTimeout = 10 * time.Second
)

// Config configures an Agent.
type Config struct {
	// Guest is the guest's name (required, a valid name).
	Guest string
	// Node is the node the guest runs on at start, a hint: a host manager
	// that controls the guest may name another one (PlaceRequest, or the
	// node of a RunRequest), which the agent follows once the log's
	// placement confirms it. With a node the agent fences: it watches the
	// node's lease, accepts runs only while it sees the lease renewed, and
	// stops every process when it lapses (see the package doc). Without one
	// (tests, standalone use) it never fences, unless Fence is set.
	Node string
	// Fence makes an agent without a Node fence too: it accepts no run
	// until a host manager names its node (PlaceRequest) and that node's
	// lease is seen (a guest image that does not know where it boots).
	Fence bool
	// Conn is the NATS connection (required). The agent does not close it.
	// Use nats.MaxReconnects(-1) so the agent outlives outages; set the
	// connection's handlers before Run (the micro service adds its own).
	Conn *nats.Conn
	// StateDir holds the spool, the per-service output logs and the lock
	// that keeps two agents off the same state (required).
	StateDir string
	// MaxProcs bounds processes running at once (default 1024).
	MaxProcs int
	// Heartbeat is the heartbeat interval (default 1s).
	Heartbeat time.Duration
	// LogMaxBytes caps each service's output log; past it the file is
	// rotated once to <name>.1 (default 10 MiB).
	LogMaxBytes int64
	// ShutdownTimeout bounds how long Run waits, after its processes have
	// stopped, for the spool to reach the log (default 10s); what is left
	// is sent by the next start.
	ShutdownTimeout time.Duration
	// Version is reported in heartbeats, ping and the micro service (a
	// semantic version; default 0.0.0-dev).
	Version string
	// Logger receives the agent's own log (default: discard).
	Logger *slog.Logger
	// SickAfter bounds how long the agent goes on when it cannot record
	// events (its spool cannot be written, or the log refuses them while
	// it is connected): past it, it withholds heartbeats and refuses runs,
	// so that its host manager declares the guest lost (default 30s).
	SickAfter time.Duration
}

// Agent runs and watches processes inside one guest on request, and reports
// their starts and exits to the event log. Create it with New, then call Run.
type Agent struct {
	cfg     Config
	log     *slog.Logger
	source  string
	baseEnv []string
	bootID  string
	pool    sync.Pool

	// Set by Run.
	journal *journal
	devnull *os.File
	started time.Time
	wg      sync.WaitGroup // process watchers and request goroutines
	strays  strayKiller    // kills what escaped an ended process's group

	mu       sync.Mutex
	svcMu    sync.Mutex       // guards svc
	svc      micro.Service    // the micro service while serving
	svcDone  bool             // stopped for good (shutdown)
	procs    map[string]*proc // by request id: live ones and remembered exits
	services map[svcKey]*proc // the live process of each service
	exited   []string         // request ids of remembered exits, oldest first
	running  int
	closing  bool
	fence    fence
	health   health
	// epochs holds, per package, the highest placement epoch the agent
	// was placed under (place.go); guarded by mu.
	epochs map[string]uint64
	// placeMu serializes placement checks; placeLog is the log they read
	// (opened on first use), guarded by placeMu.
	placeMu  sync.Mutex
	placeLog *events.Log

	// onDelivered, if set before Run, is called after the log acknowledged
	// each spooled event (benchmarks measure with it).
	onDelivered func(kind string, eventTime time.Time)
	// syncSpool, if set before Run, stands in for the spool's fdatasync
	// (tests hold an exit's sync).
	syncSpool func(fd int) error
}

// New checks cfg and returns an agent ready to Run.
func New(cfg Config) (*Agent, error) {
	if err := events.CheckName("guest", cfg.Guest); err != nil {
		return nil, fmt.Errorf("new agent: %w", err)
	}
	if cfg.Node != "" {
		if err := events.CheckName("node", cfg.Node); err != nil {
			return nil, fmt.Errorf("new agent: %w", err)
		}
	}
	if cfg.Conn == nil {
		return nil, errors.New("new agent: NATS connection: missing")
	}
	if cfg.StateDir == "" {
		return nil, errors.New("new agent: state dir: missing")
	}
	if cfg.MaxProcs < 0 || cfg.Heartbeat < 0 || cfg.LogMaxBytes < 0 || cfg.ShutdownTimeout < 0 || cfg.SickAfter < 0 {
		return nil, errors.New("new agent: max procs, heartbeat, log max bytes, shutdown timeout and sick after must not be negative")
	}
	if cfg.SickAfter == 0 {
		cfg.SickAfter = DefaultSickAfter
	}
	if cfg.MaxProcs == 0 {
		cfg.MaxProcs = DefaultMaxProcs
	}
	if cfg.Heartbeat == 0 {
		cfg.Heartbeat = DefaultHeartbeat
	}
	if cfg.LogMaxBytes == 0 {
		cfg.LogMaxBytes = DefaultLogMaxBytes
	}
	if cfg.ShutdownTimeout == 0 {
		cfg.ShutdownTimeout = DefaultShutdownTimeout
	}
	if cfg.Version == "" {
		cfg.Version = "0.0.0-dev"
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	a := &Agent{
		cfg:      cfg,
		log:      cfg.Logger.With("guest", cfg.Guest),
		source:   Source(cfg.Guest),
		bootID:   readBootID(),
		procs:    make(map[string]*proc),
		services: make(map[svcKey]*proc),
		fence:    fence{node: cfg.Node, kick: make(chan struct{}, 1), held: make(chan struct{}, 1)},
		epochs:   make(map[string]uint64),
	}
	if a.fencing() {
		a.fence.state = LeaseWaiting
	}
	a.baseEnv = MinimalEnv(os.Environ())
	a.pool.New = func() any { b := make([]byte, readBufSize); return &b }
	return a, nil
}

// MinimalEnv is the part of the agent's environment environ that its
// services inherit: PATH, HOME, USER, LOGNAME, SHELL, LANG, LANGUAGE, LC_*,
// TZ, TMPDIR and TERM, nothing else. The agent's own environment may hold
// NATS_URL with a password, credentials paths or whatever started it had;
// a service gets only this, the env its config gives and VMGUARD_*. PATH
// defaults to /usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin.
func MinimalEnv(environ []string) []string {
	var env []string
	hasPath := false
	for _, kv := range environ {
		name, _, _ := strings.Cut(kv, "=")
		switch name {
		case "PATH":
			hasPath = true
		case "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "TZ", "TMPDIR", "TERM":
		default:
			if !strings.HasPrefix(name, "LC_") {
				continue
			}
		}
		env = append(env, kv)
	}
	if !hasPath {
		env = append(env, "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
	}
	return env
}

// Run serves requests until ctx ends, then stops every process (reason
// agent_stopped), waits for their exits to reach the spool and, for at most
// ShutdownTimeout, the log. It returns an error only if the agent could not
// start: its state dir is locked or unreadable, or the service could not be
// registered.
func (a *Agent) Run(ctx context.Context) error {
	unlock, err := lockState(a.cfg.StateDir)
	if err != nil {
		return err
	}
	defer unlock()
	checkNoFile(a.cfg.MaxProcs, a.log)
	a.devnull, err = os.Open(os.DevNull)
	if err != nil {
		return fmt.Errorf("open %s: %w", os.DevNull, err)
	}
	defer a.devnull.Close()
	j, recs, err := openJournal(filepath.Join(a.cfg.StateDir, "spool"))
	if err != nil {
		return err
	}
	a.journal = j
	if a.syncSpool != nil {
		j.datasync = a.syncSpool
	}
	defer j.close()
	if j.badLines > 0 {
		a.log.Warn("skipped corrupt spool records", "records", j.badLines)
	}
	a.started = time.Now()
	if err := a.restore(recs); err != nil {
		return err
	}

	dctx, stopDelivery := context.WithCancel(context.WithoutCancel(ctx))
	delivered := make(chan struct{})
	go func() {
		defer close(delivered)
		a.deliver(dctx)
	}()
	defer func() {
		stopDelivery()
		<-delivered
	}()

	if err := a.setServing(true); err != nil {
		return err
	}
	a.log.Info("agent running", "subjects", Subject(a.cfg.Guest, "*"), "max_procs", a.cfg.MaxProcs)
	stopFencing := a.startFencing(ctx)

	a.heartbeats(ctx)
	stopFencing()

	a.stopServing()
	a.shutdown()
	a.flush(a.cfg.ShutdownTimeout)
	return nil
}

// lockState takes an exclusive lock on <dir>/agent.lock.
func lockState(dir string) (func(), error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create state dir: %w", err)
	}
	f, err := os.OpenFile(filepath.Join(dir, "agent.lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open state lock: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock state dir %s: another agent uses it (%w)", dir, err)
	}
	return func() {
		_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
	}, nil
}

// checkNoFile makes sure the open-file limit fits maxProcs processes (each
// holds an output pipe, a pidfd and, while it writes, a log file). Go raises
// the soft limit to the hard one at start and children get the original
// back; only if that is still short is the limit raised here.
func checkNoFile(maxProcs int, log *slog.Logger) {
	need := uint64(maxProcs)*3 + 256
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return
	}
	if lim.Cur >= need {
		return
	}
	if lim.Cur < lim.Max {
		lim.Cur = lim.Max
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
	}
	if lim.Cur < need {
		log.Warn("open-file limit too low for --max-procs; raise it (ulimit -Hn) or lower --max-procs",
			"limit", lim.Cur, "need", need, "max_procs", maxProcs)
	}
}

// restore rebuilds the remembered requests from the spool and reports, as
// exited with reason agent_restart, every process the previous agent
// started and never saw exit, after killing what is left of it.
func (a *Agent) restore(recs []record) error {
	starts := make(map[string]record)
	var order []string
	for _, r := range recs {
		id := r.requestID()
		switch r.Kind {
		case recStarted:
			if _, ok := starts[id]; !ok {
				order = append(order, id)
			}
			starts[id] = r
		case recExited:
			p := a.remembered(starts[id], r)
			a.procs[id] = p
			a.exited = append(a.exited, id)
			delete(starts, id)
		}
	}
	var stale []leftover
	var exits []record
	now := time.Now()
	for _, id := range order {
		s, ok := starts[id]
		if !ok {
			continue
		}
		stamp := procStamp{}
		if s.Proc != nil {
			stamp = *s.Proc
		}
		stale = append(stale, leftover{pid: s.Started.PID, marker: s.ID, stamp: stamp})
		runtime := max(now.Sub(s.Time), 0)
		exits = append(exits, record{
			Kind: recExited, ID: events.NewID(), Source: s.Source, Subject: s.Subject, Time: now.UTC(), Cause: s.Cause,
			Exited: &events.ProcessExited{
				Guest: s.Started.Guest, Service: s.Started.Service, PID: s.Started.PID, ExitCode: -1,
				RuntimeMS: runtime.Milliseconds(), RequestID: id, Epoch: s.Started.Epoch, Reason: ReasonAgentRestart,
			},
		})
	}
	if n := reclaimLeftovers(stale, a.bootID); n > 0 {
		a.log.Warn("killed leftovers of processes the previous agent started", "processes", n)
	}
	if len(exits) > 0 {
		if err := a.journal.append(exits...); err != nil {
			return fmt.Errorf("restore: %w", err)
		}
		for _, r := range exits {
			id := r.requestID()
			a.procs[id] = a.remembered(starts[id], r)
			a.exited = append(a.exited, id)
		}
		a.log.Info("reported processes of the previous agent as exited", "reason", ReasonAgentRestart, "processes", len(exits))
	}
	a.evictLocked()
	return nil
}

// remembered builds an exited proc from its spool records (start may be
// missing when the journal was compacted).
func (a *Agent) remembered(start, exit record) *proc {
	x := exit.Exited
	p := &proc{
		req:       RunRequest{Package: exit.Subject, Service: x.Service, RequestID: x.RequestID, Epoch: x.Epoch},
		cause:     exit.Cause,
		startedID: start.ID,
		ready:     make(chan struct{}),
		done:      make(chan struct{}),
		pid:       x.PID,
		state:     StateExited,
		reaped:    true,
		started:   exit.Time.Add(-time.Duration(x.RuntimeMS) * time.Millisecond),
		exit: &ExitInfo{ExitCode: x.ExitCode, Signal: x.Signal, Reason: x.Reason, RuntimeMS: x.RuntimeMS,
			At: exit.Time, Output: x.Output, EventID: exit.ID},
	}
	if start.Proc != nil {
		p.req.Argv = start.Proc.Argv
		p.started = start.Time
	}
	close(p.ready)
	close(p.done)
	return p
}

// evictLocked forgets the oldest exits beyond rememberExited.
func (a *Agent) evictLocked() {
	for len(a.exited) > rememberExited {
		id := a.exited[0]
		a.exited = a.exited[1:]
		if p := a.procs[id]; p != nil && p.state == StateExited {
			delete(a.procs, id)
		}
	}
}

// serve registers the micro service and its endpoints.
// setServing starts or stops the micro service. A fenced agent stops
// serving: after its node was lost, the package's guest may run again on
// another node under the same guest name, and requests on the shared
// subjects must reach that one only. It serves again once its lease is
// renewed.
func (a *Agent) setServing(on bool) error {
	a.svcMu.Lock()
	defer a.svcMu.Unlock()
	return a.setServingLocked(on)
}

// stopServing stops the micro service for good, at shutdown.
func (a *Agent) stopServing() {
	a.svcMu.Lock()
	defer a.svcMu.Unlock()
	a.svcDone = true
	if a.svc != nil {
		if err := a.svc.Stop(); err != nil {
			a.log.Debug("stop micro service", "err", err)
		}
		a.svc = nil
	}
}

// setServingLocked is setServing with svcMu held.
func (a *Agent) setServingLocked(on bool) error {
	if a.svcDone || on == (a.svc != nil) {
		return nil
	}
	if !on {
		if !a.cfg.Conn.IsConnected() {
			// A drain started while NATS is away never finishes, and would
			// leave a subscription that answers nothing. Stop once it is back.
			time.AfterFunc(250*time.Millisecond, a.syncServing)
			return nil
		}
		if err := a.svc.Stop(); err != nil {
			// Draining needs the connection: while NATS is away, try again
			// until it is back (the agent still refuses runs meanwhile).
			a.log.Debug("stop micro service; will retry", "err", err)
			time.AfterFunc(250*time.Millisecond, a.syncServing)
			return nil
		}
		a.svc = nil
		return nil
	}
	svc, err := a.serve()
	if err != nil {
		return err
	}
	a.svc = svc
	return nil
}

func (a *Agent) serve() (micro.Service, error) {
	md := map[string]string{"guest": a.cfg.Guest}
	if node := a.leaseNode(); node != "" {
		md["node"] = node
	}
	svc, err := micro.AddService(a.cfg.Conn, micro.Config{
		Name:        ServiceName,
		Version:     a.cfg.Version,
		Description: "vmguard guest agent: runs, watches and reports processes in guest " + a.cfg.Guest,
		Metadata:    md,
		ErrorHandler: func(_ micro.Service, e *micro.NATSError) {
			a.log.Warn("micro service error", "subject", e.Subject, "err", e.Description)
		},
	})
	if err != nil {
		return nil, fmt.Errorf("add micro service %s: %w", ServiceName, err)
	}
	g := svc.AddGroup("vmguard.agent." + a.cfg.Guest)
	for _, ep := range []struct {
		name string
		h    micro.HandlerFunc
		desc string
	}{
		{EndpointRun, a.handleRun, "start a process (RunRequest -> RunReply)"},
		{EndpointStop, a.handleStop, "stop processes, SIGTERM then SIGKILL (StopRequest -> StopReply)"},
		{EndpointList, a.handleList, "list processes (ListRequest -> ListReply)"},
		{EndpointPing, a.handlePing, "liveness and counts (-> PingReply)"},
		{EndpointPlace, a.handlePlace, "follow the node a confirmed placement names (PlaceRequest -> PlaceReply)"},
	} {
		if err := g.AddEndpoint(ep.name, ep.h, micro.WithEndpointMetadata(map[string]string{"description": ep.desc})); err != nil {
			_ = svc.Stop()
			return nil, fmt.Errorf("add endpoint %s: %w", ep.name, err)
		}
	}
	return svc, nil
}

// heartbeats publishes a heartbeat every interval until ctx ends. It skips
// beats while disconnected, so that no stale beat is flushed on reconnect.
func (a *Agent) heartbeats(ctx context.Context) {
	subj := HeartbeatSubject(a.cfg.Guest)
	beat := func() {
		if !a.cfg.Conn.IsConnected() {
			return
		}
		a.mu.Lock()
		if a.fence.state == LeaseWaiting {
			a.mu.Unlock()
			return // not ready for runs yet: see fence.held
		}
		if why, sick := a.sickLocked(time.Now()); sick {
			logged := a.health.logged
			a.health.logged = true
			a.mu.Unlock()
			if !logged {
				a.log.Error("agent cannot record events; withholding heartbeats so that the host manager declares the guest lost", "why", why)
			}
			return
		}
		if a.health.logged {
			a.health.logged = false
			a.log.Info("agent records events again; heartbeats resume")
		}
		hb := Heartbeat{Guest: a.cfg.Guest, Running: a.running, Version: a.cfg.Version, Time: time.Now().UTC(), Node: a.fence.node}
		a.mu.Unlock()
		if err := a.cfg.Conn.Publish(subj, mustJSON(hb)); err != nil {
			a.log.Debug("publish heartbeat", "err", err)
		}
	}
	beat()
	t := time.NewTicker(a.cfg.Heartbeat)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			beat()
		case <-a.fence.held:
			beat()
		}
	}
}

// run starts the process of req, or returns the one a former request with
// the same id started.
//
// Longer than 80 lines: one retry loop under the agent's lock (an earlier
// request with the same id, a slot, the exec); the lock's hand-offs read
// best in one place.
func (a *Agent) run(req RunRequest) (RunReply, error) {
	if req.Node != "" {
		if _, err := a.place(PlaceRequest{Package: req.Package, Node: req.Node, Epoch: req.Epoch}); err != nil {
			return RunReply{}, err
		}
	}
	key := svcKey{req.Package, req.Service}
	for {
		a.mu.Lock()
		if a.closing {
			a.mu.Unlock()
			return RunReply{}, &RemoteError{CodeUnavailable, "agent is shutting down; retry on the next agent"}
		}
		if err := a.sickRefusalLocked(); err != nil {
			// Before any wait below: an exit that cannot be spooled would
			// hold each retried request here.
			a.mu.Unlock()
			return RunReply{}, err
		}
		if p := a.procs[req.RequestID]; p != nil {
			if p.req.Package != req.Package || p.req.Service != req.Service {
				a.mu.Unlock()
				return RunReply{}, &RemoteError{CodeConflict, fmt.Sprintf("request id %q was already used for %s/%s", req.RequestID, p.req.Package, p.req.Service)}
			}
			a.mu.Unlock()
			<-p.ready
			if p.startErr != nil {
				return RunReply{}, p.startErr
			}
			a.mu.Lock()
			info := a.infoLocked(p)
			a.mu.Unlock()
			return RunReply{Process: info, Duplicate: true}, nil
		}
		q := a.services[key]
		if q == nil {
			break // keep mu
		}
		if q.exiting {
			// Its exit is being written to the spool (and may already be
			// in the log, which is why a restart came): wait until it is
			// (release), not for its fdatasync.
			a.mu.Unlock()
			<-q.freed
			continue
		}
		info := a.infoLocked(q)
		a.mu.Unlock()
		return RunReply{}, &RemoteError{CodeConflict, fmt.Sprintf("service %s/%s already runs (request id %q, pid %d); stop it first",
			req.Package, req.Service, info.RequestID, info.PID)}
	}
	if err := a.refusalLocked(); err != nil {
		a.mu.Unlock()
		return RunReply{}, err
	}
	if a.running >= a.cfg.MaxProcs {
		a.mu.Unlock()
		return RunReply{}, &RemoteError{CodeUnavailable, fmt.Sprintf("at capacity: %d processes run (max procs %d); stop one or raise --max-procs",
			a.running, a.cfg.MaxProcs)}
	}
	p := &proc{
		req:         req,
		cause:       causeOf(req),
		haltTimeout: haltTimeout(req.HaltTimeout.D(), DefaultHaltTimeout),
		ready:       make(chan struct{}),
		done:        make(chan struct{}),
		freed:       make(chan struct{}),
		state:       StateStarting,
	}
	a.procs[req.RequestID] = p
	a.services[key] = p
	a.running++
	a.mu.Unlock()

	err := a.start(p)

	a.mu.Lock()
	if err != nil {
		delete(a.procs, req.RequestID)
		delete(a.services, key)
		a.running--
		p.startErr = err
		close(p.ready)
		a.mu.Unlock()
		return RunReply{}, err
	}
	p.state = StateRunning
	p.req.Env = nil
	close(p.ready)
	info := a.infoLocked(p)
	a.mu.Unlock()
	out := p.out
	a.wg.Add(2)
	go func() { defer a.wg.Done(); out.run() }()
	go func() { defer a.wg.Done(); a.watch(p) }()
	return RunReply{Process: info}, nil
}

// start forks the process and spools its process.started event. If the
// spool cannot be written the process is killed: nothing started.
func (a *Agent) start(p *proc) error {
	req := p.req
	p.startedID = events.NewID()
	env := a.env(req, p.startedID)
	logPath := filepath.Join(a.cfg.StateDir, "logs", req.Package, req.Service+".log")
	pid, pidfd, out, err := spawn(req, spawnSpec{
		env:   env,
		stdin: a.devnull.Fd(),
		pool:  &a.pool,
		log:   &serviceLog{path: logPath, max: a.cfg.LogMaxBytes},
	})
	if err != nil {
		return &RemoteError{CodeStart, fmt.Sprintf("start %s/%s: %v", req.Package, req.Service, err)}
	}
	now := time.Now()
	p.pid, p.pidfd, p.out, p.started = pid, pidfd, out, now
	out.header = fmt.Sprintf("--- vmguard: %s pid %d request %s epoch %d started\n", now.UTC().Format(time.RFC3339Nano), pid, req.RequestID, req.Epoch)
	p.startTicks, _ = procStartTicks(pid)
	rec := record{
		Kind: recStarted, ID: p.startedID, Source: a.source, Subject: req.Package, Time: now.UTC(), Cause: p.cause,
		Started: &events.ProcessStarted{Guest: a.cfg.Guest, Service: req.Service, PID: pid, RequestID: req.RequestID, Epoch: req.Epoch},
		Proc:    &procStamp{Argv: req.Argv, StartTicks: p.startTicks, BootID: a.bootID, HaltTimeoutMS: p.haltTimeout.Milliseconds()},
	}
	err = a.journal.append(rec)
	if err == nil {
		// A failed start is answered (the host manager retries, then
		// fails the service); only a write that works clears a sickness.
		a.noteSpool(nil)
	}
	if err != nil {
		a.mu.Lock()
		p.signal(syscall.SIGKILL)
		p.reap()
		a.mu.Unlock()
		if p.pidfd != nil {
			p.pidfd.Close()
		}
		out.f.Close()
		return &RemoteError{CodeInternal, fmt.Sprintf("start %s/%s: %v (process killed)", req.Package, req.Service, err)}
	}
	return nil
}

// env is the process environment: the minimum of the agent's own
// (MinimalEnv), the request's, then vmguard's variables.
func (a *Agent) env(req RunRequest, marker string) []string {
	env := make([]string, 0, len(a.baseEnv)+len(req.Env)+6)
	env = append(env, a.baseEnv...)
	keys := make([]string, 0, len(req.Env))
	for k := range req.Env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		env = append(env, k+"="+req.Env[k])
	}
	return append(env,
		"VMGUARD_GUEST="+a.cfg.Guest,
		"VMGUARD_PACKAGE="+req.Package,
		"VMGUARD_SERVICE="+req.Service,
		"VMGUARD_REQUEST_ID="+req.RequestID,
		"VMGUARD_EPOCH="+strconv.FormatUint(req.Epoch, 10),
		markerEnv+"="+marker,
	)
}

// watch waits for the process to exit, kills what is left of its group,
// reaps it and spools its process.exited event.
func (a *Agent) watch(p *proc) {
	info, err := p.waitExited()
	at := time.Now()
	if err != nil {
		a.log.Error("wait for process", "pid", p.pid, "err", err)
	}
	a.mu.Lock()
	// Whatever is left of the group goes with its leader, so a restart
	// never runs next to leftovers. The leader is not reaped yet, so the
	// group id is still ours.
	p.signal(syscall.SIGKILL)
	p.reap()
	a.strays.kill(p.startedID) // descendants that left the group
	p.exiting = true
	if p.killTimer != nil {
		p.killTimer.Stop()
	}
	reason := p.stopReason
	a.mu.Unlock()
	if p.pidfd != nil {
		p.pidfd.Close()
	}
	code, sig := info.outcome()
	if err != nil {
		code, sig = -1, ""
	}
	runtime := at.Sub(p.started)
	output := p.out.finish(fmt.Sprintf("--- vmguard: %s pid %d exited: %s after %s\n",
		at.UTC().Format(time.RFC3339Nano), p.pid, describeExit(code, sig, reason), runtime.Round(time.Millisecond)))
	x := &events.ProcessExited{
		Guest: a.cfg.Guest, Service: p.req.Service, PID: p.pid, ExitCode: code, Signal: sig,
		RuntimeMS: runtime.Milliseconds(), RequestID: p.req.RequestID, Epoch: p.req.Epoch, Reason: reason, Output: output,
	}
	rec := record{Kind: recExited, ID: events.NewID(), Source: a.source, Subject: p.req.Package, Time: at.UTC(), Cause: p.cause, Exited: x}
	release := func() { a.release(p) }
	for wait := 10 * time.Millisecond; ; wait = min(2*wait, time.Second) {
		err := a.journal.appendWritten(release, rec)
		a.noteSpool(err)
		if err == nil {
			break
		}
		// Without the spool the exit would be lost: keep trying, backing
		// off. Past Config.SickAfter the agent withholds its heartbeats,
		// so the host manager declares the guest lost and forces it off,
		// which ends this too.
		a.log.Error("spool process exit; retrying", "request_id", p.req.RequestID, "retry_in", wait, "err", err)
		time.Sleep(wait)
	}
	p.out = nil // its tail is copied; let it go
	a.mu.Lock()
	p.state = StateExited
	p.exit = &ExitInfo{ExitCode: code, Signal: sig, Reason: reason, RuntimeMS: x.RuntimeMS, At: at.UTC(), Output: output, EventID: rec.ID}
	a.exited = append(a.exited, p.req.RequestID)
	a.evictLocked()
	a.mu.Unlock()
	close(p.done)
}

// release frees p's service for its next run once p's exit is written to
// the spool and queued for delivery, before the exit's fdatasync: a restart
// is asked for once the exit is in the log, and waiting for the sync put
// it on the restart's path (0.3-2 ms here, more under I/O load; issue 12
// item 5). The spool keeps the order anyway: the next start is written
// after the exit, and the exit's sync, or the next one, covers both.
// Called once (appendWritten), on whichever goroutine wrote the exit.
func (a *Agent) release(p *proc) {
	a.mu.Lock()
	defer a.mu.Unlock()
	key := svcKey{p.req.Package, p.req.Service}
	if a.services[key] == p {
		delete(a.services, key)
	}
	a.running--
	close(p.freed)
}

func describeExit(code int, sig, reason string) string {
	s := "exit code " + strconv.Itoa(code)
	if sig != "" {
		s = "signal " + sig
	}
	if reason != "" {
		s += " (" + reason + ")"
	}
	return s
}

// stopProc begins stopping p: SIGTERM to its group now, SIGKILL after halt.
// A process already stopping or exited is left alone.
func (a *Agent) stopProc(p *proc, reason string, halt time.Duration) {
	<-p.ready
	if p.startErr != nil {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if p.state != StateRunning || p.reaped {
		return
	}
	p.state = StateStopping
	p.stopReason = reason
	p.signal(syscall.SIGTERM)
	p.killTimer = time.AfterFunc(halt, func() {
		a.mu.Lock()
		defer a.mu.Unlock()
		if !p.reaped {
			p.signal(syscall.SIGKILL)
		}
	})
}

// shutdown refuses new runs, stops every process with reason
// agent_stopped and waits until their exits are spooled.
func (a *Agent) shutdown() {
	a.mu.Lock()
	a.closing = true
	var live []*proc
	for _, p := range a.services {
		live = append(live, p)
	}
	a.mu.Unlock()
	if len(live) > 0 {
		a.log.Info("stopping processes", "processes", len(live))
	}
	for _, p := range live {
		a.stopProc(p, ReasonAgentStopped, p.haltTimeout)
	}
	a.wg.Wait()
}

// flush waits up to timeout for the spool to reach the log.
func (a *Agent) flush(timeout time.Duration) {
	deadline := time.Now().Add(timeout)
	for a.journal.pending() > 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if n := a.journal.pending(); n > 0 {
		a.log.Warn("events left in the spool for the next start", "events", n)
	}
}

// infoLocked describes p; the caller holds mu.
func (a *Agent) infoLocked(p *proc) ProcessInfo {
	info := ProcessInfo{
		RequestID: p.req.RequestID, Package: p.req.Package, Service: p.req.Service, Argv: p.req.Argv,
		Epoch: p.req.Epoch, State: p.state,
	}
	if p.state == StateStarting {
		// start is still writing the rest, outside mu.
		return info
	}
	info.PID, info.StartedAt, info.StartedEventID = p.pid, p.started.UTC(), p.startedID
	if p.exit != nil {
		x := *p.exit
		info.Exit = &x
	}
	return info
}

// causeOf is the causeid of a run's events: CauseID, else the request id
// without a trailing "/<service>".
func causeOf(req RunRequest) string {
	if req.CauseID != "" {
		return req.CauseID
	}
	if c, ok := strings.CutSuffix(req.RequestID, "/"+req.Service); ok && c != "" {
		return c
	}
	return req.RequestID
}

func haltTimeout(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}
