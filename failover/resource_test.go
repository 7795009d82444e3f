package failover

import (
	"strings"
	"testing"

	"github.com/vmguard/vmguard/config"
	"github.com/vmguard/vmguard/events"
)

// TestResourcePlacement: a package that needs a generic resource is placed
// only on a node where the resource is up by its criterion; a resource
// coming up there places a waiting package, caused by the resource_set;
// a failure moves it to the next node whose resource is up.
func TestResourcePlacement(t *testing.T) {
	web := testPkg("web", "node1", "node2", "node3")
	web.Resources = []config.Resource{{Name: "disk", Up: ">= 10"}}
	set := func(l *logb, node, status, value string) events.Event {
		return l.add(node, events.NodeResourceSet{Name: "disk", Status: status, Value: value, By: "mon"}, "")
	}
	for _, tc := range []struct {
		name  string
		build func(l *logb)
		want  string
		note  string
	}{
		{"never set: waits", func(l *logb) { l.config(testCluster(web)); l.join("node1", "node2") }, "",
			"resource disk is not up on node node1"},
		{"below the criterion: waits", func(l *logb) {
			l.config(testCluster(web))
			l.join("node1", "node2")
			set(l, "node1", "up", "9")
		}, "", "resource disk is not up on node node1"},
		{"up on node2 only: placed there, caused by it", func(l *logb) {
			l.config(testCluster(web))
			l.join("node1", "node2")
			set(l, "node2", "up", "10")
		}, "web->node2 epoch=1 reason=auto_run cause=e4", ""},
		{"down again before anything: nothing", func(l *logb) {
			l.config(testCluster(web))
			l.join("node1", "node2")
			set(l, "node1", "up", "20")
			set(l, "node1", "down", "")
		}, "", ""},
		{"failed on node1: next node whose resource is up", func(l *logb) {
			l.config(testCluster(web))
			l.join("node1", "node2", "node3")
			set(l, "node1", "up", "50")
			set(l, "node3", "up", "50")
			l.run("web", "node1", 1)
			l.failed("web", "node1", 1)
		}, "web->node3 epoch=2 reason=failover prev=node1 cause=e10", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, s, _ := decideCase(t, tc.build, tc.want, "web", "")
			if tc.note != "" {
				if err := s.Eligible("web", "node1"); err == nil || !strings.Contains(err.Error(), tc.note) {
					t.Errorf("Eligible(web, node1) = %v, want %q", err, tc.note)
				}
				if n := s.Note("web"); !strings.Contains(n, "resources not up: disk on node1, disk on node2") {
					t.Errorf("Note(web) = %q: want it to name the resources that keep the nodes out", n)
				}
			}
		})
	}
}

// TestResourceSetCommand: `vmguard resource set` checks the node, the name
// and the value.
func TestResourceSetCommand(t *testing.T) {
	l := newLog(t)
	l.config(testCluster(testPkg("web", "node1")))
	s := l.state()
	for _, tc := range []struct {
		node, name, value string
		want              string
		err               bool
	}{
		{"node1", "disk", "up", "node.resource_set node1", false},
		{"node1", "disk", "down", "node.resource_set node1", false},
		{"node1", "disk", "042", "node.resource_set node1", false},
		{"node1", "disk", "many", `resource disk: "many": want up, down or a whole number`, true},
		{"node1", "a.b", "up", `"a.b" is not a valid name`, true},
		{"node9", "disk", "up", `unknown node "node9"`, true},
	} {
		evs, err := s.Command(Command{Op: OpResourceSet, Node: tc.node, Resource: tc.name, Value: tc.value, By: "ann"})
		if tc.err {
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("%s %s %s: err %v, want %q", tc.node, tc.name, tc.value, err, tc.want)
			}
			continue
		}
		if err != nil || len(evs) != 1 || !strings.HasPrefix(brief(evs), tc.want) {
			t.Fatalf("%s %s %s: %q %v", tc.node, tc.name, tc.value, brief(evs), err)
		}
		d := evs[0].Data.(events.NodeResourceSet)
		if tc.value == "042" && (d.Status != "up" || d.Value != "42") {
			t.Errorf("a value sets the resource up with the number: %+v", d)
		}
	}
}
