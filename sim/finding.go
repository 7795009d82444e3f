package sim

import (
	"fmt"

	"github.com/vmguard/vmguard/internal/invariant"
)

// Finding names a class of violation the simulator found in the real
// cores and runners (not in its model). A class written up in docs/sim.md
// and still open is reported apart (Known), so that a CI run fails only on
// a new class. None is open now: the five below are fixed, and a run that
// breaks a promise their way fails like any other (their seeds replay
// clean: TestFindingSeeds).
type Finding string

// The findings of issue 16, fixed (docs/sim.md, "Findings").
const (
	// FindingActBeforeLoss (seed 1784): a host manager that started again
	// replayed the log, then took its lease; a node.lost the controller
	// appended in between reached it only through its follower, and until
	// then it decided for a node the log said was lost. Fixed: the host
	// manager records its lease take (node.joined or node.lease_taken,
	// guarded by the node's last sequence) and acts on nothing until the
	// log stored it; a loss stored first makes the record conflict, and is
	// read before anything is decided (hostmanager.Member.Recorded).
	FindingActBeforeLoss Finding = "act_before_loss"
	// FindingHaltOnHaltedNode (seed 82 of an earlier build, grace 10 s): a
	// package halting on a node an operator halted never ended if that
	// node then went down: the controller recorded node.lost only for an up
	// node. Fixed: it records it for a node an operator halted too
	// (failover.NodeState.LeaseWatched), which stays halted by the operator.
	FindingHaltOnHaltedNode Finding = "halt_on_halted_node"
	// FindingPlaceOnLostNode (seeds 721, 1201, 2108): a controller pause
	// between its node-current check and its append (guarded by the
	// package's sequence only) let a node.lost or node.fenced of the target
	// in, and the package was placed on a lost node. Fixed: such a
	// placement is void in every fold (hostmanager, failover, invariant):
	// released at once, never started, placed anew.
	FindingPlaceOnLostNode Finding = "place_on_lost_node"
	// FindingStaleLoss (seed 480 of commit f886dd0): the controller judged
	// a node lost, paused before the append, and appended node.lost after
	// the node's host manager came back and took its lease again without
	// writing anything about its node, so the node's expected sequence
	// still held. Fixed by the record of FindingActBeforeLoss: the stale
	// loss now conflicts with it.
	FindingStaleLoss Finding = "stale_loss"
	// FindingDeposedPlacement (seed 2661, dependencies on): a controller
	// decided a placement of pkg4 on node2, paused before its append and
	// lost the lead; the new leader placed pkg3, which pkg4 excludes, on
	// node2 and it started; the stale append then landed (pkg4's own
	// subjects had not moved) and pkg4 started beside pkg3. Fixed: a
	// placement is appended in one atomic batch with a package.checked
	// marker on each package linked to it, guarded by that package's
	// sequence as the controller read it (failover.Runner.guarded).
	FindingDeposedPlacement Finding = "deposed_placement"
)

// known returns the open finding v belongs to, "" for none: none is open,
// so every violation counts.
func known(invariant.Violation) Finding { return "" }

// Known is a violation of a known, open class.
type Known struct {
	Finding   Finding
	Violation invariant.Violation
}

func (k Known) String() string { return fmt.Sprintf("%s: %s", k.Finding, k.Violation) }
