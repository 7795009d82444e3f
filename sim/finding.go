package sim

import (
	"fmt"
	"strings"

	"github.com/vmguard/vmguard/events"
	"github.com/vmguard/vmguard/internal/invariant"
)

// Finding names a class of violation the simulator found in the real
// cores and runners (not in its model) and that is written up in
// docs/sim.md, still open. A run reports violations of a known class
// apart, so that a CI run fails only on a new class; each class has the
// seed that first showed it.
type Finding string

// The open findings (docs/sim.md).
const (
	// FindingActBeforeLoss (seed 1784): a host manager that starts again
	// replays the log, then takes its lease; a node.lost the controller
	// appended in between reaches it only through its follower, and until
	// then it decides (package.starting, service.restarting) for a node
	// the log already says is lost. Its decisions are guarded by the
	// package's sequence, not the node's.
	FindingActBeforeLoss Finding = "act_before_loss"
	// FindingHaltOnHaltedNode (seed 82 of an earlier build, grace 10 s): a package halting on a node an
	// operator halted never ends if that node then goes down: the
	// controller records node.lost only for an up node, so nothing ends
	// the halt until the node comes back.
	FindingHaltOnHaltedNode Finding = "halt_on_halted_node"
	// FindingPlaceOnLostNode (seeds 721, 1201): the controller checks that the target
	// node's subjects did not move (nodeCurrent) and then appends the
	// placement guarded by the package's sequence only; a pause between
	// the two (here 1 to 8 s) lets a node.lost or node.fenced of the target
	// slip in, and the package is placed on a lost node; a failover that
	// later replaces that placement while it is not released is counted
	// here too.
	FindingPlaceOnLostNode Finding = "place_on_lost_node"
	// FindingStaleLoss (seed 480 of commit f886dd0): the controller judges a node lost (its
	// lease key missing), pauses before the append, and appends node.lost
	// after the node's host manager came back and took its lease again: a
	// host manager that was never declared lost appends nothing about its
	// node when it returns, so the node's expected sequence still holds.
	// The node runs packages the loss just released; what follows (a
	// second live epoch, acts on a lost node) is counted under this
	// finding.
	FindingStaleLoss Finding = "stale_loss"
)

// known returns the finding v belongs to, "" for none: v is new.
// staleLoss is the sequence of the first node.lost stored while its node
// held its lease (0: none).
func known(v invariant.Violation, evs []events.Event, staleLoss uint64) Finding {
	if v.Seq == 0 || int(v.Seq) > len(evs) {
		return ""
	}
	if staleLoss > 0 && v.Seq > staleLoss {
		return FindingStaleLoss
	}
	e := evs[v.Seq-1]
	switch v.Rule {
	case invariant.RuleLiveNode:
		node, _, _ := strings.Cut(strings.TrimPrefix(v.Message, "acts on node "), ",")
		if !strings.HasPrefix(v.Message, "acts on node ") || !strings.Contains(v.Message, "node.lost at seq") && !strings.Contains(v.Message, "node.fenced at seq") {
			return ""
		}
		if e.Source == events.HostSource(node) {
			return FindingActBeforeLoss
		}
		if _, ok := e.Data.(events.PackagePlaced); ok && e.Source == events.ControllerSource {
			return FindingPlaceOnLostNode
		}
	case invariant.RuleCause:
		// A failover that replaces a placement made on a lost node (the
		// finding above) while that placement is not released: the same
		// finding, one step on.
		var ep, seq uint64
		var node string
		if i := strings.Index(v.Message, "placement while epoch "); i >= 0 {
			if _, err := fmt.Sscanf(v.Message[i:], "placement while epoch %d on %s (placed at seq %d)", &ep, &node, &seq); err == nil && seq > 0 && int(seq) <= len(evs) {
				if p := evs[seq-1]; p.Source == events.ControllerSource && lostAt(evs[:seq-1], strings.TrimSuffix(node, " ")) {
					return FindingPlaceOnLostNode
				}
			}
		}
	case invariant.RuleBound:
		d, ok := e.Data.(events.PackageHalting)
		if !ok {
			return ""
		}
		node := d.Node
		if node == "" {
			return ""
		}
		halted := false
		for _, x := range evs[:v.Seq-1] {
			if x.Subject != node {
				continue
			}
			switch h := x.Data.(type) {
			case events.NodeHalted:
				halted = h.By != ""
			case events.NodeJoined, events.NodeLost, events.NodeFenced:
				halted = false
			}
		}
		if halted {
			return FindingHaltOnHaltedNode
		}
	}
	return ""
}

// Known is a violation of a known class.
type Known struct {
	Finding   Finding
	Violation invariant.Violation
}

func (k Known) String() string { return fmt.Sprintf("%s: %s", k.Finding, k.Violation) }

// lostAt reports whether the log evs says node is lost or fenced (and has
// not joined since) at its end.
func lostAt(evs []events.Event, node string) bool {
	down := false
	for _, x := range evs {
		if x.Subject != node {
			continue
		}
		switch x.Data.(type) {
		case events.NodeLost, events.NodeFenced:
			down = true
		case events.NodeJoined:
			down = false
		}
	}
	return down
}
