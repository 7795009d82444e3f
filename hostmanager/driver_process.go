package hostmanager

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/vmguard/vmguard/config"
)

// DefaultProcessStopTimeout bounds how long the process driver waits for an
// agent to stop its processes and exit after SIGTERM before it kills the
// agent's process group.
const DefaultProcessStopTimeout = 30 * time.Second

// DefaultProcessMigrateTimeout bounds a process-driver migration.
const DefaultProcessMigrateTimeout = config.DefaultProcessMigrateTimeout

// ProcessDriverConfig configures NewProcessDriver.
type ProcessDriverConfig struct {
	// Bin is the vmguard binary that runs `vmguard agent` (default: the
	// running executable).
	Bin string
	// NATS is the URL the agents connect to (required).
	NATS string
	// Dir holds, per guest, the agent's state directory <Dir>/<guest>, its
	// pid file <Dir>/<guest>.pid and its output <Dir>/<guest>.log (required).
	Dir string
	// StopTimeout bounds a graceful stop (default DefaultProcessStopTimeout).
	StopTimeout time.Duration
	// Args are extra arguments for `vmguard agent`, e.g. --heartbeat 500ms.
	Args []string
	// GuestArgs, if set, returns more `vmguard agent` arguments for one
	// guest, after Args: its own identity (`vmguard up --secure` gives
	// each guest --nkey FILE). No secret belongs in them: ps shows them.
	GuestArgs func(guest string) []string
	// PeerDir returns the Dir of node's process driver on this machine,
	// where Migrate hands a guest over ("" or nil: unknown; Migrate fails
	// and the package halts and starts there instead).
	PeerDir func(node string) string
}

// ProcessDriver is the `process` guest driver: each guest is a local
// `vmguard agent --guest G --node N` process, the demo's and the tests'
// stand-in for a VM. Like a VM the agent outlives the host manager that
// started it: it runs in its own process group and is not killed when the
// host manager dies; it fences itself through the node lease instead. A
// later host manager finds it again through its pid file.
type ProcessDriver struct {
	cfg ProcessDriverConfig

	mu       sync.Mutex
	guests   map[string]*sync.Mutex  // one start or stop at a time per guest
	children map[int]<-chan struct{} // agents this driver forked: closed once reaped
}

// NewProcessDriver checks cfg and returns the driver.
func NewProcessDriver(cfg ProcessDriverConfig) (*ProcessDriver, error) {
	if cfg.NATS == "" {
		return nil, errors.New("new process driver: NATS URL: missing")
	}
	if cfg.Dir == "" {
		return nil, errors.New("new process driver: dir: missing")
	}
	dir, err := filepath.Abs(cfg.Dir)
	if err != nil {
		return nil, fmt.Errorf("new process driver: dir: %w", err)
	}
	cfg.Dir = dir
	if cfg.Bin == "" {
		bin, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("new process driver: find vmguard binary (set the agent binary): %w", err)
		}
		cfg.Bin = bin
	}
	if cfg.StopTimeout <= 0 {
		cfg.StopTimeout = DefaultProcessStopTimeout
	}
	return &ProcessDriver{cfg: cfg, guests: map[string]*sync.Mutex{}, children: map[int]<-chan struct{}{}}, nil
}

// StateDir returns the agent state directory of guest.
func (d *ProcessDriver) StateDir(guest string) string { return filepath.Join(d.cfg.Dir, guest) }

// PIDFile returns the file holding the pid of guest's agent.
func (d *ProcessDriver) PIDFile(guest string) string { return filepath.Join(d.cfg.Dir, guest+".pid") }

func (d *ProcessDriver) lock(guest string) func() {
	d.mu.Lock()
	m := d.guests[guest]
	if m == nil {
		m = &sync.Mutex{}
		d.guests[guest] = m
	}
	d.mu.Unlock()
	m.Lock()
	return m.Unlock
}

// Start forks `vmguard agent` for the guest unless its agent already runs.
func (d *ProcessDriver) Start(ctx context.Context, g GuestRef) error {
	defer d.lock(g.Name())()
	if _, ok := d.running(g.Name()); ok {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("start guest %s: %w", g.Name(), err)
	}
	state := d.StateDir(g.Name())
	if err := os.MkdirAll(state, 0o700); err != nil {
		return fmt.Errorf("start guest %s: %w", g.Name(), err)
	}
	out, err := os.OpenFile(filepath.Join(d.cfg.Dir, g.Name()+".log"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("start guest %s: open agent log: %w", g.Name(), err)
	}
	defer out.Close()
	// The URL may hold a password: it goes to the agent in a 0600 file,
	// not on its command line (ps shows that to every user).
	urlFile := filepath.Join(state, "nats-url")
	if err := writeFileAtomic(urlFile, []byte(d.cfg.NATS+"\n")); err != nil {
		return fmt.Errorf("start guest %s: %w", g.Name(), err)
	}
	args := []string{"agent", "--guest", g.Name(), "--nats-url-file", urlFile, "--state", state}
	if g.Node != "" {
		args = append(args, "--node", g.Node)
	}
	args = append(args, d.cfg.Args...)
	if d.cfg.GuestArgs != nil {
		args = append(args, d.cfg.GuestArgs(g.Name())...)
	}
	// Not exec.CommandContext: the guest must outlive this call, and the
	// host manager.
	cmd := exec.Command(d.cfg.Bin, args...)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.Dir = state
	cmd.Env = agentEnv(os.Environ())
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start guest %s: run %s agent: %w", g.Name(), d.cfg.Bin, err)
	}
	pid := cmd.Process.Pid
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait() // reap it; how it ended shows in the log
		close(done)
	}()
	d.mu.Lock()
	d.children[pid] = done
	d.mu.Unlock()
	if err := writeFileAtomic(d.PIDFile(g.Name()), []byte(strconv.Itoa(pid)+"\n")); err != nil {
		_ = syscall.Kill(-pid, syscall.SIGKILL)
		return fmt.Errorf("start guest %s: %w", g.Name(), err)
	}
	untilExeced(ctx, pid, state, done)
	return nil
}

// execVisibleWithin bounds untilExeced.
const execVisibleWithin = 2 * time.Second

// untilExeced waits until /proc shows pid as the agent with state directory
// state, until it ends (done), ctx ends, or execVisibleWithin. cmd.Start returns once
// the exec has begun, but for a moment after it /proc shows the process
// without its command line: a Status then said "not running", and a Start
// in that moment forked a second agent (TestProcessDriver, about one run in
// a hundred under -race). An agent that does not show in time is left to
// the guest's start timeout, as one that ends at once is.
func untilExeced(ctx context.Context, pid int, state string, done <-chan struct{}) {
	deadline := time.Now().Add(execVisibleWithin)
	for !isAgent(pid, state) && time.Now().Before(deadline) {
		select {
		case <-done:
			return
		case <-ctx.Done():
			return
		case <-time.After(time.Millisecond):
		}
	}
}

// agentEnv is the host manager's environment environ without its NATS_*
// variables (NATS_URL may hold a password, NATS_CREDS and NATS_NKEY name
// the host's own credentials): an agent connects with the URL file the
// driver gives it, and its services must not see the host's secrets.
func agentEnv(environ []string) []string {
	env := make([]string, 0, len(environ))
	for _, kv := range environ {
		if !strings.HasPrefix(kv, "NATS_") {
			env = append(env, kv)
		}
	}
	return env
}

// Stop stops the guest's agent: SIGTERM (it stops its processes and
// delivers their exits), SIGKILL to its process group after StopTimeout;
// with force, SIGKILL at once (its processes die with it).
func (d *ProcessDriver) Stop(ctx context.Context, g GuestRef, force bool) error {
	defer d.lock(g.Name())()
	pid, ok := d.running(g.Name())
	if !ok {
		_ = os.Remove(d.PIDFile(g.Name()))
		return nil
	}
	if !force {
		_ = syscall.Kill(pid, syscall.SIGTERM)
		if d.wait(ctx, pid, d.cfg.StopTimeout) {
			_ = os.Remove(d.PIDFile(g.Name()))
			return nil
		}
	}
	_ = syscall.Kill(-pid, syscall.SIGKILL)
	_ = syscall.Kill(pid, syscall.SIGKILL)
	if !d.wait(context.WithoutCancel(ctx), pid, 10*time.Second) {
		return fmt.Errorf("stop guest %s: agent pid %d still runs after SIGKILL", g.Name(), pid)
	}
	_ = os.Remove(d.PIDFile(g.Name()))
	return nil
}

// Migrate is the process driver's live migration: the agent process, like
// a VM, keeps running with its processes and its state directory (its
// disk); its pid file moves to the target node's driver directory
// (ProcessDriverConfig.PeerDir), naming the state directory, so that the
// target's host manager finds it running (Start, Status, Stop, its guard)
// and this node no longer does. The target's host manager then names its
// node to the agent (a place request), which follows that node's lease.
func (d *ProcessDriver) Migrate(ctx context.Context, g GuestRef, target string) error {
	defer d.lock(g.Name())()
	pid, ok := d.running(g.Name())
	if !ok {
		return fmt.Errorf("migrate guest %s: its agent does not run here", g.Name())
	}
	var dir string
	if d.cfg.PeerDir != nil {
		dir = d.cfg.PeerDir(target)
	}
	if dir == "" {
		return fmt.Errorf("migrate guest %s: the process driver knows no directory of node %s on this machine", g.Name(), target)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("migrate guest %s: %w", g.Name(), err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("migrate guest %s: %w", g.Name(), err)
	}
	state := d.agentState(g.Name())
	if err := writeFileAtomic(filepath.Join(dir, g.Name()+".pid"), []byte(strconv.Itoa(pid)+"\n"+state+"\n")); err != nil {
		return fmt.Errorf("migrate guest %s: %w", g.Name(), err)
	}
	if err := os.Remove(d.PIDFile(g.Name())); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("migrate guest %s: %w", g.Name(), err)
	}
	return nil
}

// Status reports whether the guest's agent runs.
func (d *ProcessDriver) Status(_ context.Context, g GuestRef) (bool, error) {
	_, ok := d.running(g.Name())
	return ok, nil
}

// PID returns the pid of guest's agent if it runs.
func (d *ProcessDriver) PID(guest string) (int, bool) { return d.running(guest) }

// running returns the pid of the guest's agent if its pid file names a live
// `vmguard agent` process with the guest's state directory: StateDir, or
// the one the pid file names on its second line (a guest that migrated
// here keeps the state directory it started with).
func (d *ProcessDriver) running(guest string) (int, bool) {
	pid, state, ok := d.readPID(guest)
	if !ok || !isAgent(pid, state) {
		return 0, false
	}
	return pid, true
}

// readPID reads guest's pid file: the pid, and the agent's state directory.
func (d *ProcessDriver) readPID(guest string) (int, string, bool) {
	b, err := os.ReadFile(d.PIDFile(guest))
	if err != nil {
		return 0, "", false
	}
	first, rest, _ := strings.Cut(string(b), "\n")
	pid, err := strconv.Atoi(strings.TrimSpace(first))
	if err != nil || pid <= 0 {
		return 0, "", false
	}
	state := strings.TrimSpace(rest)
	if state == "" {
		state = d.StateDir(guest)
	}
	return pid, state, true
}

// agentState is the state directory of guest's agent as its pid file says.
func (d *ProcessDriver) agentState(guest string) string {
	if _, state, ok := d.readPID(guest); ok {
		return state
	}
	return d.StateDir(guest)
}

// isAgent reports whether pid is a live (not zombie) `vmguard agent` with
// state directory state: a pid file can outlive its process and the pid can
// be reused.
func isAgent(pid int, state string) bool {
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	if i := bytes.LastIndexByte(stat, ')'); i < 0 || i+2 >= len(stat) || stat[i+2] == 'Z' || stat[i+2] == 'X' {
		return false
	}
	cmdline, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil {
		return false
	}
	args := strings.Split(strings.TrimRight(string(cmdline), "\x00"), "\x00")
	i := slices.Index(args, "--state")
	return slices.Contains(args, "agent") && i >= 0 && i+1 < len(args) && args[i+1] == state
}

// wait waits up to timeout (and ctx) for pid to end; it reports whether it did.
func (d *ProcessDriver) wait(ctx context.Context, pid int, timeout time.Duration) bool {
	d.mu.Lock()
	done := d.children[pid]
	d.mu.Unlock()
	t := time.NewTimer(timeout)
	defer t.Stop()
	if done != nil {
		select {
		case <-done:
			d.mu.Lock()
			delete(d.children, pid)
			d.mu.Unlock()
			return true
		case <-t.C:
		case <-ctx.Done():
		}
		return false
	}
	// Not our child (a former host manager started it): poll.
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		if syscall.Kill(pid, 0) != nil || !isAliveProc(pid) {
			return true
		}
		select {
		case <-tick.C:
		case <-t.C:
			return false
		case <-ctx.Done():
			return false
		}
	}
}

// isAliveProc reports whether pid exists and is not a zombie.
func isAliveProc(pid int) bool {
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(stat, ')')
	return i >= 0 && i+2 < len(stat) && stat[i+2] != 'Z' && stat[i+2] != 'X'
}

// writeFileAtomic writes b to path through a temporary file and a rename.
func writeFileAtomic(path string, b []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
