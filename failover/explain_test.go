package failover

import (
	"strings"
	"testing"

	"github.com/vmguard/vmguard/events"
)

func ids(evs []events.Event) string {
	var out []string
	for _, e := range evs {
		out = append(out, e.ID)
	}
	return strings.Join(out, " ")
}

func TestExplain(t *testing.T) {
	l := newLog(t)
	cfg := l.config(testCluster(testPkg("web", "node1", "node2")))                                                                   // e1
	l.join("node1", "node2")                                                                                                         // e2 e3
	p1 := l.add("web", events.PackagePlaced{Node: "node1", Epoch: 1, Reason: ReasonAutoRun}, cfg.ID)                                 // e4
	st := l.add("web", events.PackageStarting{Node: "node1", Epoch: 1}, p1.ID)                                                       // e5
	g := l.add("web", events.GuestStarted{Guest: "webvm", Node: "node1", Epoch: 1}, st.ID)                                           // e6
	x := l.add("web", events.ProcessExited{Guest: "webvm", Service: "app", PID: 1, RequestID: g.ID + "/app", Epoch: 1}, g.ID+"/app") // e7
	sf := l.add("web", events.ServiceFailed{Service: "app", Node: "node1", Epoch: 1, Reason: "restarts used up"}, x.ID)              // e8
	f := l.add("web", events.PackageFailed{Node: "node1", Epoch: 1, Reason: "service_failed"}, sf.ID)                                // e9
	if got := ids(Explain(l.evs, "web")); got != "e9 e8 e7 e6 e5 e4 e1" {
		t.Errorf("failed package: %s", got)
	}
	d := Decide(l.state(), f)
	l.applyAll(d) // e10
	if got := ids(Explain(l.evs, "web")); got != "e10 e9 e8 e7 e6 e5 e4 e1" {
		t.Errorf("after failover: %s", got)
	}
	l.start("web", "node2", 2)                                                              // e11 e12
	l.add("web", events.PackageHalting{Node: "node2", Epoch: 2, Reason: "x", By: "op"}, "") // e13
	l.add("web", events.PackageHalted{Node: "node2", Epoch: 2, Reason: "x"}, "e13")         // e14
	chain := Explain(l.evs, "web")
	if got := ids(chain); got != "e14 e13 e10 e9 e8 e7 e6 e5 e4 e1" {
		t.Errorf("halted package: %s", got)
	}
	var b strings.Builder
	if err := WriteChain(&b, chain); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")
	if len(lines) != 11 || !strings.HasPrefix(lines[0], "#14 ") || lines[2] != "placed by:" ||
		!strings.HasPrefix(lines[1], "  <- #13 ") || !strings.HasPrefix(lines[3], "#10 ") ||
		!strings.Contains(lines[7], "guest.started") || !strings.Contains(lines[10], "cluster.config_applied hash=h [/vmguard/cli/test]") {
		t.Errorf("WriteChain:\n%s", b.String())
	}
	if Explain(l.evs, "nope") != nil {
		t.Error("Explain of an unknown package is not nil")
	}
}

func TestChain(t *testing.T) {
	byID := map[string]events.Event{}
	add := func(id, cause string) {
		byID[id] = events.Event{ID: id, CauseID: cause, Data: events.NodeJoined{}}
	}
	add("a", "b")
	add("b", "c")
	add("c", "a") // a loop
	add("d", "missing")
	add("e", "d/svc")
	add("f", "f/x")
	for start, want := range map[string]string{
		"a":       "a b c",
		"d":       "d",
		"e":       "e d",
		"f":       "f",
		"missing": "",
		"":        "",
	} {
		if got := ids(Chain(byID, start)); got != want {
			t.Errorf("Chain(%q) = %q, want %q", start, got, want)
		}
	}
}
