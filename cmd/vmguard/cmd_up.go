package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/vmguard/vmguard/config"
	"github.com/vmguard/vmguard/events"
	"github.com/vmguard/vmguard/examples"
	"github.com/vmguard/vmguard/failover"
	"github.com/vmguard/vmguard/hostmanager"
	"github.com/vmguard/vmguard/internal/dirlock"
	"github.com/vmguard/vmguard/internal/guestgate"
	"github.com/vmguard/vmguard/internal/metrics"
	"github.com/vmguard/vmguard/internal/natsd"
	"github.com/vmguard/vmguard/internal/termtext"
	"github.com/vmguard/vmguard/internal/webui"
)

type upCmd struct {
	File     string `name:"file" short:"f" placeholder:"cluster.yaml" help:"Cluster configuration to apply (default: the one in force in the store's log, so a restart never reverts what vmguard apply recorded; on a new store the built-in demo, examples/demo.yaml)."`
	Store    string `name:"store" default:".vmguard" help:"Directory for the event log and the nodes' local files; a second run resumes from it."`
	Host     string `name:"host" default:"127.0.0.1" help:"Address the embedded NATS server listens on."`
	Port     int    `name:"port" default:"4222" help:"Client port of the embedded NATS server."`
	Interval bool   `name:"sync-interval" help:"Faster, less safe log writes (see vmguard server --help)."`
	Quiet    bool   `name:"quiet" short:"q" help:"No live view; just run."`
	Verbose  bool   `name:"verbose" help:"Log what the daemons do to stderr."`
	UI       string `name:"ui" default:"127.0.0.1:4280" placeholder:"ADDR" help:"Address of the web listener: the console and Prometheus metrics (/metrics); off: none. If the default is taken, up runs without it and says so."`
	Secure   bool   `name:"secure" help:"Run with authorization: on the first start up writes a set-up into <store>/secure (as vmguard init does, without TLS: loopback only), an nkey identity per role, and connects the controller, each node's host manager and each guest's agent (in its own account) as themselves. Operators use <store>/secure/operator-admin or operator-readonly (docs/security.md)."`
}

// Run starts an embedded server, records the configuration, and runs the
// failover controller and a host manager per node (process-driver guests)
// in this process, with a live view, until Ctrl-C; then it halts the
// packages cleanly. Each step's clean-up is registered on an upRun, which
// runs them in reverse order when Run returns.
func (c *upCmd) Run(ctx context.Context, g *globals) error {
	var fileCl *config.Cluster
	if c.File != "" {
		// Checked before anything starts: a bad file changes nothing.
		cl, err := loadConfigFile(g, c.File)
		if err != nil {
			return err
		}
		fileCl = cl
	}
	// One owner per store: the whole directory (log, host state, guests).
	lock, err := dirlock.Acquire(c.Store, "vmguard up")
	if err != nil {
		return fmt.Errorf("store: %w", err)
	}
	defer lock.Release()
	u := &upRun{upCmd: c, g: g}
	defer u.close()
	if err := u.startServer(ctx, fileCl); err != nil {
		return err
	}
	cl, what, err := c.config(ctx, u.l, fileCl)
	if err != nil {
		return err
	}
	banner := []string{ // what names the file and who applied it, as the log says: escaped
		termtext.Escape(fmt.Sprintf("vmguard up: NATS on %s (store %s, %s); cluster %s, %s; config %s",
			u.url, c.Store, syncMode(u.srv), cl.Cluster, configSummary(cl), what)),
		fmt.Sprintf("In another terminal: NATS_URL=%s vmguard status | events -f | explain PKG | pkg ...", u.url),
	}
	if u.sec != nil {
		banner = append(banner[:1], u.sec.banner(u.url, cl)...)
	}
	u.logger = slog.New(slog.DiscardHandler)
	if c.Verbose {
		u.logger = slog.New(slog.NewTextHandler(g.Stderr, nil))
	}
	webCtx, stopWeb := context.WithCancel(context.WithoutCancel(ctx))
	u.onClose(stopWeb)
	web, err := c.serveWeb(webCtx, u.l, u.m, u.logger)
	if err != nil {
		return err
	}
	banner = append(banner, web)
	for _, line := range banner {
		fmt.Fprintln(g.Stdout, line)
	}
	errs, stop, err := u.startParts(ctx, cl)
	if err != nil {
		return err
	}
	viewCtx, stopView := context.WithCancel(context.WithoutCancel(ctx))
	u.onClose(stopView)
	viewDone := make(chan error, 1)
	if c.Quiet {
		viewDone <- nil
	} else {
		go func() { viewDone <- newLiveView(g.Stdout, banner).Run(viewCtx, u.l) }()
	}
	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-errs:
	}
	fmt.Fprintln(g.Stdout, "\nvmguard up: halting the packages and stopping (up to 30s) ...")
	stop()
	stopView()
	<-viewDone
	fmt.Fprintf(g.Stdout, "vmguard up: stopped; run it again to resume from %s\n", c.Store)
	return runErr
}

// upRun is one run of vmguard up: what its steps share, and their
// clean-ups.
type upRun struct {
	*upCmd
	g      *globals
	undo   []func() // clean-ups, run by close in reverse order
	sec    *upSecure
	srv    *server.Server
	url    string
	nc     *nats.Conn // up's own
	m      *metrics.Metrics
	l      *events.Log // on nc
	logger *slog.Logger
}

// onClose registers f to run when the run closes, before the clean-ups
// registered earlier.
func (u *upRun) onClose(f func()) { u.undo = append(u.undo, f) }

// close runs the clean-ups, the last registered first.
func (u *upRun) close() {
	for i := len(u.undo) - 1; i >= 0; i-- {
		u.undo[i]()
	}
}

// startServer starts the embedded server (with the secure set-up if asked
// for or if the store has one), connects up's own connection and opens the
// log, observed by the metrics.
func (u *upRun) startServer(ctx context.Context, fileCl *config.Cluster) error {
	if !u.Secure {
		// A store with a secure set-up keeps its log in the set-up's
		// account: without it up would find an empty log there.
		if _, err := os.Stat(filepath.Join(u.Store, upSecureDir, "nats.conf")); err == nil {
			fmt.Fprintf(u.g.Stdout, "vmguard up: store %s has a secure set-up (%s): running with it (--secure)\n", u.Store, filepath.Join(u.Store, upSecureDir))
			u.Secure = true
		}
	}
	if u.Secure {
		sec, err := u.secureSetup(fileCl, u.g.Stdout)
		if err != nil {
			return err
		}
		u.sec = sec
		u.onClose(sec.close)
	}
	ncfg := natsd.Config{StoreDir: filepath.Join(u.Store, "nats"), Host: u.Host, Port: u.Port, Interval: u.Interval}
	if u.sec != nil {
		ncfg.ConfigFile = filepath.Join(u.sec.dir, "nats.conf")
	}
	srv, err := natsd.Start(ncfg)
	if err != nil {
		return fmt.Errorf("%w (is another vmguard up or server on port %d? use --port)", err, u.Port)
	}
	u.srv, u.url = srv, srv.ClientURL()
	u.onClose(func() {
		srv.Shutdown()
		srv.WaitForShutdown()
	})
	// up's own connection (the configuration, the view, the console, the
	// metrics): in process with --secure, as the set-up's no_auth_user,
	// which no network client can use.
	connOpts := []nats.Option{nats.Name("vmguard up"), nats.MaxReconnects(-1)}
	if u.sec != nil {
		connOpts = append(connOpts, nats.InProcessServer(srv))
	}
	if u.nc, err = nats.Connect(u.url, connOpts...); err != nil {
		return fmt.Errorf("connect to embedded server: %w", err)
	}
	u.onClose(u.nc.Close)
	u.m = metrics.New()
	if u.l, err = events.Open(ctx, u.nc, events.WithObserver(u.m)); err != nil {
		return err
	}
	u.m.WatchLog(u.l)
	return nil
}

// startParts starts the guests' gate (with --secure), a host manager per
// node and the failover controller. Their first error other than their
// end comes on errs; stop ends them and waits until they have.
func (u *upRun) startParts(ctx context.Context, cl *config.Cluster) (errs <-chan error, stop func(), err error) {
	bin, err := os.Executable()
	if err != nil {
		return nil, nil, fmt.Errorf("find the vmguard binary for the guests: %w", err)
	}
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	u.onClose(cancel)
	var wg sync.WaitGroup
	errc := make(chan error, len(cl.Nodes)+2)
	run := func(what string, f func(context.Context) error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f(runCtx); err != nil && !errors.Is(err, context.Canceled) {
				errc <- fmt.Errorf("%s: %w", what, err)
			}
		}()
	}
	if u.sec != nil {
		if err := u.startGate(ctx); err != nil {
			return nil, nil, err
		}
	}
	fl, err := u.logAs(ctx, "controller", "vmguard up failover")
	if err != nil {
		return nil, nil, err
	}
	fo, err := failover.NewRunner(failover.Config{Log: fl, Logger: u.logger.With("component", "failover"), ID: "up"})
	if err != nil {
		return nil, nil, err
	}
	// Host managers first, so that the controller finds their nodes joined.
	for _, node := range cl.Nodes {
		hm, err := u.hostManager(ctx, node, bin)
		if err != nil {
			return nil, nil, err
		}
		run("host "+node, hm.Run)
	}
	run("failover", fo.Run)
	watchFailover(u.m, u.l, fo)
	return errc, func() { cancel(); wg.Wait() }, nil
}

// startGate starts the gate through which alone the guests' events reach
// the log (as with vmguard server).
func (u *upRun) startGate(ctx context.Context) error {
	gate, err := guestgate.New(guestgate.Config{Conn: u.nc, Logger: u.logger.With("component", "gate")})
	if err != nil {
		return err
	}
	gctx, stopGate := context.WithCancel(context.WithoutCancel(ctx))
	gateDone := make(chan error, 1)
	go func() { gateDone <- gate.Run(gctx) }()
	u.onClose(func() { stopGate(); <-gateDone })
	return nil
}

// logAs is the log of one component: up's own without --secure, else on a
// connection as the identity id.
func (u *upRun) logAs(ctx context.Context, id, name string) (*events.Log, error) {
	if u.sec == nil {
		return u.l, nil
	}
	cnc, err := u.sec.connect(ctx, u.url, id, name)
	if err != nil {
		return nil, err
	}
	return events.Open(ctx, cnc, events.WithObserver(u.m))
}

// hostManager returns node's host manager, its state directory locked
// until the run closes.
func (u *upRun) hostManager(ctx context.Context, node, bin string) (*hostmanager.Runner, error) {
	state := filepath.Join(u.Store, "host", node)
	hl, err := dirlock.Acquire(state, "vmguard up, host manager of "+node)
	if err != nil {
		return nil, fmt.Errorf("state of node %s: %w", node, err)
	}
	u.onClose(hl.Release)
	hcfg := hostmanager.Config{
		Node: node, Logger: u.logger.With("node", node),
		StateDir: state, AgentBin: bin, NATSURL: u.url,
		HaltOnExit: true, ShutdownTimeout: 30 * time.Second, Version: version, Metrics: u.m.Node(node),
	}
	if hcfg.Log, err = u.logAs(ctx, "host-"+node, "vmguard up host "+node); err != nil {
		return nil, err
	}
	if u.sec != nil {
		// The lease on a connection of its own, as vmguard host has it.
		if hcfg.LeaseConn, err = u.sec.connect(ctx, u.url, "host-"+node, "vmguard up host "+node+" lease"); err != nil {
			return nil, err
		}
		hcfg.AgentGuestArgs = u.sec.guestArgs
	}
	return hostmanager.NewRunner(hcfg)
}

// config puts the configuration to run in force and says which it is: the
// file given (applied unless it is the one in force), else the one the log
// has in force (a restart resumes with what `vmguard apply` recorded, never
// silently reverting it), else, on an empty log, the built-in demo.
func (c *upCmd) config(ctx context.Context, l *events.Log, fileCl *config.Cluster) (*config.Cluster, string, error) {
	name := c.File
	cl := fileCl
	if cl == nil {
		e, ok, err := l.Last(ctx, configSubject)
		if err != nil {
			return nil, "", fmt.Errorf("read the configuration in force: %w", err)
		}
		if ok {
			d, _ := e.Data.(events.ConfigApplied)
			cl, err := config.FromJSON(d.Config)
			if err != nil {
				return nil, "", fmt.Errorf("the configuration in force (seq %d): %w", e.Seq, err)
			}
			from := d.File
			if from == "" {
				from = "no file"
			}
			return cl, fmt.Sprintf("in force from the log (seq %d, from %s, applied by %s; -f FILE to apply another)", e.Seq, from, d.By), nil
		}
		demo, err := config.Parse(examples.DemoName, examples.Demo)
		if err != nil {
			return nil, "", fmt.Errorf("the built-in demo config: %w", err)
		}
		cl, name = demo, examples.DemoName
	}
	res, err := applyConfig(ctx, l, cl, name, "vmguard-up", "vmguard up")
	if err != nil {
		return nil, "", err
	}
	if res.unchanged {
		return cl, fmt.Sprintf("%s unchanged (seq %d)", name, res.seq), nil
	}
	return cl, fmt.Sprintf("%s applied (seq %d)", name, res.seq), nil
}

// serveWeb starts up's web listener on --ui, the console and /metrics, and
// returns the banner line that says where it is. The default address being
// taken (another up, a test) is not an error: up runs without it and says so.
func (c *upCmd) serveWeb(ctx context.Context, l *events.Log, m *metrics.Metrics, logger *slog.Logger) (string, error) {
	if c.UI == "off" {
		return "Web console off (--ui off).", nil
	}
	con, err := webui.New(webui.Config{Log: l, Logger: logger.With("component", "ui")})
	if err != nil {
		return "", err
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", m.Handler())
	mux.Handle("/", con.Handler())
	addr, err := serveHTTP(ctx, c.UI, mux, logger)
	if err != nil {
		if c.UI == defaultUI {
			return fmt.Sprintf("Web console off: %v (--ui ADDR to choose another).", err), nil
		}
		return "", fmt.Errorf("%w: --ui: %v", errUsage, err)
	}
	go func() {
		if err := con.Run(ctx); err != nil {
			logger.Error("web console stopped following the log", "err", err)
		}
	}()
	return fmt.Sprintf("Web console (read-only): http://%s/   metrics: http://%s/metrics", addr, addr), nil
}

// defaultUI is where up serves its web listener unless told otherwise.
const defaultUI = "127.0.0.1:4280"
