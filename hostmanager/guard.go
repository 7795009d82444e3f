package hostmanager

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/vmguard/vmguard/config"
)

// The node guard (DESIGN §10, README "Fencing"): a small process of its own
// beside the host manager, `vmguard guard --node N --state DIR`, that stops
// the node's guests when the host manager stops petting it in time (dead,
// hung, or cut off from its lease), or at once when the host manager says
// it lost its lease. It only ever stops guests (through their drivers, with
// force) and, if configured, runs an escalation command (a reboot); it never
// starts anything, so it cannot make anything run twice.
//
// The host manager pets it over a unix socket in the node's state
// directory (GuardSocket): one JSON line per pet, carrying the deadline (a
// wall-clock time on this machine: the renewal's send time + the renew
// interval + guard_bound) and the guests the node runs. The host manager
// starts the guard in its own session, so it survives the host manager's
// kill -9; a later host manager finds it at the same socket and pets it on.

// GuardSocket returns the guard's socket in a node's state directory.
func GuardSocket(stateDir string) string { return filepath.Join(stateDir, "guard.sock") }

// GuardActions returns the file in a node's state directory where the guard
// records each of its actions as a JSON line (GuardAction).
func GuardActions(stateDir string) string { return filepath.Join(stateDir, "guard.actions") }

// ErrGuardRunning is returned by Guard.Run when another guard already
// answers on the socket.
var ErrGuardRunning = errors.New("a node guard already runs for this state directory")

// pet is one message from the host manager to its guard.
type pet struct {
	// Holder is the host manager instance petting.
	Holder string `json:"holder"`
	// Deadline arms the guard: it stops the guests at Deadline unless
	// petted again. Zero: only Guests changed.
	Deadline time.Time `json:"deadline,omitzero"`
	// StopWithin bounds the guard's stop of the guests (guard_stop_time).
	StopWithin time.Duration `json:"stop_within,omitempty"`
	// Guests are the guests the node runs.
	Guests []GuestRef `json:"guests"`
	// Fence: the host manager lost its lease; stop the guests now.
	Fence string `json:"fence,omitempty"`
	// Disarm: the host manager stopped cleanly with its packages halted.
	Disarm bool `json:"disarm,omitempty"`
}

// GuardAction is one stop of the guests by the guard, as recorded in
// GuardActions.
type GuardAction struct {
	// At is when the guard acted; Deadline the deadline it acted on (zero
	// when told to fence).
	At       time.Time `json:"at"`
	Deadline time.Time `json:"deadline,omitzero"`
	// Reason says why: the pet's deadline passed, or the host manager's
	// fence reason.
	Reason string `json:"reason"`
	// Guests are the guests it stopped; Failed those it could not stop
	// within the bound, with the error.
	Guests []string          `json:"guests"`
	Failed map[string]string `json:"failed,omitempty"`
	// Took is how long the stop took; Escalated whether the escalation
	// command ran.
	Took      time.Duration `json:"took"`
	Escalated bool          `json:"escalated,omitempty"`
}

// GuardConfig configures a Guard.
type GuardConfig struct {
	// Node is the node guarded.
	Node string
	// StateDir is the node's state directory (the host manager's --state):
	// the socket, the actions file and the process driver's guests live
	// there.
	StateDir string
	// Drivers are the drivers that stop guests, by config name; the
	// process driver (on <StateDir>/guests) and the exec driver are added
	// unless given.
	Drivers map[string]Driver
	// Escalate is run after the guard stopped the guests because its
	// deadline passed, or when a stop failed (e.g. systemctl reboot
	// --force). Empty: none.
	Escalate []string
	// Logger receives the guard's log (default: discard).
	Logger *slog.Logger
	// FirstPet is a pet, one JSON line as on the socket, that the guard
	// takes before any from the socket: the host manager that starts the
	// guard passes the pet it is about to send, so that the guard is armed
	// even if the host manager hangs before it connects. Empty: none.
	FirstPet string
}

// Guard is the node guard. Create it with NewGuard; Run it once.
type Guard struct {
	cfg    GuardConfig
	first  *pet
	logger *slog.Logger
}

// NewGuard checks cfg and returns a guard.
func NewGuard(cfg GuardConfig) (*Guard, error) {
	if cfg.StateDir == "" {
		return nil, errors.New("new guard: state dir: missing")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	drivers := map[string]Driver{}
	for k, d := range cfg.Drivers {
		drivers[k] = d
	}
	if _, ok := drivers[config.DriverProcess]; !ok {
		// Stop needs only the pid files; the URL is never used.
		pd, err := NewProcessDriver(ProcessDriverConfig{NATS: "nats://unused", Dir: filepath.Join(cfg.StateDir, "guests"), Bin: "vmguard"})
		if err != nil {
			return nil, fmt.Errorf("new guard: %w", err)
		}
		drivers[config.DriverProcess] = pd
	}
	if _, ok := drivers[config.DriverExec]; !ok {
		drivers[config.DriverExec] = ExecDriver{}
	}
	cfg.Drivers = drivers
	g := &Guard{cfg: cfg, logger: cfg.Logger.With("node", cfg.Node, "role", "guard")}
	if cfg.FirstPet != "" {
		var p pet
		if err := json.Unmarshal([]byte(cfg.FirstPet), &p); err != nil {
			return nil, fmt.Errorf("new guard: first pet: %w", err)
		}
		g.first = &p
	}
	return g, nil
}

// Run serves the socket until ctx ends, stopping the guests whenever a
// deadline passes unpetted or the host manager reports its lease lost. It
// returns ErrGuardRunning if another guard answers on the socket.
func (g *Guard) Run(ctx context.Context) error {
	sock := GuardSocket(g.cfg.StateDir)
	ln, err := g.listen(sock)
	if err != nil {
		return err
	}
	defer ln.Close()
	pets := make(chan pet, 16)
	if g.first != nil {
		pets <- *g.first // taken before any pet from the socket
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	lctx, cancel := context.WithCancel(ctx)
	defer cancel()
	g.accept(lctx, ln, pets, &wg)
	g.logger.Info("node guard ready", "socket", sock)
	mine, err := os.Stat(sock)
	if err != nil {
		return fmt.Errorf("guard: %w", err)
	}
	lastLook := time.Now()
	st := &guardState{guests: map[string]GuestRef{}}
	check := time.NewTicker(10 * time.Millisecond)
	defer check.Stop()
	for {
		select {
		case <-ctx.Done():
			g.logger.Info("node guard stopping", "armed", st.armed)
			return nil
		case p := <-pets:
			g.take(ctx, st, p)
		case now := <-check.C:
			if now.Sub(lastLook) >= time.Second {
				// Its socket removed or replaced (the state directory
				// deleted, another guard in its place): nobody can pet
				// this guard any more, so it has nothing left to guard.
				lastLook = now
				if cur, err := os.Stat(sock); err != nil || !os.SameFile(cur, mine) {
					g.logger.Warn("node guard exiting: its socket is gone or replaced", "socket", sock, "armed", st.armed)
					return nil
				}
			}
			// Wall clock, like the deadline: both are this machine's.
			if st.armed && !now.Round(0).Before(st.deadline) {
				st.armed = false
				g.fire(ctx, fmt.Sprintf("not petted by the host manager since its deadline %s", st.deadline.Format(time.RFC3339Nano)), st.deadline, st.guests, st.within, true)
			}
		}
	}
}

// guardState is what the guard's loop knows from the pets so far.
type guardState struct {
	armed    bool
	deadline time.Time     // when armed: the guests stop unless petted before it
	within   time.Duration // the bound of a stop (guard_stop_time)
	holder   string        // the host manager that petted last
	guests   map[string]GuestRef
}

// listen listens on sock, in a state directory it creates if need be,
// unless another guard answers there (ErrGuardRunning); a dead guard's
// socket is replaced.
func (g *Guard) listen(sock string) (net.Listener, error) {
	if err := os.MkdirAll(g.cfg.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("guard: %w", err)
	}
	if c, err := net.DialTimeout("unix", sock, time.Second); err == nil {
		c.Close()
		return nil, fmt.Errorf("guard %s: %w", sock, ErrGuardRunning)
	}
	_ = os.Remove(sock) // a dead guard's
	ln, err := net.Listen("unix", sock)
	if err != nil {
		return nil, fmt.Errorf("guard: listen on %s: %w", sock, err)
	}
	return ln, nil
}

// accept serves each connection to ln, its pets sent on pets, until ctx
// ends; then it closes ln. Its goroutines are counted in wg.
func (g *Guard) accept(ctx context.Context, ln net.Listener, pets chan<- pet, wg *sync.WaitGroup) {
	wg.Add(1)
	go func() {
		defer wg.Done()
		<-ctx.Done()
		ln.Close()
	}()
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				g.serve(ctx, c, pets)
			}()
		}
	}()
}

// take applies pet p to st: the guests to stop and the bound of a stop,
// then a fence (the guests stop now), a disarm (a clean stop of the host
// manager) or a new deadline, which arms the guard.
func (g *Guard) take(ctx context.Context, st *guardState, p pet) {
	if p.Holder != st.holder {
		g.logger.Info("petted by a host manager", "holder", p.Holder)
		st.holder = p.Holder
	}
	if p.Guests != nil || p.Disarm {
		clear(st.guests)
		for _, r := range p.Guests {
			st.guests[r.Name()] = r
		}
	}
	if p.StopWithin > 0 {
		st.within = p.StopWithin
	}
	switch {
	case p.Fence != "":
		g.fire(ctx, "the host manager lost its lease: "+p.Fence, time.Time{}, st.guests, st.within, false)
		st.armed = false
	case p.Disarm:
		st.armed = false
		g.logger.Info("disarmed: the host manager stopped cleanly")
	case !p.Deadline.IsZero():
		if !st.armed {
			g.logger.Info("armed", "deadline", p.Deadline.Format(time.RFC3339Nano))
		}
		st.armed, st.deadline = true, p.Deadline
	}
}

// serve reads pets from one host manager connection.
func (g *Guard) serve(ctx context.Context, c net.Conn, pets chan<- pet) {
	defer c.Close()
	go func() {
		<-ctx.Done()
		c.Close()
	}()
	sc := bufio.NewScanner(c)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for sc.Scan() {
		var p pet
		if err := json.Unmarshal(sc.Bytes(), &p); err != nil {
			g.logger.Warn("bad pet", "err", err)
			continue
		}
		select {
		case pets <- p:
		case <-ctx.Done():
			return
		}
	}
}

// fire stops every guest the guard knows of, and every process-driver
// guest with a pid file, with force, in parallel, within `within`; then it
// escalates if asked to or if a stop failed, and records what it did.
func (g *Guard) fire(ctx context.Context, reason string, deadline time.Time, known map[string]GuestRef, within time.Duration, escalate bool) {
	start := time.Now()
	if within <= 0 {
		within = 5 * time.Second
	}
	all := map[string]GuestRef{}
	for k, r := range known {
		all[k] = r
	}
	ents, _ := os.ReadDir(filepath.Join(g.cfg.StateDir, "guests"))
	for _, e := range ents {
		if name, ok := strings.CutSuffix(e.Name(), ".pid"); ok && all[name].Guest.Name == "" {
			all[name] = GuestRef{Node: g.cfg.Node, Guest: config.Guest{Name: name, Driver: config.DriverProcess}}
		}
	}
	g.logger.Error("node guard: stopping this node's guests", "reason", reason, "guests", len(all))
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), within)
	defer cancel()
	var (
		mu     sync.Mutex
		wg     sync.WaitGroup
		failed = map[string]string{}
		names  []string
	)
	for name, r := range all {
		names = append(names, name)
		drv := g.cfg.Drivers[r.Guest.Driver]
		if drv == nil {
			failed[name] = "unknown driver " + r.Guest.Driver
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			done := make(chan error, 1)
			go func() { done <- drv.Stop(sctx, r, true) }()
			var err error
			select {
			case err = <-done:
			case <-sctx.Done():
				err = fmt.Errorf("not stopped within guard_stop_time %s", within)
			}
			if err != nil {
				mu.Lock()
				failed[name] = err.Error()
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	a := GuardAction{At: start.UTC(), Deadline: deadline.UTC(), Reason: reason, Guests: names, Took: time.Since(start)}
	if len(failed) > 0 {
		a.Failed = failed
		g.logger.Error("node guard: guests not stopped", "failed", failed)
	}
	if (escalate || len(failed) > 0) && len(g.cfg.Escalate) > 0 {
		a.Escalated = true
		g.logger.Error("node guard: escalating", "command", g.cfg.Escalate)
		ectx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		out, err := exec.CommandContext(ectx, g.cfg.Escalate[0], g.cfg.Escalate[1:]...).CombinedOutput()
		cancel()
		if err != nil {
			g.logger.Error("node guard: escalation failed", "err", err, "output", string(out))
		}
	}
	g.logger.Warn("node guard: guests stopped", "guests", names, "took", a.Took)
	if err := appendLine(GuardActions(g.cfg.StateDir), a); err != nil {
		g.logger.Error("record guard action", "err", err)
	}
}

// appendLine appends v as one JSON line to path, synced.
func appendLine(path string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode %s: %w", path, err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("open %s: %w", path, err)
	}
	if _, err := f.Write(append(b, '\n')); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("sync %s: %w", path, err)
	}
	return f.Close()
}

// ReadGuardActions reads the actions a node's guard recorded.
func ReadGuardActions(stateDir string) ([]GuardAction, error) {
	b, err := os.ReadFile(GuardActions(stateDir))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read guard actions: %w", err)
	}
	var out []GuardAction
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if line == "" {
			continue
		}
		var a GuardAction
		if err := json.Unmarshal([]byte(line), &a); err != nil {
			return out, fmt.Errorf("read guard actions: %w", err)
		}
		out = append(out, a)
	}
	return out, nil
}
