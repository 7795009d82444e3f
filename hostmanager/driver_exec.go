package hostmanager

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"text/template"
	"time"

	"github.com/vmguard/vmguard/config"
)

// ExecDriver is the `exec` guest driver: the guest's exec.start, exec.stop
// and exec.status argv templates (Go text/template with .Guest, .Node,
// .Package and .Force) run as commands, each bounded by exec.timeout.
// Nothing goes through a shell. status exiting 0 means the guest runs, any
// other exit that it does not.
type ExecDriver struct{}

// execData is what the templates see; Target only the migrate template.
type execData struct {
	Guest, Node, Package string
	Force                bool
	Target               string
}

// maxExecOutput bounds the command output kept for an error message.
const maxExecOutput = 2048

// Start runs the start command unless status says the guest already runs.
func (ExecDriver) Start(ctx context.Context, g GuestRef) error {
	x, err := execSpec(g)
	if err != nil {
		return fmt.Errorf("start guest %s: %w", g.Name(), err)
	}
	if len(x.Status) > 0 {
		if up, err := runStatus(ctx, g, x); err == nil && up {
			return nil
		}
	}
	if err := runExec(ctx, g, x, "start", x.Start, false); err != nil {
		return fmt.Errorf("start guest %s: %w", g.Name(), err)
	}
	return nil
}

// Stop runs the stop command (with .Force set when forced), then waits,
// within exec.timeout, until status says the guest is down.
func (ExecDriver) Stop(ctx context.Context, g GuestRef, force bool) error {
	x, err := execSpec(g)
	if err != nil {
		return fmt.Errorf("stop guest %s: %w", g.Name(), err)
	}
	if len(x.Status) > 0 {
		if up, err := runStatus(ctx, g, x); err == nil && !up {
			return nil
		}
	}
	if err := runExec(ctx, g, x, "stop", x.Stop, force); err != nil {
		return fmt.Errorf("stop guest %s: %w", g.Name(), err)
	}
	if len(x.Status) == 0 {
		return nil
	}
	deadline := time.Now().Add(execTimeout(x))
	wait := 50 * time.Millisecond
	for {
		up, err := runStatus(ctx, g, x)
		if err == nil && !up {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("stop guest %s: still running %s after the stop command", g.Name(), execTimeout(x))
		}
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return fmt.Errorf("stop guest %s: %w", g.Name(), ctx.Err())
		}
		wait = min(2*wait, time.Second)
	}
}

// Migrate runs the migrate command (exec.migrate, with .Target), bounded by
// the context (the runner's exec.migrate_timeout). With a status command it
// then checks that the guest no longer runs here: a command that exits 0
// but left the guest behind is a failed migration.
func (ExecDriver) Migrate(ctx context.Context, g GuestRef, target string) error {
	x, err := execSpec(g)
	if err != nil {
		return fmt.Errorf("migrate guest %s: %w", g.Name(), err)
	}
	if len(x.Migrate) == 0 {
		return fmt.Errorf("migrate guest %s: exec.migrate: missing", g.Name())
	}
	data := execData{Guest: g.Name(), Node: g.Node, Package: g.Package, Target: target}
	timeout := config.DefaultMigrateTimeout
	if d := x.MigrateTimeout.D(); d > 0 {
		timeout = d
	}
	if err := runArgv(ctx, "migrate", x.Migrate, data, timeout); err != nil {
		return fmt.Errorf("migrate guest %s to %s: %w", g.Name(), target, err)
	}
	if len(x.Status) > 0 {
		if up, err := runStatus(ctx, g, x); err == nil && up {
			return fmt.Errorf("migrate guest %s to %s: the migrate command succeeded but the guest still runs here", g.Name(), target)
		}
	}
	return nil
}

// Status runs the status command: exit 0 = running.
func (ExecDriver) Status(ctx context.Context, g GuestRef) (bool, error) {
	x, err := execSpec(g)
	if err != nil {
		return false, fmt.Errorf("status of guest %s: %w", g.Name(), err)
	}
	if len(x.Status) == 0 {
		return false, fmt.Errorf("status of guest %s: exec.status: missing", g.Name())
	}
	up, err := runStatus(ctx, g, x)
	if err != nil {
		return false, fmt.Errorf("status of guest %s: %w", g.Name(), err)
	}
	return up, nil
}

func execSpec(g GuestRef) (*config.ExecDriver, error) {
	if g.Guest.Exec == nil {
		return nil, errors.New("exec driver settings (guest.exec): missing")
	}
	return g.Guest.Exec, nil
}

func execTimeout(x *config.ExecDriver) time.Duration {
	if d := x.Timeout.D(); d > 0 {
		return d
	}
	return config.DefaultExecTimeout
}

func runStatus(ctx context.Context, g GuestRef, x *config.ExecDriver) (bool, error) {
	err := runExec(ctx, g, x, "status", x.Status, false)
	var exit *exec.ExitError
	switch {
	case err == nil:
		return true, nil
	case errors.As(err, &exit):
		return false, nil
	}
	return false, err
}

// runExec expands an argv template and runs it within the timeout; a
// non-zero exit is an error wrapping *exec.ExitError with the output's tail.
func runExec(ctx context.Context, g GuestRef, x *config.ExecDriver, what string, tmpl []string, force bool) error {
	if len(tmpl) == 0 {
		return fmt.Errorf("exec.%s: missing", what)
	}
	return runArgv(ctx, what, tmpl, execData{Guest: g.Name(), Node: g.Node, Package: g.Package, Force: force}, execTimeout(x))
}

// runArgv expands an argv template with data and runs it within timeout.
func runArgv(ctx context.Context, what string, tmpl []string, data execData, timeout time.Duration) error {
	argv := make([]string, len(tmpl))
	for i, s := range tmpl {
		t, err := template.New(what).Option("missingkey=error").Parse(s)
		if err != nil {
			return fmt.Errorf("exec.%s[%d]: %w", what, i, err)
		}
		var b strings.Builder
		if err := t.Execute(&b, data); err != nil {
			return fmt.Errorf("exec.%s[%d]: %w", what, i, err)
		}
		argv[i] = b.String()
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	var out tailBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.WaitDelay = time.Second
	err := cmd.Run()
	if err == nil {
		return nil
	}
	if ctx.Err() != nil {
		return fmt.Errorf("run %s command %q: timed out after %s", what, argv[0], timeout)
	}
	if msg := strings.TrimSpace(out.String()); msg != "" {
		return fmt.Errorf("run %s command %q: %w: %s", what, argv[0], err, msg)
	}
	return fmt.Errorf("run %s command %q: %w", what, argv[0], err)
}

// tailBuffer keeps the last maxExecOutput bytes written to it.
type tailBuffer struct{ b bytes.Buffer }

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.b.Write(p)
	if over := t.b.Len() - maxExecOutput; over > 0 {
		t.b.Next(over)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string { return t.b.String() }
