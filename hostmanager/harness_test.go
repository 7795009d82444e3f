package hostmanager

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"pgregory.net/rapid"

	"github.com/vmguard/vmguard/config"
	"github.com/vmguard/vmguard/events"
)

// testCodec checks events against the schemas as the log does; compiled
// once for all harnesses.
var testCodec = sync.OnceValue(func() *events.Codec {
	c, err := events.NewCodec()
	if err != nil {
		panic(err)
	}
	return c
})

// t0 is the time of the first event of every test log.
var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

const me = "node1"

// harness is a log, the host manager state of node1 folded from it, and a
// simulated world (guest driver and agent) that performs actions the way a
// runner would: each pending action once, results appended as events.
type harness struct {
	t   rapid.TB
	s   *State
	log []events.Event
	now time.Time
	// world
	done    map[string]bool           // keys of actions performed
	running map[string]map[string]int // guest -> request id -> pid of processes running
	guestUp map[string]bool           // guest name -> up
	runs    map[string]int            // run request id -> times the agent was asked
	started map[string]bool           // run request ids a process.started names
	nextPID int
	// failStart makes StartGuest fail with this reason.
	failStart string
	// holdRuns keeps RunService actions from being performed.
	holdRuns bool
	// failMigrate makes MigrateGuest fail with this reason.
	failMigrate string
}

func newHarness(t rapid.TB, yaml string) *harness {
	h := &harness{t: t, s: NewState(me), now: t0, done: map[string]bool{},
		running: map[string]map[string]int{}, guestUp: map[string]bool{}, runs: map[string]int{}, started: map[string]bool{}, nextPID: 100}
	if yaml != "" {
		h.config(yaml)
	}
	return h
}

// cfgYAML is the test cluster: package web on node1, node2 with guest webvm
// and services a and b; extra lines are added to every service.
func cfgYAML(svc, guest string) string {
	var b strings.Builder
	b.WriteString("cluster: test\nnodes: [node1, node2, node3]\npackages:\n  - name: web\n    nodes: [node1, node2, node3]\n    guest:\n      name: webvm\n")
	for _, l := range strings.Split(strings.TrimSpace(guest), "\n") {
		if l != "" {
			b.WriteString("      " + l + "\n")
		}
	}
	b.WriteString("    services:\n")
	for _, name := range []string{"a", "b"} {
		b.WriteString("      - name: " + name + "\n        cmd: [sleep, \"1000\"]\n")
		for _, l := range strings.Split(strings.TrimSpace(svc), "\n") {
			if l != "" {
				b.WriteString("        " + l + "\n")
			}
		}
	}
	return b.String()
}

func (h *harness) config(yaml string) {
	h.t.Helper()
	h.add("/vmguard/cli/test", "test", "", configApplied(h.t, yaml))
}

// configApplied is what `vmguard apply` records for the cluster config
// yaml.
func configApplied(t rapid.TB, yaml string) events.ConfigApplied {
	t.Helper()
	c, err := config.Parse("test.yaml", []byte(yaml))
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	b, err := c.JSON()
	if err != nil {
		t.Fatal(err)
	}
	hash, _ := c.Hash()
	return events.ConfigApplied{Config: b, Hash: hash}
}

// add appends an event written by someone else and applies it.
func (h *harness) add(source, subject, cause string, data events.Payload) events.Event {
	h.t.Helper()
	e := events.Event{Source: source, Subject: subject, CauseID: cause, Data: data}
	return h.append(e)
}

func (h *harness) append(e events.Event) events.Event {
	h.t.Helper()
	e.Seq = uint64(len(h.log) + 1)
	e.ID = fmt.Sprintf("e%d", e.Seq)
	e.Time = h.now
	if err := e.Validate(); err != nil {
		h.t.Fatalf("event %d %s: %v", e.Seq, e.Type(), err)
	}
	// What the log would refuse (a reason over its schema's limit, say)
	// is a bug in what the core or the harness built.
	if _, err := testCodec().Encode(e); err != nil {
		h.t.Fatalf("event %d %s: the log would refuse it: %v", e.Seq, e.Type(), err)
	}
	h.check(e)
	h.log = append(h.log, e)
	if !h.s.Apply(e) {
		h.t.Fatalf("event %d %s not applied", e.Seq, e.Type())
	}
	return e
}

// check asserts the safety rules on an event about to be appended: a
// package counts as down on this node only when nothing of it runs, and
// starts only when no older placement can still run.
func (h *harness) check(e events.Event) {
	h.t.Helper()
	p := h.s.Package(e.Subject)
	switch d := e.Data.(type) {
	case events.PackageHalted, events.PackageFailed:
		var node string
		var epoch uint64
		if x, ok := d.(events.PackageHalted); ok {
			node, epoch = x.Node, x.Epoch
		} else {
			x := d.(events.PackageFailed)
			node, epoch = x.Node, x.Epoch
		}
		if g := p.instGuest(); node == me && p != nil && p.Inst != nil && p.Inst.Epoch == epoch && (len(h.running[g]) > 0 || h.guestUp[g]) {
			h.t.Fatalf("%s for epoch %d while %d processes run in its guest, guest up %v", e.Type(), epoch, len(h.running[g]), h.guestUp[g])
		}
	case events.PackageStarting:
		if d.Node == me && (p == nil || len(p.Prior) > 0 || p.Inst != nil) {
			h.t.Fatalf("package.starting epoch %d with older placements not released: %+v", d.Epoch, p)
		}
	}
}

// crash replaces the state by a fold of the log and forgets the actions in
// flight, like a runner killed with kill -9 and started again.
func (h *harness) crash() {
	h.s = NewState(me)
	for _, e := range h.log {
		h.s.Apply(e)
	}
	h.done = map[string]bool{}
}

func (h *harness) advance(d time.Duration) { h.now = h.now.Add(d) }

// decide appends every decision for pkg, one at a time, and returns them.
func (h *harness) decide(pkg string) []events.Event {
	h.t.Helper()
	var out []events.Event
	for i := 0; ; i++ {
		if i > 100 {
			h.t.Fatalf("decide %s: no end", pkg)
		}
		d, ok := Decide(h.s, pkg)
		if !ok {
			return out
		}
		if d.ID != "" || !d.Time.IsZero() || d.Seq != 0 {
			h.t.Fatalf("decision %s carries id/time/seq: %+v", d.Type(), d)
		}
		if d.Source != HostSource(me) || d.Subject != pkg {
			h.t.Fatalf("decision %s: source %q subject %q", d.Type(), d.Source, d.Subject)
		}
		out = append(out, h.append(d))
	}
}

// settle decides and performs actions until nothing is left to do, and
// returns the types of the events appended (short form) in order.
func (h *harness) settle() []string {
	h.t.Helper()
	start := len(h.log)
	for round := 0; ; round++ {
		if round > 200 {
			h.t.Fatal("settle: no end")
		}
		progress := false
		for _, pkg := range h.s.PackageNames() {
			if len(h.decide(pkg)) > 0 {
				progress = true
			}
			for _, a := range Pending(h.s, pkg) {
				if h.done[a.Key()] || a.NotBefore.After(h.now) || (a.Kind == RunService && h.holdRuns) {
					continue
				}
				h.done[a.Key()] = true
				h.perform(a)
				progress = true
			}
		}
		if !progress {
			break
		}
	}
	return shortTypes(h.log[start:])
}

func shortTypes(evs []events.Event) []string {
	out := make([]string, len(evs))
	for i, e := range evs {
		out[i] = events.ShortType(e.Type())
	}
	return out
}

func agentSource(guest string) string { return "/vmguard/guests/" + guest + "/agent" }

// perform does what a runner and the agent would do for a.
func (h *harness) perform(a Action) {
	g := a.Guest.Name
	switch a.Kind {
	case StartGuest:
		if h.failStart != "" {
			h.append(a.GuestStopped("start failed: " + h.failStart))
			return
		}
		h.guestUp[g] = true
		h.append(a.GuestStarted())
	case StopGuest:
		h.guestUp[g] = false
		delete(h.running, g) // everything in it dies with it
		h.append(a.GuestStopped(a.Reason))
	case RunService:
		if !h.guestUp[g] {
			h.t.Fatalf("run %s in guest %s that is down", a.RequestID, g)
		}
		if h.started[a.RequestID] {
			h.t.Fatalf("asked to run %s again after its process.started", a.RequestID)
		}
		h.runs[a.RequestID]++
		if h.runs[a.RequestID] > 1 {
			return // the agent deduplicates run requests
		}
		h.started[a.RequestID] = true
		if h.running[g] == nil {
			h.running[g] = map[string]int{}
		}
		for rid := range h.running[g] {
			if svc, _, _ := strings.Cut(rid, "|"); svc == a.Service.Name {
				h.t.Fatalf("run %s/%s: a process of that service is still running (%s)", a.Service.Name, a.RequestID, rid)
			}
		}
		h.nextPID++
		h.running[g][a.Service.Name+"|"+a.RequestID] = h.nextPID
		h.add(agentSource(g), a.Package, a.CauseID, events.ProcessStarted{Guest: g, Service: a.Service.Name, PID: h.nextPID, RequestID: a.RequestID, Epoch: a.Epoch})
	case MigrateGuest:
		if h.failMigrate != "" {
			h.append(a.GuestMigrationFailed(h.failMigrate))
			return
		}
		// The guest and its processes run on, elsewhere.
		h.guestUp[g] = false
		delete(h.running, g)
		h.append(a.GuestMigrated())
	case StopService:
		key := a.Service.Name + "|" + a.RequestID
		pid, ok := h.running[g][key]
		if !ok {
			return
		}
		delete(h.running[g], key)
		h.add(agentSource(g), a.Package, "", events.ProcessExited{Guest: g, Service: a.Service.Name, PID: pid, ExitCode: -1, Signal: "SIGTERM", RequestID: a.RequestID, Epoch: a.Epoch, Reason: "stopped"})
	}
}

// exit makes the running process of service svc of package pkg's guest end
// by itself with code, as the agent reports it.
func (h *harness) exit(svc string, code int) events.Event {
	h.t.Helper()
	return h.exitWith(svc, events.ProcessExited{ExitCode: code})
}

func (h *harness) exitWith(svc string, x events.ProcessExited) events.Event {
	h.t.Helper()
	in := h.s.Package("web").Inst
	if in == nil {
		h.t.Fatal("exit: no instance")
	}
	g := in.Config.Guest.Name
	for key, pid := range h.running[g] {
		name, rid, _ := strings.Cut(key, "|")
		if name != svc {
			continue
		}
		delete(h.running[g], key)
		x.Guest, x.Service, x.PID, x.RequestID, x.Epoch = g, svc, pid, rid, in.Epoch
		return h.add(agentSource(g), "web", "", x)
	}
	h.t.Fatalf("exit %s: not running", svc)
	return events.Event{}
}

// place appends package.placed for web on node with the next epoch.
func (h *harness) place(node, reason string) events.Event {
	h.t.Helper()
	p := h.s.Package("web")
	var epoch uint64
	prev := ""
	if p != nil {
		epoch, prev = p.Current.Epoch, p.Current.Node
	}
	return h.add("/vmguard/failover", "web", "", events.PackagePlaced{Node: node, Epoch: epoch + 1, Reason: reason, PreviousNode: prev})
}

// start places web on node1 and settles: it runs.
func (h *harness) start() {
	h.t.Helper()
	h.place(me, "auto_run")
	got := h.settle()
	want := []string{"package.starting", "guest.started", "process.started", "process.started", "package.started"}
	if !slices.Equal(got, want) {
		h.t.Fatalf("start: %v, want %v", got, want)
	}
}

func (h *harness) inst() *Instance {
	h.t.Helper()
	p := h.s.Package("web")
	if p == nil || p.Inst == nil {
		h.t.Fatal("no instance of web on node1")
	}
	return p.Inst
}

func (h *harness) last() events.Event { return h.log[len(h.log)-1] }

// lastOf returns the last event of type typ.
func (h *harness) lastOf(typ string) events.Event {
	h.t.Helper()
	for i := len(h.log) - 1; i >= 0; i-- {
		if h.log[i].Type() == typ {
			return h.log[i]
		}
	}
	h.t.Fatalf("no %s in the log", typ)
	return events.Event{}
}

// instGuest is the guest of p's instance here, "" if none.
func (p *PackageState) instGuest() string {
	if p == nil || p.Inst == nil {
		return ""
	}
	return p.Inst.Config.Guest.Name
}

func (h *harness) processes() int {
	n := 0
	for _, m := range h.running {
		n += len(m)
	}
	return n
}

func eq(t testing.TB, what string, got, want []string) {
	t.Helper()
	if !slices.Equal(got, want) {
		t.Errorf("%s:\n got  %v\n want %v", what, got, want)
	}
}
