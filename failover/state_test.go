package failover

import (
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/vmguard/vmguard/events"
)

// pkgLine is the per-package facts the Apply table checks.
type pkgLine struct {
	Node, Status, State string
	Epoch               uint64
	AutoRun             bool
	FailedNodes         []string
	Relocations         int
	Restarts            int // of service "app"
	SwitchingOff        []string
}

func lineOf(s *State, pkg string) pkgLine {
	p := s.Package(pkg)
	if p == nil {
		p = &PackageState{}
	}
	l := pkgLine{
		Node: p.Node, Status: p.Phase.Status(), State: p.Phase.State(), Epoch: p.Epoch,
		AutoRun: s.AutoRunEnabled(pkg), FailedNodes: p.FailedNodes, Relocations: p.Relocations,
		SwitchingOff: p.SwitchingOff,
	}
	if sv := p.Services["app"]; sv != nil {
		l.Restarts = sv.Restarts
	}
	return l
}

func TestApplyPackage(t *testing.T) {
	restarting := func(l *logb, epoch uint64, attempt int) {
		l.add("web", events.ServiceRestarting{Service: "app", Node: "node1", Epoch: epoch, Attempt: attempt, RestartsLeft: 3 - attempt}, "")
	}
	tests := []struct {
		name  string
		build func(l *logb)
		want  pkgLine
	}{
		{"configured, never placed", func(l *logb) {}, pkgLine{Status: "down", State: "halted", AutoRun: true}},
		{"placed", func(l *logb) { l.place("web", "node1", 1, ReasonAutoRun, "") },
			pkgLine{Node: "node1", Status: "starting", State: "starting", Epoch: 1, AutoRun: true}},
		{"starting", func(l *logb) {
			l.place("web", "node1", 1, ReasonAutoRun, "")
			l.add("web", events.PackageStarting{Node: "node1", Epoch: 1}, "")
		}, pkgLine{Node: "node1", Status: "starting", State: "starting", Epoch: 1, AutoRun: true}},
		{"running", func(l *logb) { l.run("web", "node1", 1) },
			pkgLine{Node: "node1", Status: "up", State: "running", Epoch: 1, AutoRun: true}},
		{"service restarts counted", func(l *logb) {
			l.run("web", "node1", 1)
			restarting(l, 1, 1)
			restarting(l, 1, 2)
		}, pkgLine{Node: "node1", Status: "up", State: "running", Epoch: 1, AutoRun: true, Restarts: 2}},
		{"service failed: failing", func(l *logb) {
			l.run("web", "node1", 1)
			l.add("web", events.ServiceFailed{Service: "app", Node: "node1", Epoch: 1, Restarts: 3, Reason: "restarts used up"}, "")
		}, pkgLine{Node: "node1", Status: "failing", State: "halting", Epoch: 1, AutoRun: true}},
		{"failed", func(l *logb) {
			l.run("web", "node1", 1)
			restarting(l, 1, 3)
			l.failed("web", "node1", 1)
		}, pkgLine{Node: "node1", Status: "down", State: "failed", Epoch: 1, AutoRun: true, FailedNodes: []string{"node1"}, Restarts: 3}},
		{"failover placement counts a relocation and resets restarts", func(l *logb) {
			l.run("web", "node1", 1)
			restarting(l, 1, 3)
			l.failed("web", "node1", 1)
			l.place("web", "node2", 2, ReasonFailover, "node1")
		}, pkgLine{Node: "node2", Status: "starting", State: "starting", Epoch: 2, AutoRun: true, FailedNodes: []string{"node1"}, Relocations: 1}},
		{"operator move is no relocation", func(l *logb) {
			l.run("web", "node1", 1)
			l.place("web", "node2", 2, "operator_move: patching", "node1")
		}, pkgLine{Node: "node2", Status: "starting", State: "starting", Epoch: 2, AutoRun: true}},
		{"reset clears failed nodes, relocations, restarts and the failed state", func(l *logb) {
			l.run("web", "node1", 1)
			l.failed("web", "node1", 1)
			l.place("web", "node2", 2, ReasonFailover, "node1")
			l.start("web", "node2", 2)
			restarting(l, 2, 1)
			l.failed("web", "node2", 2)
			l.add("web", events.PackageReset{By: "op"}, "")
		}, pkgLine{Node: "node2", Status: "down", State: "halted", Epoch: 2, AutoRun: true}},
		{"reset of one service keeps the others' counters", func(l *logb) {
			l.run("web", "node1", 1)
			restarting(l, 1, 2)
			l.add("web", events.ServiceRestarting{Service: "other", Node: "node1", Epoch: 1, Attempt: 1}, "")
			l.add("web", events.PackageReset{Service: "other", By: "op"}, "")
		}, pkgLine{Node: "node1", Status: "up", State: "running", Epoch: 1, AutoRun: true, Restarts: 2}},
		{"operator halt disables auto_run", func(l *logb) {
			l.run("web", "node1", 1)
			l.add("web", events.PackageHalting{Node: "node1", Epoch: 1, Reason: "maint", By: "op"}, "")
		}, pkgLine{Node: "node1", Status: "halting", State: "halting", Epoch: 1, AutoRun: false}},
		{"host halt keeps auto_run", func(l *logb) {
			l.run("web", "node1", 1)
			l.add("web", events.PackageHalting{Node: "node1", Epoch: 1, Reason: "node_halted"}, "")
			l.add("web", events.PackageHalted{Node: "node1", Epoch: 1, Reason: "node_halted"}, "")
		}, pkgLine{Node: "node1", Status: "down", State: "halted", Epoch: 1, AutoRun: true}},
		{"switching changes", func(l *logb) {
			l.add("web", events.PackageSwitchingChanged{Enabled: false, By: "op"}, "")
			l.add("web", events.PackageSwitchingChanged{Node: "node2", Enabled: false, By: "op"}, "")
			l.add("web", events.PackageSwitchingChanged{Node: "node3", Enabled: false, By: "op"}, "")
			l.add("web", events.PackageSwitchingChanged{Node: "node2", Enabled: true, By: "op"}, "")
		}, pkgLine{Status: "down", State: "halted", AutoRun: false, SwitchingOff: []string{"node3"}}},
		{"events of an older epoch change nothing", func(l *logb) {
			l.run("web", "node1", 1)
			l.place("web", "node2", 2, ReasonOperatorMove, "node1")
			l.add("web", events.PackageHalted{Node: "node1", Epoch: 1, Reason: "moved"}, "")
			restarting(l, 1, 1)
			l.add("web", events.ServiceFailed{Service: "app", Node: "node1", Epoch: 1, Reason: "x"}, "")
			l.failed("web", "node1", 1)
			l.add("web", events.PackageStarted{Node: "node1", Epoch: 1}, "")
			l.place("web", "node3", 2, ReasonOperatorMove, "node1")
		}, pkgLine{Node: "node2", Status: "starting", State: "starting", Epoch: 2, AutoRun: true}},
		{"node lost: package down, failed", func(l *logb) {
			l.run("web", "node1", 1)
			l.lost("node1")
		}, pkgLine{Node: "node1", Status: "down", State: "failed", Epoch: 1, AutoRun: true}},
		{"node lost while failing: failed on it", func(l *logb) {
			l.run("web", "node1", 1)
			l.add("web", events.ServiceFailed{Service: "app", Node: "node1", Epoch: 1, Reason: "x"}, "")
			l.lost("node1")
		}, pkgLine{Node: "node1", Status: "down", State: "failed", Epoch: 1, AutoRun: true, FailedNodes: []string{"node1"}}},
		{"node halted: package keeps running until its host halts it", func(l *logb) {
			l.run("web", "node1", 1)
			l.add("node1", events.NodeHalted{By: "op"}, "")
		}, pkgLine{Node: "node1", Status: "up", State: "running", Epoch: 1, AutoRun: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := newLog(t)
			l.config(testCluster(testPkg("web", "node1", "node2", "node3")))
			l.join("node1", "node2", "node3")
			tt.build(l)
			s := l.state()
			if got := lineOf(s, "web"); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("\n got %+v\nwant %+v", got, tt.want)
			}
			if s.PackageSeq("web") != lastAbout(l.evs, "web") {
				t.Errorf("PackageSeq(web) = %d, want %d", s.PackageSeq("web"), lastAbout(l.evs, "web"))
			}
		})
	}
}

// lastAbout returns the seq of the last package-scope event about pkg.
func lastAbout(evs []events.Event, pkg string) uint64 {
	var seq uint64
	for _, e := range evs {
		if sc, _ := events.ScopeOf(e.Type()); sc == events.ScopePackage && e.Subject == pkg {
			seq = e.Seq
		}
	}
	return seq
}

func TestNodeMembership(t *testing.T) {
	l := newLog(t)
	l.config(testCluster())
	s := l.state()
	if n := s.Node("node1"); n.Up() || n.Status() != "down" || n.State() != "unknown" {
		t.Errorf("before any join: up=%v %s/%s, want down/unknown", n.Up(), n.Status(), n.State())
	}
	steps := []struct {
		ev          func()
		status, st  string
		eligibleNow bool
	}{
		{func() { l.join("node1") }, "up", "running", true},
		{func() { l.lost("node1") }, "down", "failed", false},
		{func() { l.join("node1") }, "up", "running", true},
		{func() { l.add("node1", events.NodeHalted{Reason: "maint", By: "op"}, "") }, "down", "halted", false},
		{func() { l.join("node1") }, "up", "running", true},
		{func() { l.add("node1", events.NodeFenced{Reason: "lease lost"}, "") }, "down", "failed", false},
		{func() { l.join("node1") }, "up", "running", true},
		{func() { l.add("node1", events.NodeHalted{Reason: "maint", By: "op"}, "") }, "down", "halted", false},
		{func() { l.lost("node1") }, "down", "failed", false},
	}
	for i, st := range steps {
		st.ev()
		s := l.state()
		n := s.Node("node1")
		if n.Status() != st.status || n.State() != st.st || n.Up() != st.eligibleNow {
			t.Errorf("step %d: %s/%s up=%v, want %s/%s up=%v", i, n.Status(), n.State(), n.Up(), st.status, st.st, st.eligibleNow)
		}
		if s.NodeSeq("node1") != l.last().Seq {
			t.Errorf("step %d: NodeSeq = %d, want %d", i, s.NodeSeq("node1"), l.last().Seq)
		}
	}
	// Lost while an operator held it halted: still halted by the operator
	// (`node run` lets it join), and no longer watched for a lapse.
	if n := l.state().Node("node1"); n.HaltedBy != "op" || !n.HaltedByOperator() || n.LeaseWatched() || !strings.Contains(n.Hold(), "node run node1") {
		t.Errorf("lost while halted: %+v, HaltedByOperator %v, LeaseWatched %v, hold %q", n, n.HaltedByOperator(), n.LeaseWatched(), n.Hold())
	}
}

func TestApplyIdempotent(t *testing.T) {
	l := newLog(t)
	l.config(testCluster(testPkg("web", "node1", "node2")))
	l.join("node1", "node2")
	l.run("web", "node1", 1)
	s := l.state()
	before := s.Clone()
	for _, e := range l.evs {
		if s.Apply(e) {
			t.Errorf("Apply(seq %d) again reported new", e.Seq)
		}
	}
	unsequenced := events.Event{ID: "x", Subject: "web", Data: events.PackageFailed{Node: "node1", Epoch: 1, Reason: "x"}}
	if s.Apply(unsequenced) {
		t.Error("Apply of an event without Seq reported new")
	}
	if !reflect.DeepEqual(s, before) {
		t.Error("re-applying applied events changed the state")
	}
}

func TestConfigDecodeError(t *testing.T) {
	l := newLog(t)
	l.config(testCluster(testPkg("web", "node1")))
	l.add("", events.ConfigApplied{Config: []byte(`{"cluster": 7}`), Hash: "bad"}, "")
	s := l.state()
	if s.Config == nil || s.Config.Cluster != "demo" || s.ConfigSeq != 1 {
		t.Errorf("config = %+v (seq %d), want the first one kept", s.Config, s.ConfigSeq)
	}
	if s.ConfigErr == "" {
		t.Error("ConfigErr empty, want the decode error")
	}
	l.config(testCluster())
	if s := l.state(); s.ConfigErr != "" || s.ConfigSeq != 3 {
		t.Errorf("after a good config: err %q seq %d", s.ConfigErr, s.ConfigSeq)
	}
}

func TestCloneIsDeep(t *testing.T) {
	l := newLog(t)
	l.config(testCluster(testPkg("web", "node1", "node2")))
	l.join("node1", "node2")
	l.run("web", "node1", 1)
	l.add("web", events.ServiceRestarting{Service: "app", Node: "node1", Epoch: 1, Attempt: 1}, "")
	l.add("web", events.PackageSwitchingChanged{Node: "node2", Enabled: false, By: "op"}, "")
	l.add("web", events.PackageSwitchingChanged{Enabled: true, By: "op"}, "")
	l.failed("web", "node1", 1)
	s := l.state()
	c := s.Clone()
	if !reflect.DeepEqual(s, c) {
		t.Fatal("clone differs")
	}
	l.add("web", events.PackageReset{By: "op"}, "")
	l.add("web", events.PackageSwitchingChanged{Node: "node1", Enabled: false, By: "op"}, "")
	l.add("web", events.PackageSwitchingChanged{Enabled: false, By: "op"}, "")
	l.lost("node2")
	l.place("web", "node1", 2, ReasonOperatorRun, "node1")
	for _, e := range l.evs {
		c.Apply(e)
	}
	p := s.Package("web")
	if !slices.Equal(p.FailedNodes, []string{"node1"}) || p.Services["app"].Restarts != 1 || !*p.AutoRun ||
		!slices.Equal(p.SwitchingOff, []string{"node2"}) || !s.Node("node2").Up() || p.Epoch != 1 {
		t.Errorf("changing the clone changed the original: %+v", p)
	}
}

func TestPackagesOn(t *testing.T) {
	l := newLog(t)
	l.config(testCluster(testPkg("web", "node1"), testPkg("db", "node1"), testPkg("mq", "node1")))
	l.join("node1")
	l.run("web", "node1", 1)
	l.place("db", "node1", 1, ReasonAutoRun, "")
	l.run("mq", "node1", 1)
	l.failed("mq", "node1", 1)
	if got := l.state().PackagesOn("node1"); !slices.Equal(got, []string{"db", "web"}) {
		t.Errorf("PackagesOn(node1) = %v, want [db web]", got)
	}
}

func TestAutoRunEnabled(t *testing.T) {
	off := testPkg("off", "node1")
	off.AutoRun = boolp(false)
	l := newLog(t)
	if (&State{}).AutoRunEnabled("web") {
		t.Error("no config: auto_run on")
	}
	l.config(testCluster(testPkg("web", "node1"), off))
	s := l.state()
	if !s.AutoRunEnabled("web") || s.AutoRunEnabled("off") || s.AutoRunEnabled("nope") {
		t.Error("auto_run not taken from the configuration")
	}
	l.add("off", events.PackageSwitchingChanged{Enabled: true, By: "op"}, "")
	l.config(testCluster(testPkg("web", "node1"), off))
	if !l.state().AutoRunEnabled("off") {
		t.Error("operator's enable lost by a new config")
	}
}

func TestSkip(t *testing.T) {
	l := newLog(t)
	l.config(testCluster(testPkg("web", "node1")))
	l.join("node1")
	s := l.state()
	s.Skip(5, events.PackageSubject("web", "process", "exited"))
	s.Skip(7, events.NodeSubject("node1", "joined"))
	s.Skip(8, events.ClusterSubject("config_applied"))
	s.Skip(6, events.PackageSubject("db", "package", "placed")) // at or below Seq: ignored
	if s.Seq != 8 || s.PackageSeq("web") != 5 || s.NodeSeq("node1") != 7 || s.PackageSeq("db") != 0 {
		t.Errorf("after skips: seq %d, web %d, node1 %d, db %d", s.Seq, s.PackageSeq("web"), s.NodeSeq("node1"), s.PackageSeq("db"))
	}
	if p := s.Package("web"); p.Phase != PhaseNone || p.Epoch != 0 {
		t.Errorf("a skip changed the package: %+v", p)
	}
}
