package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vmguard/vmguard/events"
)

// The fault-injection suite: real `vmguard server`, `vmguard failover` and
// `vmguard host` processes with process-driver guests (a real `vmguard
// agent` per guest) and real services; each scenario injects one fault,
// waits for the package to reach a terminal state (running, or halted when
// the scenario halts it) within a stated liveness bound, and ends with
// `vmguard verify` clean on the whole log.

// faultNodeTimeout is the node_timeout of the fault configs.
const faultNodeTimeout = 3 * time.Second

// faultConfig is a two-node cluster with one package, app, whose service
// runs the given shell script; restarts unlimited.
func faultConfig(script string) string {
	return fmt.Sprintf(`cluster: faults
node_timeout: %s
guest_timeout: 3s
nodes: [node1, node2]
packages:
  - name: app
    nodes: [node1, node2]
    guest: {name: appvm, driver: process, start_timeout: 20s}
    services:
      - name: main
        cmd: ["sh", "-c", %q]
        restart: unlimited
        halt_timeout: 1s
`, faultNodeTimeout, script)
}

// longRunning is a service that runs until stopped.
const longRunning = "while :; do sleep 1; done"

// faultEnv is a running cluster under test plus its server.
type faultEnv struct {
	*cluster
	store  string
	port   int
	server *exec.Cmd
	l      *events.Log
}

// newFaultEnv starts a server, applies cfg, and starts the failover
// controller and the host managers of node1 and node2.
func newFaultEnv(t *testing.T, cfg string) *faultEnv {
	t.Helper()
	if testing.Short() {
		t.Skip("fault injection with OS processes; run without -short")
	}
	dir := t.TempDir()
	f := &faultEnv{store: filepath.Join(dir, "store"), port: freePort(t)}
	url := fmt.Sprintf("nats://127.0.0.1:%d", f.port)
	f.server = startServer(t, f.store, f.port, "--sync-interval")
	f.cluster = &cluster{t: t, url: url, dir: dir, procs: map[string]*exec.Cmd{}, logs: map[string]*syncBuffer{}}
	t.Cleanup(f.killAll)
	file := filepath.Join(dir, "cluster.yaml")
	if err := os.WriteFile(file, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	f.cli("apply", "-f", file)
	f.l = dialLog(t, url)
	f.start("failover", "failover")
	for _, n := range []string{"node1", "node2"} {
		f.startHost(n)
	}
	return f
}

func (f *faultEnv) startHost(node string) {
	f.start(node, "host", "--node", node, "--state", filepath.Join(f.dir, node), "--agent-bin", vmguardBin)
}

// killAll kills every daemon, guest and service of the test with SIGKILL
// (the log is checked before; a graceful stop would only add time). On a
// failure it prints the daemons' output.
func (f *faultEnv) killAll() {
	for name, cmd := range f.procs {
		_ = syscall.Kill(cmd.Process.Pid, syscall.SIGCONT)
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if f.t.Failed() {
			f.t.Logf("--- output of %s:\n%s", name, f.logs[name].String())
		}
	}
	killStrays(f.dir)
}

// signal sends sig to one daemon.
func (f *faultEnv) signal(name string, sig syscall.Signal) {
	f.t.Helper()
	if err := f.procs[name].Process.Signal(sig); err != nil {
		f.t.Fatalf("signal %s %v: %v", name, sig, err)
	}
}

// pause stops a process with SIGSTOP for d, then continues it.
func (f *faultEnv) pause(pid int, d time.Duration) {
	f.t.Helper()
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		f.t.Fatalf("SIGSTOP %d: %v", pid, err)
	}
	time.Sleep(d) // the fault itself: a process stopped for d
	if err := syscall.Kill(pid, syscall.SIGCONT); err != nil {
		f.t.Fatalf("SIGCONT %d: %v", pid, err)
	}
}

// agentPID returns the pid of guest's agent on node, from the process
// driver's pid file.
func (f *faultEnv) agentPID(node, guest string) int {
	f.t.Helper()
	var pid int
	waitFor(f.t, 10*time.Second, "agent pid file of "+guest+" on "+node, func() bool {
		b, err := os.ReadFile(filepath.Join(f.dir, node, "guests", guest+".pid"))
		if err != nil {
			return false
		}
		pid, err = strconv.Atoi(strings.TrimSpace(string(b)))
		return err == nil && pid > 0
	})
	return pid
}

// killServer kills the server with SIGKILL.
func (f *faultEnv) killServer() {
	f.t.Helper()
	_ = f.server.Process.Kill()
	_ = f.server.Wait()
}

// restartServer starts the server again on the same store and port.
func (f *faultEnv) restartServer() {
	f.t.Helper()
	f.server = startServer(f.t, f.store, f.port, "--sync-interval")
}

// events reads the whole log (the connection reconnects after a server
// restart; a read that fails is retried until d).
func (f *faultEnv) events() []events.Event {
	f.t.Helper()
	var evs []events.Event
	waitFor(f.t, 30*time.Second, "a readable log", func() bool {
		evs = nil
		_, err := f.l.Replay(context.Background(), events.ReadOptions{}, func(e events.Event) error {
			evs = append(evs, e)
			return nil
		})
		return err == nil
	})
	return evs
}

// waitRunning waits, at most bound, until app has a package.started after
// seq and returns it; where says what the test waits for.
func (f *faultEnv) waitRunning(after uint64, bound time.Duration, where string) events.Event {
	f.t.Helper()
	return f.waitFor(bound, where, func(e events.Event) bool {
		_, ok := e.Data.(events.PackageStarted)
		return ok && e.Subject == "app" && e.Seq > after
	})
}

// waitFor polls the log every 100 ms until match holds for an event, at most
// bound, and returns it.
func (f *faultEnv) waitFor(bound time.Duration, what string, match func(events.Event) bool) events.Event {
	f.t.Helper()
	deadline := time.Now().Add(bound)
	for {
		for _, e := range f.events() {
			if match(e) {
				return e
			}
		}
		if time.Now().After(deadline) {
			f.dumpLog()
			f.t.Fatalf("liveness: no %s within %v", what, bound)
		}
		time.Sleep(100 * time.Millisecond) // poll interval
	}
}

// lastSeq returns the last sequence in the log.
func (f *faultEnv) lastSeq() uint64 {
	evs := f.events()
	if len(evs) == 0 {
		return 0
	}
	return evs[len(evs)-1].Seq
}

// verify runs `vmguard verify` as a separate process on the whole log and
// fails the test unless it exits 0.
func (f *faultEnv) verify() {
	f.t.Helper()
	out, err := exec.Command(vmguardBin, "--nats", f.url, "verify").CombinedOutput()
	if err != nil {
		f.dumpLog()
		f.t.Errorf("vmguard verify: %v\n%s", err, out)
		return
	}
	f.t.Logf("vmguard verify: %s", strings.TrimSpace(lastLine(string(out))))
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}

func (f *faultEnv) dumpLog() {
	for _, e := range f.events() {
		f.t.Log(formatEvent(e))
	}
}

// runningOn returns the node app's last package.started names.
func runningOn(evs []events.Event) string {
	node := ""
	for _, e := range evs {
		if d, ok := e.Data.(events.PackageStarted); ok && e.Subject == "app" {
			node = d.Node
		}
	}
	return node
}

// procsWith returns the pids of processes whose command line contains s.
func procsWith(s string) []int {
	var pids []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		if strings.Contains(strings.ReplaceAll(string(b), "\x00", " "), s) {
			if st, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat")); err == nil && isZombie(st) {
				continue
			}
			pids = append(pids, pid)
		}
	}
	return pids
}

func isZombie(stat []byte) bool {
	i := strings.LastIndexByte(string(stat), ')')
	return i > 0 && i+2 < len(stat) && stat[i+2] == 'Z'
}

// TestFaultKill9HostManager kills node1's host manager while app runs
// there: node1 is lost after node_timeout and app runs on node2; the host
// manager comes back and rejoins.
func TestFaultKill9HostManager(t *testing.T) {
	f := newFaultEnv(t, faultConfig(longRunning))
	first := f.waitRunning(0, 30*time.Second, "app running")
	node := first.Data.(events.PackageStarted).Node
	killed := time.Now()
	f.kill9(node)
	// Bound: the lease expires after node_timeout, the controller notices
	// within a second, the other node starts a process guest in well under
	// a second; 4x slack for a loaded machine.
	bound := 4 * (faultNodeTimeout + 2*time.Second)
	again := f.waitRunning(first.Seq, bound, "app running after the host manager's kill -9")
	if d := again.Data.(events.PackageStarted); d.Node == node {
		t.Errorf("app restarted on %s, the node whose host manager is dead", node)
	}
	t.Logf("host manager of %s killed -> app running on %s after %v", node, again.Data.(events.PackageStarted).Node, time.Since(killed).Round(time.Millisecond))
	f.startHost(node)
	f.waitFor(30*time.Second, node+" rejoined", func(e events.Event) bool {
		return e.Type() == events.TypeNodeJoined && e.Subject == node && e.Seq > again.Seq
	})
	f.verify()
}
