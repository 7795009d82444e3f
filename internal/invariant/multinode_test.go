package invariant

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/vmguard/vmguard/events"
)

// TestMultiNode: a multi-node package's instances run at once on their
// nodes, each under its own epoch, without breaking one_epoch or
// released_first (they are per node for it); two live epochs on one node
// still do; the same log with the package a failover one is two placements
// at once. A placement is judged by the type it was placed as: instances
// stay per node after the package is made failover, and a failover
// placement beside one of them is two placements.
func TestMultiNode(t *testing.T) {
	cfg := func(typ string) string {
		return `{"cluster":"t","node_timeout":"3s","guest_timeout":"3s","nodes":["n1","n2"],"packages":[
 {"name":"mon","package_type":"` + typ + `","nodes":["n1","n2"],
  "guest":{"name":"g","driver":"process","restart":"none","start_timeout":"5s"},"services":[{"name":"s","cmd":["x"],"restart":"none","halt_timeout":"1s"}]}]}`
	}
	start := func(l *logb, node string, epoch uint64, pid int) {
		g := "g-" + node
		p := l.add("mon", "", events.PackagePlaced{Node: node, Epoch: epoch, Reason: "auto_run"})
		st := l.add("mon", p.ID, events.PackageStarting{Node: node, Epoch: epoch})
		gs := l.add("mon", st.ID, events.GuestStarted{Guest: g, Node: node, Epoch: epoch})
		l.add("mon", gs.ID, events.ProcessStarted{Guest: g, Service: "s", PID: pid, RequestID: gs.ID + "/s", Epoch: epoch})
	}
	for _, tc := range []struct {
		name, typ string
		build     func(l *logb)
		want      string
	}{
		{"an instance on each node", "multi_node", func(l *logb) {
			start(l, "n1", 1, 10)
			start(l, "n2", 2, 20)
		}, ""},
		{"the same as a failover package: two placements", "failover", func(l *logb) {
			start(l, "n1", 1, 10)
			start(l, "n2", 2, 20)
		}, "epoch 2 starts while epoch 1 on n1 (placed at seq 4) is not released [released_first]"},
		{"made failover while its instances run: they stay per node", "multi_node", func(l *logb) {
			start(l, "n1", 1, 10)
			p := l.add("mon", "", events.PackagePlaced{Node: "n2", Epoch: 2, Reason: "auto_run"})
			st := l.add("mon", p.ID, events.PackageStarting{Node: "n2", Epoch: 2})
			gs := l.add("mon", st.ID, events.GuestStarted{Guest: "g-n2", Node: "n2", Epoch: 2})
			l.add("", "", events.ConfigApplied{Config: json.RawMessage(cfg("failover")), Hash: "h2"})
			// n2's start reported after the change (as under vmguard up:
			// TestUpTypeChangeGetsIn).
			l.add("mon", gs.ID, events.ProcessStarted{Guest: "g-n2", Service: "s", PID: 20, RequestID: gs.ID + "/s", Epoch: 2})
		}, ""},
		{"made failover: its placement beside a running instance is two placements", "multi_node", func(l *logb) {
			start(l, "n1", 1, 10)
			l.add("", "", events.ConfigApplied{Config: json.RawMessage(cfg("failover")), Hash: "h2"})
			start(l, "n2", 2, 20)
		}, "epoch 2 starts while epoch 1 on n1 (placed at seq 4) is not released [released_first]"},
		{"two epochs on one node", "multi_node", func(l *logb) {
			start(l, "n1", 1, 10)
			start(l, "n2", 2, 20)
			start(l, "n1", 3, 30)
		}, "epoch 3 starts while epoch 1 on n1 (placed at seq 4) is not released [released_first]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := checkOn(cfg(tc.typ), tc.build)
			wantCheck(t, got, tc.want)
			if tc.typ == "multi_node" && tc.want != "" && !strings.Contains(got, "[one_epoch]") {
				t.Errorf("two live epochs on n1 not reported as one_epoch: %q", got)
			}
		})
	}
}
