package hostmanager

import (
	"strings"
	"testing"
	"time"

	"github.com/vmguard/vmguard/events"
)

// TestFailFastState: a service with fail_fast that fails after its
// restarts, or a package with node_fail_fast that fails, leaves a pending
// fail-fast in the state (which the runner answers by fencing the node);
// node.fenced after it ends it, a replay rebuilds it, and failures
// without the setting or on another node leave none.
func TestFailFastState(t *testing.T) {
	for _, tc := range []struct {
		name, svc, guest string
		want             string // "" = no fail-fast
	}{
		{"service fail_fast", "restart: none\nfail_fast: true", "", "fail_fast: service a of package web failed"},
		{"node_fail_fast", "restart: none", "", "node_fail_fast: package web failed"},
		{"neither", "restart: none", "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			yaml := cfgYAML(tc.svc, tc.guest)
			if tc.name == "node_fail_fast" {
				yaml = strings.Replace(yaml, "    guest:\n", "    node_fail_fast: true\n    guest:\n", 1)
			}
			h := newHarness(t, yaml)
			h.start()
			h.advance(time.Second)
			h.exit("a", 1)
			h.settle()
			if h.s.Package("web").Inst != nil {
				t.Fatalf("web still runs after its service failed: %+v", h.s.Package("web").Inst)
			}
			ff := h.s.FailFast
			if tc.want == "" {
				if ff != nil {
					t.Fatalf("fail-fast %+v without fail_fast or node_fail_fast", ff)
				}
				return
			}
			if ff == nil || ff.Package != "web" || !strings.HasPrefix(ff.Reason, tc.want) {
				t.Fatalf("fail-fast = %+v, want one for web starting %q", ff, tc.want)
			}
			// A host manager restarted before it fenced finds it again.
			h.crash()
			if h.s.FailFast == nil || *h.s.FailFast != *ff {
				t.Fatalf("after a replay: fail-fast %+v, want %+v", h.s.FailFast, ff)
			}
			// Another node's fence does not answer it; this node's does.
			h.add("/vmguard/host/node2", "node2", "", events.NodeFenced{Reason: "x", Since: t0})
			if h.s.FailFast == nil {
				t.Fatal("node2's node.fenced ended node1's fail-fast")
			}
			h.add("/vmguard/host/"+me, me, "", events.NodeFenced{Reason: ff.Reason, Since: t0})
			if h.s.FailFast != nil {
				t.Fatalf("fail-fast %+v still pending after this node's node.fenced", h.s.FailFast)
			}
			h.crash()
			if h.s.FailFast != nil {
				t.Fatal("a replay brought back a fail-fast the log shows answered")
			}
		})
	}
}

// TestResourceFailsPackage: a generic resource the package watches while it
// runs (during_package_start) going down fails the package on this node;
// one checked only before the start (before_package_start) leaves it
// running; a placement here while a resource is down fails at once.
func TestResourceFailsPackage(t *testing.T) {
	res := func(eval string) string {
		return strings.Replace(cfgYAML("", ""), "    guest:\n",
			"    resources:\n      - name: disk\n        up: \">= 10\"\n        evaluation: "+eval+"\n    guest:\n", 1)
	}
	set := func(h *harness, node, status, value string) {
		h.add("/vmguard/cli/mon", node, "", events.NodeResourceSet{Name: "disk", Status: status, Value: value})
	}
	t.Run("during: down fails the running package", func(t *testing.T) {
		h := newHarness(t, res("during_package_start"))
		set(h, me, "up", "20")
		h.start()
		set(h, "node2", "down", "") // another node's resource: nothing here
		if h.s.Package("web").Inst.Stopping() {
			t.Fatal("node2's resource stopped web on node1")
		}
		set(h, me, "up", "5")
		got := h.settle()
		if len(got) == 0 || got[len(got)-1] != "package.failed" {
			t.Fatalf("after the resource fell below its criterion: %v, want it to end in package.failed", got)
		}
		if d := h.last().Data.(events.PackageFailed); !strings.Contains(d.Reason, "resource disk on node "+me+" is up (value 5), the package needs >= 10") {
			t.Errorf("package.failed reason %q", d.Reason)
		}
	})
	t.Run("before: down leaves it running", func(t *testing.T) {
		h := newHarness(t, res("before_package_start"))
		set(h, me, "up", "20")
		h.start()
		set(h, me, "down", "")
		if got := h.settle(); len(got) != 0 {
			t.Fatalf("a before_package_start resource going down decided %v", got)
		}
	})
	t.Run("placed while down: fails at once", func(t *testing.T) {
		h := newHarness(t, res("before_package_start"))
		h.place(me, "auto_run")
		got := h.settle()
		if len(got) != 1 || got[0] != "package.failed" {
			t.Fatalf("placed with the resource never set: %v, want package.failed", got)
		}
		if d := h.last().Data.(events.PackageFailed); !strings.Contains(d.Reason, "resource disk on node "+me+" is never set") {
			t.Errorf("reason %q", d.Reason)
		}
	})
}
