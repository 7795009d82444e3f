package hostmanager

import (
	"context"
	"errors"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vmguard/vmguard/config"
	"github.com/vmguard/vmguard/events"
	"github.com/vmguard/vmguard/guestagent"
	"github.com/vmguard/vmguard/internal/natsd"
)

// The process driver forks one agent per guest; a second Start of a running
// guest starts nothing; Stop stops it; a Stop of a stopped guest succeeds.
func TestProcessDriver(t *testing.T) {
	t.Parallel()
	srv := natsd.StartTest(t)
	nc := natsd.Connect(t, srv)
	d, err := NewProcessDriver(ProcessDriverConfig{Bin: vmguardBin, NATS: srv.ClientURL(), Dir: t.TempDir(), StopTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	g := GuestRef{Package: "web", Node: "", Guest: config.Guest{Name: "pdvm", Driver: config.DriverProcess}}
	ctx := context.Background()
	t.Cleanup(func() { _ = d.Stop(context.Background(), g, true) })
	if up, _ := d.Status(ctx, g); up {
		t.Fatal("running before Start")
	}
	if err := d.Start(ctx, g); err != nil {
		t.Fatal(err)
	}
	pid, ok := d.PID("pdvm")
	if !ok {
		t.Fatal("no agent after Start")
	}
	if err := d.Start(ctx, g); err != nil {
		t.Fatal(err)
	}
	if pid2, _ := d.PID("pdvm"); pid2 != pid {
		t.Fatalf("second Start forked another agent: %d, then %d", pid, pid2)
	}
	// A driver of a later host manager finds the same agent.
	d2, err := NewProcessDriver(ProcessDriverConfig{Bin: vmguardBin, NATS: srv.ClientURL(), Dir: d.cfg.Dir})
	if err != nil {
		t.Fatal(err)
	}
	if up, _ := d2.Status(ctx, g); !up {
		t.Fatal("a new driver does not see the running agent")
	}
	c, err := guestagent.NewClient(nc, "pdvm")
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		if _, err := c.Ping(ctx); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("agent does not answer")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := d.Stop(ctx, g, false); err != nil {
		t.Fatal(err)
	}
	if up, _ := d.Status(ctx, g); up || isAliveProc(pid) {
		t.Fatal("agent runs after Stop")
	}
	if err := d2.Stop(ctx, g, true); err != nil {
		t.Fatalf("Stop of a stopped guest: %v", err)
	}
}

// exec templates expand .Guest, .Node, .Package; status exit 0 = running;
// a failing start command is an error with its output.
func TestExecDriverCommands(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	flag := filepath.Join(dir, "{{.Package}}-{{.Guest}}-{{.Node}}")
	g := GuestRef{Package: "web", Node: "n1", Guest: config.Guest{Name: "vm1", Driver: config.DriverExec, Exec: &config.ExecDriver{
		Start:   []string{"touch", flag},
		Stop:    []string{"rm", "-f", flag},
		Status:  []string{"test", "-e", flag},
		Timeout: config.Duration(5 * time.Second),
	}}}
	ctx := context.Background()
	var d ExecDriver
	if up, err := d.Status(ctx, g); err != nil || up {
		t.Fatalf("status before start: %v %v", up, err)
	}
	if err := d.Start(ctx, g); err != nil {
		t.Fatal(err)
	}
	if up, err := d.Status(ctx, g); err != nil || !up {
		t.Fatalf("status after start: %v %v", up, err)
	}
	if _, err := exec.LookPath("test"); err != nil {
		t.Fatal(err)
	}
	if err := d.Stop(ctx, g, false); err != nil {
		t.Fatal(err)
	}
	if up, _ := d.Status(ctx, g); up {
		t.Fatal("running after stop")
	}
	bad := g
	x := *g.Guest.Exec
	x.Start = []string{"sh", "-c", "echo no such domain >&2; exit 3"}
	bad.Guest.Exec = &x
	err := d.Start(ctx, bad)
	var exit *exec.ExitError
	if !errors.As(err, &exit) || !strings.Contains(err.Error(), "no such domain") {
		t.Fatalf("failing start: %v", err)
	}
	x.Start = []string{"sleep", "10"}
	x.Timeout = config.Duration(200 * time.Millisecond)
	if err := d.Start(ctx, bad); err == nil || !strings.Contains(err.Error(), "timed out") {
		t.Fatalf("slow start: %v", err)
	}
	x.Start = []string{"{{.Nope}}"}
	if err := d.Start(ctx, bad); err == nil {
		t.Fatal("unknown template field accepted")
	}
}

// agentVM returns the exec driver's start and status commands (guest.exec
// lines) of a guest whose "VM" is a `vmguard agent` (with the extra flags)
// started in the background, as a hypervisor would boot the VM whose agent
// then comes up: its state, log and pid file in dir, the pid file's path
// (with {{.Guest}}) returned too.
func (e *testEnv) agentVM(dir, extra string) (start, status, pidFile string) {
	pidFile = dir + "/{{.Guest}}.pid"
	start = `start: [sh, -c, "` + vmguardBin + ` agent --guest {{.Guest}} --node {{.Node}}` + extra + ` --nats ` + e.srv.ClientURL() +
		` --state ` + dir + `/{{.Guest}} >>` + dir + `/{{.Guest}}.log 2>&1 & echo $! > ` + pidFile + `"]`
	status = `status: [sh, -c, "st=$(ps -o stat= -p $(cat ` + pidFile + `)) && case $st in Z*) exit 1;; esac"]`
	return start, status, pidFile
}

// execDB is the config of one package, db, on node1 alone (node_timeout
// 3s, guest_timeout 2s), whose guest dbvm is driven by exec commands (one
// line each of guest.exec) with start_timeout, and whose service pg sleeps,
// with more of its lines (service).
func execDB(startTimeout string, exec []string, service ...string) string {
	var b strings.Builder
	b.WriteString(`cluster: test
node_timeout: 3s
guest_timeout: 2s
nodes: [node1]
packages:
  - name: db
    nodes: [node1]
    guest:
      name: dbvm
      driver: exec
      start_timeout: ` + startTimeout + `
      exec:
`)
	for _, l := range exec {
		b.WriteString("        " + l + "\n")
	}
	b.WriteString(`    services:
      - name: pg
        cmd: [sleep, "1000"]
`)
	for _, l := range service {
		b.WriteString("        " + l + "\n")
	}
	return b.String()
}

// noopExec are exec commands that start nothing and never find the guest
// running: the test plays its agent (fakeGuest), or none.
var noopExec = []string{`start: ["true"]`, `stop: ["true"]`, `status: ["false"]`}

// A package whose guest is driven by exec commands (here: a shell that
// starts `vmguard agent` in the background, as a hypervisor would boot the
// VM whose agent then comes up) starts and halts.
func TestRunnerExecDriver(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	gd := t.TempDir()
	start, status, pidf := e.agentVM(gd, "")
	e.applyConfig(execDB("20s", []string{start, `stop: [sh, -c, "kill $(cat ` + pidf + `)"]`, status, `timeout: 10s`}, `halt_timeout: 1s`))
	e.startRunner("node1", nil, nil)
	epoch := e.placeStarted("db", "node1")
	e.halt("db", "node1", epoch)
	e.waitCount("db", "package.halted", 1, 30*time.Second)
	gs, _ := last(e.events(), "db", "guest.stopped")
	if d := gs.Data.(events.GuestStopped); d.Guest != "dbvm" || d.Reason != "operator_halt" {
		t.Errorf("guest.stopped = %+v", d)
	}
	e.checkInvariants()
}

// A guest whose agent never sends a heartbeat within start_timeout fails
// the package on the node.
func TestRunnerGuestStartTimeout(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.applyConfig(execDB("1s", noopExec))
	e.startRunner("node1", nil, nil)
	e.place("db", "node1")
	e.waitCount("db", "package.failed", 1, 30*time.Second)
	gs, _ := last(e.events(), "db", "guest.stopped")
	if r := gs.Data.(events.GuestStopped).Reason; !strings.Contains(r, "start_timeout") {
		t.Errorf("guest.stopped reason %q", r)
	}
	pf, _ := last(e.events(), "db", "package.failed")
	if r := pf.Data.(events.PackageFailed).Reason; !strings.Contains(r, "did not start") {
		t.Errorf("package.failed reason %q", r)
	}
}

// Skip advances the package's sequence, so a decision appended with
// Expect does not conflict with a message nobody can read.
func TestSkip(t *testing.T) {
	s := NewState("node1")
	s.Skip(7, events.PackageSubject("web", "process", "exited"))
	if got := s.PackageSeq("web"); got != 7 {
		t.Fatalf("package seq %d, want 7", got)
	}
	s.Skip(5, events.PackageSubject("web", "process", "exited"))
	if got := s.PackageSeq("web"); got != 7 {
		t.Fatalf("older skip changed the seq to %d", got)
	}
	s.Skip(9, events.NodeSubject("node2", "joined"))
	if s.Seq != 9 || s.PackageSeq("web") != 7 || s.NodeSeqs["node2"] != 9 {
		t.Fatalf("seq %d, package seq %d, node seq %d", s.Seq, s.PackageSeq("web"), s.NodeSeqs["node2"])
	}
}
