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
