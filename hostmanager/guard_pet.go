package hostmanager

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"syscall"
	"time"
)

// petter is the host manager's side of the node guard: it keeps one
// connection to the guard's socket, starts the guard when none answers, and
// sends the latest pet; a newer pet replaces one not yet sent.
type petter struct {
	node   string
	state  string
	bin    string
	args   []string
	logger *slog.Logger
	latest chan pet
}

func newPetter(node, state, bin string, args []string, logger *slog.Logger) *petter {
	return &petter{node: node, state: state, bin: bin, args: args, logger: logger, latest: make(chan pet, 1)}
}

// send queues p, replacing a pet not yet sent (a fence or disarm is never
// replaced by a guest-list update).
func (p *petter) send(m pet) {
	for {
		select {
		case p.latest <- m:
			return
		default:
		}
		select {
		case old := <-p.latest:
			m = mergePet(old, m)
		default:
		}
	}
}

// mergePet returns the one pet that replaces old, not yet sent, and the
// newer m: a guest-list update keeps old's fence or disarm, and old's
// deadline and stop bound (dropping a renewal's deadline for a guest list
// would leave a guard not yet armed unarmed, and an armed one with a stale
// deadline).
func mergePet(old, m pet) pet {
	if m.Deadline.IsZero() && m.Fence == "" && !m.Disarm {
		if old.Fence != "" || old.Disarm {
			old.Guests = m.Guests
			return old
		}
		m.Deadline = old.Deadline
		if m.StopWithin == 0 {
			m.StopWithin = old.StopWithin
		}
	}
	return m
}

// run sends pets until ctx ends; flush, if it gets a pet, sends it before
// returning (the clean stop's disarm).
func (p *petter) run(ctx context.Context, flush <-chan pet) {
	var conn net.Conn
	defer func() {
		if conn != nil {
			conn.Close()
		}
	}()
	write := func(m pet) bool {
		if conn == nil {
			c, err := p.dial(m)
			if err != nil {
				p.logger.Error("node guard unreachable; its guests are not guarded", "err", err)
				return false
			}
			conn = c
		}
		b, _ := json.Marshal(m) // plain fields always marshal
		_ = conn.SetWriteDeadline(time.Now().Add(time.Second))
		if _, err := conn.Write(append(b, '\n')); err != nil {
			p.logger.Warn("pet the node guard; reconnecting", "err", err)
			conn.Close()
			conn = nil
			return false
		}
		return true
	}
	for {
		select {
		case <-ctx.Done():
			select {
			case m := <-flush:
				if !write(m) {
					write(m)
				}
			default:
			}
			return
		case m := <-p.latest:
			if !write(m) && !write(m) {
				// Keep the newest for the next round unless one came.
				select {
				case p.latest <- m:
				default:
				}
				t := time.NewTimer(100 * time.Millisecond)
				select {
				case <-t.C:
				case <-ctx.Done():
				}
				t.Stop()
			}
		}
	}
}

// dial connects to the guard, starting it first if none answers; a guard
// it starts gets first, the pet about to be sent, on its command line.
func (p *petter) dial(first pet) (net.Conn, error) {
	sock := GuardSocket(p.state)
	if c, err := net.DialTimeout("unix", sock, time.Second); err == nil {
		return c, nil
	}
	if err := p.start(first); err != nil {
		return nil, err
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := net.DialTimeout("unix", sock, time.Second)
		if err == nil {
			return c, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("connect to node guard %s: %w", sock, err)
		}
		time.Sleep(20 * time.Millisecond) // poll for the socket of the guard just started
	}
}

// start runs `vmguard guard` in a session of its own, so that it outlives
// this host manager (even its kill -9) and no signal to the host manager's
// process group reaches it. The guard gets first (--pet) on its command
// line: it is armed from its start, even if this host manager hangs or dies
// before it connects (a guard never petted would never act).
func (p *petter) start(first pet) error {
	if err := os.MkdirAll(p.state, 0o700); err != nil {
		return fmt.Errorf("start node guard: %w", err)
	}
	out, err := os.OpenFile(filepath.Join(p.state, "guard.log"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("start node guard: %w", err)
	}
	defer out.Close()
	abs, err := filepath.Abs(p.state)
	if err != nil {
		return fmt.Errorf("start node guard: %w", err)
	}
	b, _ := json.Marshal(first) // plain fields always marshal
	args := append([]string{"guard", "--node", p.node, "--state", abs, "--pet", string(b)}, p.args...)
	cmd := exec.Command(p.bin, args...)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start node guard: run %s: %w", p.bin, err)
	}
	go func() { _ = cmd.Wait() }() // reap it if it ends while this one lives
	p.logger.Info("node guard started", "pid", cmd.Process.Pid, "args", slices.Clone(args))
	return nil
}
