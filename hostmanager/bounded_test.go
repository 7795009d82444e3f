package hostmanager

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/vmguard/vmguard/config"
	"github.com/vmguard/vmguard/events"
	"github.com/vmguard/vmguard/failover"
	"github.com/vmguard/vmguard/guestagent"
)

// The ladder of DESIGN §8, one rung at a time.
func TestEscalate(t *testing.T) {
	svc := Action{Kind: StopService, Package: "web", Epoch: 3, Guest: config.Guest{Name: "webvm"},
		Service: config.Service{Name: "svc", HaltTimeout: config.Duration(time.Second)}, RequestID: "r1", PID: 42, CauseID: "c"}
	guest := Action{Kind: StopGuest, Package: "web", Epoch: 3, Guest: config.Guest{Name: "webvm"}, Reason: "operator_halt", CauseID: "c"}
	forced := guest
	forced.Force = true
	cases := []struct {
		name  string
		a     Action
		rung  int
		kind  ActionKind
		force bool
		step  stepKind
	}{
		{"service stop, in time", svc, 0, StopService, false, stepAct},
		{"service stop, out of time: guest forced off", svc, 1, StopGuest, true, stepAct},
		{"guest stop, first try", guest, 0, StopGuest, false, stepAct},
		{"guest stop failed: forced", guest, 1, StopGuest, true, stepAct},
		{"guest stop failed twice: fence", guest, 2, StopGuest, true, stepFence},
		{"forced guest stop failed: fence", forced, 1, StopGuest, true, stepFence},
		{"run service is never escalated", Action{Kind: RunService}, 3, RunService, false, stepAct},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, step := escalate(c.a, c.rung)
			if got.Kind != c.kind || got.Force != c.force || step != c.step {
				t.Fatalf("escalate(%s, %d) = %s force=%v step %d; want %s force=%v step %d", c.a.Kind, c.rung, got.Kind, got.Force, step, c.kind, c.force, c.step)
			}
			if got.Kind == StopGuest && c.a.Kind == StopService {
				if got.Key() == c.a.Key() || got.CauseID != c.a.CauseID || got.RequestID != "" {
					t.Fatalf("escalated action %+v", got)
				}
				if !strings.Contains(got.Reason, "did not end within halt_timeout 1s + 3s") || !strings.Contains(got.Reason, "r1") {
					t.Fatalf("reason %q", got.Reason)
				}
			}
		})
	}
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	if got, want := stopDeadline(svc, at), at.Add(time.Second+StopGrace); !got.Equal(want) {
		t.Errorf("stopDeadline = %v, want %v", got, want)
	}
	noHalt := svc
	noHalt.Service.HaltTimeout = 0
	if got, want := stopDeadline(noHalt, at), at.Add(config.DefaultHaltTimeout+StopGrace); !got.Equal(want) {
		t.Errorf("stopDeadline without halt_timeout = %v, want %v", got, want)
	}
}

// Every fallback the runner may append is valid whatever the text of the
// event it replaces, and keeps its type, cause and decision.
func TestFallback(t *testing.T) {
	codec, err := events.NewCodec()
	if err != nil {
		t.Fatal(err)
	}
	huge := strings.Repeat("\xff\x1b[31m", 1<<12)
	for _, d := range []events.Payload{
		events.GuestStopped{Guest: "g", Node: "n1", Epoch: 1, Reason: huge},
		events.ServiceFailed{Service: "s", Node: "n1", Epoch: 1, Reason: huge},
		events.PackageFailed{Node: "n1", Epoch: 1, Reason: huge, Service: "s"},
		events.PackageHalted{Node: "n1", Epoch: 1, Reason: huge},
		events.PackageHalting{Node: "n1", Epoch: 1, Reason: huge, By: huge},
		events.NodeFenced{Reason: huge},
	} {
		subject := "web"
		if _, ok := d.(events.NodeFenced); ok {
			subject = "n1"
		}
		e := events.Event{ID: "x", Source: "/vmguard/nodes/n1/host", Subject: subject, CauseID: "c", Data: d, Time: time.Now(), Seq: 9}
		if _, err := codec.Encode(e); err == nil {
			t.Fatalf("%s: the test event should be invalid", e.Type())
		}
		fb, ok := Fallback(e)
		if !ok {
			t.Fatalf("%s: no fallback", e.Type())
		}
		if fb.Type() != e.Type() || fb.CauseID != "c" || fb.Subject != subject || fb.ID != "" || fb.Seq != 0 {
			t.Fatalf("fallback %+v", fb)
		}
		fb = events.Stamp(fb, time.Now())
		if _, err := codec.Encode(fb); err != nil {
			t.Errorf("%s fallback invalid: %v", e.Type(), err)
		}
	}
	if _, ok := Fallback(events.Event{Data: events.PackageStarted{Node: "n1", Epoch: 1}}); ok {
		t.Error("a fallback for an event without a reason")
	}
}

// verbose is what a guest's start command writes to stderr before it
// exits 1, as a sh snippet.
var verbose = map[string]string{
	"4KB":     `head -c 4096 /dev/zero | tr '\0' x >&2`,
	"1MB":     `head -c 1048576 /dev/zero | tr '\0' y >&2`,
	"invalid": `i=0; while [ $i -lt 600 ]; do printf 'ok\377\376\300' >&2; i=$((i+1)); done`,
	"escapes": `i=0; while [ $i -lt 300 ]; do printf '\033[31mred\033]0;title\007\033[2J\r' >&2; i=$((i+1)); done`,
}

// A guest whose start command prints a lot (4 KB, 1 MB, invalid UTF-8,
// terminal escapes) and exits 1 fails its package on the first node, with
// a reason cut to the schema's limit, and the package runs on the second
// node: the failover after the failure takes well under a second.
func TestVerboseGuestStartFailsOver(t *testing.T) {
	t.Parallel()
	for name, noise := range verbose {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			gd := t.TempDir()
			script := filepath.Join(gd, "start.sh")
			// $1 node, $2 guest.
			body := `if [ "$1" = node1 ]; then ` + noise + `; exit 1; fi
` + vmguardBin + ` agent --guest "$2" --node "$1" --heartbeat 200ms --nats ` + e.srv.ClientURL() + ` --state ` + gd + `/"$2" >>` + gd + `/"$2".log 2>&1 &
echo $! > ` + gd + `/"$2".pid
`
			if err := os.WriteFile(script, []byte(body), 0o755); err != nil {
				t.Fatal(err)
			}
			// The guest outlives its host manager (as a VM does): stop it
			// when the test ends, whatever state it ended in.
			t.Cleanup(func() {
				if b, err := os.ReadFile(filepath.Join(gd, "dbvm.pid")); err == nil {
					if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && pid > 0 {
						_ = syscall.Kill(pid, syscall.SIGKILL)
					}
				}
			})
			pidf := gd + "/{{.Guest}}.pid"
			e.applyConfig(`cluster: test
node_timeout: 3s
guest_timeout: 2s
nodes: [node1, node2]
packages:
  - name: db
    nodes: [node1, node2]
    guest:
      name: dbvm
      driver: exec
      start_timeout: 20s
      exec:
        start: [sh, ` + script + `, "{{.Node}}", "{{.Guest}}"]
        stop: [sh, -c, "test -f ` + pidf + ` && kill $(cat ` + pidf + `) 2>/dev/null; rm -f ` + pidf + `; true"]
        status: [sh, -c, "test -f ` + pidf + ` && st=$(ps -o stat= -p $(cat ` + pidf + `)) && case $st in Z*) exit 1;; esac"]
        timeout: 10s
    services:
      - name: pg
        cmd: [sleep, "1000"]
        halt_timeout: 1s
`)
			e.startRunner("node1", nil, nil)
			e.startRunner("node2", nil, nil)
			fo, err := failover.NewRunner(failover.Config{Log: e.log, ID: "test-" + name,
				Logger: slog.New(slog.NewTextHandler(e.logs, nil)).With("component", "failover")})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() { defer close(done); _ = fo.Run(ctx) }()
			t.Cleanup(func() { cancel(); <-done })

			var failed, placed, starting, started events.Event
			e.waitFor("db started on node2", 60*time.Second, func(evs []events.Event) bool {
				for _, ev := range evs {
					switch d := ev.Data.(type) {
					case events.PackageFailed:
						if d.Node == "node1" && failed.ID == "" {
							failed = ev
						}
					case events.PackagePlaced:
						if d.Node == "node2" && placed.ID == "" {
							placed = ev
						}
					case events.PackageStarting:
						if d.Node == "node2" && starting.ID == "" {
							starting = ev
						}
					case events.PackageStarted:
						if d.Node == "node2" {
							started = ev
							return true
						}
					}
				}
				return false
			})
			if failed.ID == "" || placed.ID == "" {
				t.Fatalf("no package.failed on node1 (%v) or no package.placed on node2 (%v)", failed.ID, placed.ID)
			}
			r := failed.Data.(events.PackageFailed).Reason
			if n := utf8.RuneCountInString(r); n > events.MaxReason || !utf8.ValidString(r) {
				t.Errorf("package.failed reason: %d characters (max %d), valid UTF-8 %v", n, events.MaxReason, utf8.ValidString(r))
			}
			if !strings.Contains(r, "did not start") || !strings.Contains(r, "exit status 1") {
				t.Errorf("package.failed reason does not say what failed: %.200q", r)
			}
			gs, _ := last(e.events(), "db", "guest.stopped")
			if gr := gs.Data.(events.GuestStopped).Reason; !strings.Contains(gr, "…(cut ") {
				t.Errorf("guest.stopped reason does not say it was cut: %.200q", gr)
			}
			// Failover: from the failure on node1 to the start on node2
			// (the rest is the agent's boot, measured and logged).
			if d := starting.Time.Sub(failed.Time); d > time.Second {
				t.Errorf("package.failed on node1 -> package.starting on node2 took %s, want under 1s", d)
			}
			t.Logf("%s: failed on node1 -> placed on node2 %s, -> started on node2 %s; reason %d characters",
				name, placed.Time.Sub(failed.Time).Round(time.Millisecond), started.Time.Sub(failed.Time).Round(time.Millisecond), utf8.RuneCountInString(r))
			if n := e.count("db", "guest.stopped"); n != 1 {
				t.Errorf("%d guest.stopped on node1: the failed start was retried", n)
			}
			e.checkInvariants()
		})
	}
}

// forgedStart runs web (guest restart guestRestart, a service that
// sleeps) on node1 and, once it started, appends a process.started with a
// request id no agent knows, at web's epoch, which it returns.
func (e *testEnv) forgedStart(guestRestart string) (uint64, events.Event) {
	e.t.Helper()
	_, epoch := e.webOnNode1(guestRestart, "cmd: [sleep, \"1000\"]")
	ps, _ := last(e.events(), "web", "package.started")
	return epoch, e.append(events.Event{Source: "/vmguard/guests/webvm/agent", Subject: "web", CauseID: ps.ID, Data: events.ProcessStarted{
		Guest: "webvm", Service: "svc", PID: 999999, RequestID: "forged-" + events.NewID(), Epoch: epoch}})
}

// A process.started with a request id no agent knows (a guest's user may
// publish on the package's subjects) does not hold a halt: the stop of
// that stray is not answered, and after halt_timeout + StopGrace the guest
// is forced off through its driver and the halt ends.
func TestForgedProcessStartedDoesNotBlockHalt(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	epoch, forged := e.forgedStart("none")
	e.waitFor("the host manager to read the forged event", 10*time.Second, func(evs []events.Event) bool {
		return len(evs) > 0 && evs[len(evs)-1].Seq >= forged.Seq
	})
	halting := e.append(events.Event{Source: "/vmguard/cli/test", Subject: "web", Data: events.PackageHalting{Node: "node1", Epoch: epoch, Reason: "operator_halt", By: "test"}})
	const haltTimeout = time.Second // testYAML
	bound := haltTimeout + StopGrace
	// The bound plus the forced stop by the process driver (SIGKILL) and
	// slack for a loaded machine.
	e.waitCount("web", "package.halted", 1, bound+20*time.Second)
	halted, _ := last(e.events(), "web", "package.halted")
	took := halted.Time.Sub(halting.Time)
	t.Logf("halt with a forged stray: %s (halt_timeout %s + StopGrace %s)", took.Round(time.Millisecond), haltTimeout, StopGrace)
	if took < bound {
		t.Errorf("halted after %s, before the bound %s: the stray was not waited for", took, bound)
	}
	if took > bound+10*time.Second {
		t.Errorf("halted after %s, want within %s + 10s", took, bound)
	}
	gs, _ := last(e.events(), "web", "guest.stopped")
	if r := gs.Data.(events.GuestStopped).Reason; !strings.Contains(r, "did not end within halt_timeout") || !strings.Contains(r, forged.Data.(events.ProcessStarted).RequestID) {
		t.Errorf("guest.stopped reason %q", r)
	}
	if d := halted.Data.(events.PackageHalted); d.Reason != "operator_halt" {
		t.Errorf("package.halted = %+v", d)
	}
	e.checkInvariants()
}

// A service that cannot start because its command is not on a very long
// PATH: the agent's reply names the whole PATH; the service.failed and
// package.failed reasons are cut to the schema's limit and appended once,
// and the run is not re-sent in a loop.
func TestCannotStartLongReply(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	long := strings.Repeat("/opt/nowhere/bin:", 400) // 6.8 KB
	e.applyConfig(testYAML("none", "cmd: [no-such-command-vmguard]\nenv: {PATH: \""+long+"\"}"))
	var runs atomic.Int64
	e.startRunner("node1", nil, nil)
	sub, err := e.nc.Subscribe(guestagent.Subject("webvm", guestagent.EndpointRun), func(*nats.Msg) { runs.Add(1) })
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	e.place("web", "node1")
	e.waitCount("web", "package.failed", 1, 30*time.Second)
	sf, _ := last(e.events(), "web", "service.failed")
	r := sf.Data.(events.ServiceFailed).Reason
	if n := utf8.RuneCountInString(r); n > events.MaxReason || !strings.Contains(r, "cannot be started") || !strings.Contains(r, "…(cut ") {
		t.Errorf("service.failed reason (%d characters): %.300q", n, r)
	}
	pf, _ := last(e.events(), "web", "package.failed")
	if n := utf8.RuneCountInString(pf.Data.(events.PackageFailed).Reason); n > events.MaxReason {
		t.Errorf("package.failed reason: %d characters", n)
	}
	if n := e.count("web", "service.failed"); n != 1 {
		t.Errorf("%d service.failed", n)
	}
	if n := runs.Load(); n > 3 {
		t.Errorf("the run was sent %d times: a cannot-start reply must not be re-sent in a loop", n)
	}
	e.checkInvariants()
}

// A guest whose driver cannot stop it, even forced, does not hold its
// package's placement forever: after the graceful stop and the forced stop
// failed, the node fences itself for the package (node.fenced, which
// releases its placements), once.
func TestUnstoppableGuestFencesNode(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	gd := t.TempDir()
	start, status, _ := e.agentVM(gd, " --heartbeat 200ms")
	e.applyConfig(execDB("20s", []string{start, `stop: [sh, -c, "echo the hypervisor refuses >&2; exit 3"]`, status, `timeout: 2s`}, `halt_timeout: 1s`))
	t.Cleanup(func() {
		if b, err := os.ReadFile(filepath.Join(gd, "dbvm.pid")); err == nil {
			var pid int
			if _, err := fmt.Sscan(string(b), &pid); err == nil && pid > 0 {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	})
	e.startRunner("node1", nil, nil)
	epoch := e.placeStarted("db", "node1")
	halting := e.append(events.Event{Source: "/vmguard/cli/test", Subject: "db", Data: events.PackageHalting{Node: "node1", Epoch: epoch, Reason: "operator_halt", By: "test"}})
	fenced := e.waitFenced()
	r := fenced.Data.(events.NodeFenced).Reason
	if !strings.Contains(r, "db") || !strings.Contains(r, "could not be stopped") || !strings.Contains(r, "refuses") {
		t.Errorf("node.fenced reason %q", r)
	}
	t.Logf("halting -> node.fenced: %s", fenced.Time.Sub(halting.Time).Round(time.Millisecond))
	// The node joins again and does not fence again for the same package.
	if n := e.joinedAfter(fenced); n != 1 {
		t.Errorf("%d node.fenced, want 1", n)
	}
}

// waitFenced waits up to 60 s for node1's node.fenced and returns it.
func (e *testEnv) waitFenced() events.Event {
	e.t.Helper()
	var fenced events.Event
	e.waitFor("node.fenced", 60*time.Second, func(evs []events.Event) bool {
		for _, ev := range evs {
			if _, ok := ev.Data.(events.NodeFenced); ok && ev.Subject == "node1" {
				fenced = ev
				return true
			}
		}
		return false
	})
	return fenced
}

// joinedAfter waits up to 30 s for a node.joined after fenced, then
// returns how many node.fenced the log holds.
func (e *testEnv) joinedAfter(fenced events.Event) int {
	e.t.Helper()
	e.waitFor("node.joined after the fence", 30*time.Second, func(evs []events.Event) bool {
		for _, ev := range evs {
			if _, ok := ev.Data.(events.NodeJoined); ok && ev.Seq > fenced.Seq {
				return true
			}
		}
		return false
	})
	n := 0
	for _, ev := range e.events() {
		if _, ok := ev.Data.(events.NodeFenced); ok {
			n++
		}
	}
	return n
}

// fakeGuest plays a guest whose agent beats and accepts runs but whose
// events never reach the log (its spool is full, or its publish permission
// was withdrawn): it answers run requests with a pid and writes nothing.
// With refuse set it answers every run "unavailable" instead.
func fakeGuest(t *testing.T, nc *nats.Conn, guest, node string, refuse bool) (runs *atomic.Int64) {
	t.Helper()
	runs = &atomic.Int64{}
	sub, err := nc.Subscribe(guestagent.Subject(guest, guestagent.EndpointRun), func(m *nats.Msg) {
		var req guestagent.RunRequest
		if json.Unmarshal(m.Data, &req) != nil {
			return
		}
		runs.Add(1)
		if refuse {
			r := nats.NewMsg(m.Reply)
			r.Header.Set(micro.ErrorCodeHeader, guestagent.CodeUnavailable)
			r.Header.Set(micro.ErrorHeader, "busy, try again")
			_ = nc.PublishMsg(r)
			return
		}
		b, _ := json.Marshal(guestagent.RunReply{Process: guestagent.ProcessInfo{RequestID: req.RequestID, Package: req.Package,
			Service: req.Service, Epoch: req.Epoch, PID: 4242, State: "running", StartedAt: time.Now()}})
		_ = m.Respond(b)
	})
	if err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			b, _ := json.Marshal(guestagent.Heartbeat{Guest: guest, Node: node, Time: time.Now()})
			_ = nc.Publish(guestagent.HeartbeatSubject(guest), b)
			select {
			case <-tick.C:
			case <-stop:
				return
			}
		}
	}()
	t.Cleanup(func() {
		close(stop)
		<-done
		_ = sub.Unsubscribe()
	})
	return runs
}

// A run the agent accepted whose process.started never comes does not
// leave the service "starting" forever: after ReportTimeout the host
// manager records the process as exited (not_reported) and the restart
// policy decides (here: one restart, then the service fails and so does
// the package).
func TestUnreportedRunCountsAsFailedStart(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.applyConfig(execDB("20s", noopExec, `restart: 1`))
	runs := fakeGuest(t, e.nc, "dbvm", "node1", false)
	e.startRunner("node1", nil, nil)
	e.place("db", "node1")
	e.waitCount("db", "guest.started", 1, 30*time.Second)
	gs, _ := last(e.events(), "db", "guest.started")
	e.waitCount("db", "package.failed", 1, 2*ReportTimeout+30*time.Second)
	var exits []events.Event
	for _, ev := range e.pkgEvents("db") {
		if x, ok := ev.Data.(events.ProcessExited); ok {
			if x.Reason != ReasonUnreported || x.PID != 4242 || ev.Source != HostSource("node1") {
				t.Errorf("process.exited %+v from %s", x, ev.Source)
			}
			exits = append(exits, ev)
		}
	}
	if len(exits) != 2 || e.count("db", "service.restarting") != 1 || e.count("db", "service.failed") != 1 {
		t.Fatalf("%d process.exited, %d service.restarting, %d service.failed; want 2, 1, 1",
			len(exits), e.count("db", "service.restarting"), e.count("db", "service.failed"))
	}
	if d := exits[0].Time.Sub(gs.Time); d < ReportTimeout || d > ReportTimeout+10*time.Second {
		t.Errorf("first process.exited %s after guest.started, want ReportTimeout %s plus a little", d, ReportTimeout)
	}
	if n := runs.Load(); n != 2 {
		t.Errorf("%d run requests, want 2 (the first run and the restart)", n)
	}
	e.checkInvariants()
}

// A forged process.started while the package runs is a stray no agent
// knows: it is not retried forever either; after halt_timeout + StopGrace
// the guest is forced off and restarted within guest.restart, and the
// package runs on.
func TestForgedStrayWhileRunning(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	_, forged := e.forgedStart("1")
	rid := forged.Data.(events.ProcessStarted).RequestID
	var gs events.Event
	e.waitFor("the guest forced off for the stray", StopGrace+time.Second+30*time.Second, func(evs []events.Event) bool {
		for _, ev := range evs {
			if d, ok := ev.Data.(events.GuestStopped); ok && strings.Contains(d.Reason, rid) {
				gs = ev
				return true
			}
		}
		return false
	})
	if d := gs.Time.Sub(forged.Time); d < time.Second+StopGrace {
		t.Errorf("guest forced off %s after the stray, before halt_timeout + StopGrace", d)
	}
	// The restart (within guest.restart: 1) brings the services back.
	e.waitFor("the services run again, or the package fails", 60*time.Second, func(evs []events.Event) bool {
		for _, ev := range evs {
			if x, ok := ev.Data.(events.ProcessStarted); ok && ev.Seq > gs.Seq && x.Service == "svc" {
				return true
			}
		}
		return has(evs, "web", "package.failed")
	})
	if pf, ok := last(e.events(), "web", "package.failed"); ok {
		t.Fatalf("package failed: %s", pf.Data.(events.PackageFailed).Reason)
	}
	e.checkInvariants()
}

// A guest that does not come up and that its driver cannot stop either is
// not started again and again: the node fences itself for the package,
// once.
func TestGuestNeitherStartsNorStops(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.applyConfig(execDB("1s", []string{
		`start: ["true"]`,
		`stop: [sh, -c, "echo stuck >&2; exit 3"]`,
		`status: ["true"]`,
		`timeout: 2s`,
	}))
	e.startRunner("node1", nil, nil)
	e.place("db", "node1")
	fenced := e.waitFenced()
	if r := fenced.Data.(events.NodeFenced).Reason; !strings.Contains(r, "db") || !strings.Contains(r, "stuck") {
		t.Errorf("node.fenced reason %q", r)
	}
	if n := e.joinedAfter(fenced); n != 1 {
		t.Errorf("%d node.fenced, want 1", n)
	}
	if has(e.events(), "db", "guest.started") {
		t.Error("guest.started: the guest that never started was reported started")
	}
}

// A run the agent keeps refusing (busy, unavailable) is retried with
// backoff, not forever: after RunGiveUp the service fails, and so does the
// package on this node.
func TestRunRefusedGivesUp(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.applyConfig(execDB("20s", noopExec, `restart: unlimited`))
	runs := fakeGuest(t, e.nc, "dbvm", "node1", true)
	e.startRunner("node1", nil, nil)
	e.place("db", "node1")
	e.waitCount("db", "guest.started", 1, 30*time.Second)
	gs, _ := last(e.events(), "db", "guest.started")
	e.waitCount("db", "package.failed", 1, RunGiveUp+30*time.Second)
	sf, _ := last(e.events(), "db", "service.failed")
	if r := sf.Data.(events.ServiceFailed).Reason; !strings.Contains(r, "run not accepted by the agent within 30s") || !strings.Contains(r, "busy, try again") {
		t.Errorf("service.failed reason %q", r)
	}
	if d := sf.Time.Sub(gs.Time); d < RunGiveUp || d > RunGiveUp+10*time.Second {
		t.Errorf("service.failed %s after guest.started, want RunGiveUp %s plus a little", d, RunGiveUp)
	}
	// Backoff 25 ms doubling to 5 s: about 15 tries in 30 s, not thousands.
	if n := runs.Load(); n > 30 {
		t.Errorf("%d run requests in %s", n, RunGiveUp)
	}
	t.Logf("%d run requests before giving up", runs.Load())
	e.checkInvariants()
}
