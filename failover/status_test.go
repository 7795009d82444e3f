package failover

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/vmguard/vmguard/events"
)

func TestBuildViewEmpty(t *testing.T) {
	v := BuildView(&State{})
	var b strings.Builder
	if err := v.WriteText(&b, true); err != nil {
		t.Fatal(err)
	}
	want := "CLUSTER          STATUS\n(no configuration) down\n"
	if b.String() != want {
		t.Errorf("got %q, want %q", b.String(), want)
	}
	j, _ := json.Marshal(v)
	if string(j) != `{"cluster":"","status":"down","seq":0,"nodes":null,"packages":null}` {
		t.Errorf("json %s", j)
	}
}

func TestBuildView(t *testing.T) {
	l := newLog(t)
	l.config(testCluster(testPkg("web", "node1", "node2"), testPkg("db", "node2")))
	l.join("node1", "node2", "node9")
	l.run("web", "node1", 1)
	l.add("web", events.ServiceRestarting{Service: "app", Node: "node1", Epoch: 1, Attempt: 2, RestartsLeft: 1}, "")
	l.run("old", "node2", 4) // a package no longer configured, still running
	l.run("db", "node2", 1)
	l.failed("db", "node2", 1)
	l.add("web", events.PackageSwitchingChanged{Node: "node2", Enabled: false, By: "op"}, "")
	l.add("", events.ConfigApplied{Config: []byte(`{"nodes": 5}`), Hash: "x"}, "")
	v := BuildView(l.state())

	if v.Cluster != "demo" || v.Status != "up" || v.Seq != l.last().Seq || !strings.Contains(v.ConfigError, "decode config") {
		t.Errorf("cluster: %+v", v)
	}
	var nodes []string
	for _, n := range v.Nodes {
		nodes = append(nodes, n.Name+":"+n.Status+"/"+n.State+"["+strings.Join(n.Packages, ",")+"]")
	}
	if got := strings.Join(nodes, " "); got != "node1:up/running[web] node2:up/running[old] node3:down/unknown[] node9:up/running[]" {
		t.Errorf("nodes: %s", got)
	}
	var pkgs []string
	for _, p := range v.Packages {
		pkgs = append(pkgs, p.Name+":"+p.Status+"/"+p.State+"/"+p.AutoRun+"@"+p.Node)
	}
	if got := strings.Join(pkgs, " "); got != "web:up/running/enabled@node1 db:down/failed/enabled@ old:up/running/disabled@node2" {
		t.Errorf("packages: %s", got)
	}
	web, db, old := v.Packages[0], v.Packages[1], v.Packages[2]
	if web.Services[0].Restarts != 2 || web.Services[0].MaxRestarts != "3" || web.Services[0].Status != "restarting" {
		t.Errorf("web services: %+v", web.Services)
	}
	if web.Nodes[0].Type != "Primary" || !web.Nodes[0].Current || web.Nodes[1].Type != "Alternate" || web.Nodes[1].Switching != "disabled" {
		t.Errorf("web nodes: %+v", web.Nodes)
	}
	if !db.Nodes[0].FailedOn || db.DownReason != "service_failed (service app)" || !strings.Contains(db.Note, "failed on every node (node2)") {
		t.Errorf("db: %+v", db)
	}
	if old.Note != "not in the configuration in force" || old.Epoch != 4 {
		t.Errorf("old: %+v", old)
	}

	var b strings.Builder
	if err := v.WriteText(&b, false); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"  config error: decode config",
		"    web            up           running      enabled      node1\n",
		"UNOWNED_PACKAGES\n\n    PACKAGE        STATUS       STATE        AUTO_RUN     NODE\n    db             down         failed       enabled      unowned\n      Note: failed on every node (node2)",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("text lacks %q:\n%s", want, b.String())
		}
	}
	if strings.Contains(b.String(), "Policy_Parameters") {
		t.Error("non-verbose text shows policies")
	}
	b.Reset()
	if err := v.WriteText(&b, true); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"      app             restarting   2            3\n",
		"      Primary      up           enabled      node1        (current)\n",
		"      Alternate    up           disabled     node2\n",
		"      Primary      up           enabled      node2        (failed)\n",
		"      Down: service_failed (service app)\n",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("verbose text lacks %q:\n%s", want, b.String())
		}
	}
}

type failWriter struct{}

func (failWriter) Write([]byte) (int, error) { return 0, errors.New("disk full") }

func TestWriteTextError(t *testing.T) {
	l := newLog(t)
	l.config(testCluster(testPkg("web", "node1")))
	if err := BuildView(l.state()).WriteText(failWriter{}, true); err == nil {
		t.Error("WriteText to a failing writer returned nil")
	}
}

func TestRowKeepsColumnsApart(t *testing.T) {
	got := row(2, []int{5, 5}, "a-very-long-name", "up", "x")
	if got != "  a-very-long-name up   x" {
		t.Errorf("row = %q", got)
	}
}

// TestViewResourcesAndHeldFence: status -v lists each node's generic
// resources (cmgetresource), and a node held out by a fail-fast fence says
// so and how to end it.
func TestViewResourcesAndHeldFence(t *testing.T) {
	l := newLog(t)
	l.config(testCluster(testPkg("web", "node1", "node2")))
	l.join("node1", "node2")
	l.add("node1", events.NodeResourceSet{Name: "san", Status: "up"}, "")
	l.add("node1", events.NodeResourceSet{Name: "licences", Status: "up", Value: "3"}, "")
	l.add("node2", events.NodeFenced{Reason: "fail_fast: service app of package web failed", Hold: true}, "")
	v := BuildView(l.state())
	var b strings.Builder
	if err := v.WriteText(&b, true); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"    GENERIC_RESOURCE   STATUS   VALUE\n    licences           up       3\n    san                up\n",
		"    Fenced and held (fail-fast): fail_fast: service app of package web failed; it stays out until `vmguard node run node2`\n",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("status -v lacks %q:\n%s", want, b.String())
		}
	}
	b.Reset()
	if err := v.WriteText(&b, false); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(b.String(), "GENERIC_RESOURCE") {
		t.Errorf("status without -v lists resources:\n%s", b.String())
	}
}
