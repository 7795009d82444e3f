package hostmanager

import (
	"time"

	"github.com/vmguard/vmguard/events"
)

// Member is this node's membership as its host manager sees it: a pure
// fold of the log's events about the node (joined, lost, fenced, halted,
// frozen, thawed) and of what the runner observed (the lease taken, lost or
// taken by another instance, a clean stop asked for, its own appends), with
// Decide saying what to append next and MayAct whether packages may be
// decided about and acted on. Like State it never reads a clock, the
// network or a logger: time comes in as arguments. The runner feeds it and
// appends what it decides; it owns no membership flag of its own.
//
// The zero value is not usable: create it with NewMember.
type Member struct {
	// Node is the node this host manager runs.
	Node string `json:"node"`
	// Seq is the stream sequence of the last node event applied.
	Seq uint64 `json:"seq"`

	// Joined: the log shows the node joined since its last lost, fenced or
	// halted.
	Joined bool `json:"joined"`
	// MayJoin: the host manager joins the node when the log does not show
	// it joined (at start, after lost, fenced or its own clean stop); not
	// after an operator's halt, which keeps it out until `node run`.
	MayJoin bool `json:"may_join"`
	// Frozen: node.frozen and no node.thawed since; FrozenUntil its end
	// (zero: none given). A freeze counts only until FrozenUntil (Frozen).
	Frozen      bool      `json:"frozen"`
	FrozenUntil time.Time `json:"frozen_until,omitzero"`

	// Held: the lease is held (observed).
	Held bool `json:"held"`
	// Recorded: the lease this instance holds is on record: since it took
	// the lease (last time), it appended node.joined or node.lease_taken
	// guarded by the node's last sequence as it had read it, and the log
	// stored it. Until then MayAct is false: a node.lost the controller
	// judged while the lease was away must either conflict with the record
	// (stale_loss) or make the record conflict and be read first
	// (act_before_loss); see docs/design-notes.md.
	Recorded bool `json:"recorded"`
	// Fenced: the node stopped its guests by itself after losing its lease
	// and the log does not say so yet; FenceReason and FenceTime say why and
	// when; FenceSeq is the node.fenced appended, once it is.
	Fenced      bool      `json:"fenced"`
	FenceReason string    `json:"fence_reason,omitempty"`
	FenceTime   time.Time `json:"fence_time,omitzero"`
	FenceSeq    uint64    `json:"fence_seq,omitempty"`
	// FenceHold: the fence keeps the node out until an operator's `node
	// run` (fail-fast); node.fenced says so (Hold).
	FenceHold bool `json:"fence_hold,omitempty"`
	// JoinSeq is the node.joined appended and not yet read back.
	JoinSeq uint64 `json:"join_seq,omitempty"`
	// Resume: node.fenced was read back, or a freeze ended: every package
	// is to be processed again (MemberResume).
	Resume bool `json:"resume"`
	// Shutdown: a clean stop (HaltOnExit) is halting the node's packages.
	Shutdown bool `json:"shutdown"`
	// Superseded: another instance of this node's host manager took the
	// lease; this one steps down.
	Superseded bool `json:"superseded"`
}

// NewMember returns the membership of node before any event: not joined,
// free to join.
func NewMember(node string) *Member { return &Member{Node: node, MayJoin: true} }

// FrozenAt reports whether the node is frozen at now: node.frozen read,
// no node.thawed, and its end (if any) not passed. A freeze whose end
// passed counts no more even before the controller records node.thawed:
// the guard's deadline and the agents' fence are bound to that end too.
func (m *Member) FrozenAt(now time.Time) bool {
	return m.Frozen && (m.FrozenUntil.IsZero() || now.Before(m.FrozenUntil))
}

// MayAct reports whether packages may be decided about and acted on at
// now: the lease is held and its take is on record (Recorded), the node
// did not fence itself (or the log says so now), no other instance took
// over, and it is not frozen.
func (m *Member) MayAct(now time.Time) bool {
	return m.Held && m.Recorded && !m.Fenced && !m.Superseded && !m.FrozenAt(now)
}

// Apply folds a node event about m.Node and reports whether it was new;
// events about other nodes, other scopes, or at or below Seq change
// nothing.
func (m *Member) Apply(e events.Event) bool {
	if e.Subject != m.Node || e.Seq == 0 || e.Seq <= m.Seq {
		return false
	}
	switch d := e.Data.(type) {
	case events.NodeJoined:
		m.Joined, m.JoinSeq = true, 0
	case events.NodeLost:
		// A node an operator halted (or a fail-fast fence holds) that is
		// then lost stays out until `node run`: the loss ends what runs
		// there, not the operator's word.
		m.Joined, m.MayJoin = false, m.MayJoin || m.Joined
	case events.NodeFenced:
		// A held fence (fail-fast) keeps the node out until `node run`,
		// whose node.joined comes from the operator.
		m.Joined, m.MayJoin = false, !d.Hold
	case events.NodeHalted:
		// An operator's halt (by someone) keeps the node out until `node
		// run`; the host manager's own clean stop (no by) does not: the
		// next host manager of the node joins it.
		m.Joined, m.MayJoin = false, d.By == ""
	case events.NodeFrozen:
		m.Frozen, m.FrozenUntil = true, d.Until
	case events.NodeThawed:
		if m.Frozen {
			m.Frozen, m.FrozenUntil, m.Resume = false, time.Time{}, true
		}
	case events.NodeTakenOver, events.NodeDrained, events.NodeResumed, events.NodeLeaseTaken:
	default:
		return false
	}
	m.Seq = e.Seq
	if m.FenceSeq > 0 && e.Seq >= m.FenceSeq {
		// The log now says what the node did by itself: the package core
		// halts its instances, which may be worked on again.
		m.Fenced, m.FenceSeq, m.Resume = false, 0, true
	}
	return true
}

// ObservationKind names what the runner observed.
type ObservationKind int

// What the runner observes.
const (
	// ObserveLeaseTaken: the lease keeper took the lease (at start, or
	// again after losing it); the take is not on record yet.
	ObserveLeaseTaken ObservationKind = iota + 1
	// ObserveLeaseLost: the lease could not be renewed in time, or was
	// deleted (Reason, At). Unless the node is frozen at At, the keeper
	// stopped the guests: the node is fenced.
	ObserveLeaseLost
	// ObserveSuperseded: another instance of this node's host manager took
	// the lease.
	ObserveSuperseded
	// ObserveShutdown: a clean stop (HaltOnExit) was asked for at At.
	ObserveShutdown
	// ObserveJoinAppended: the node.joined Decide asked for was appended at
	// Seq.
	ObserveJoinAppended
	// ObserveFenceAppended: the node.fenced Decide asked for was appended at
	// Seq.
	ObserveFenceAppended
	// ObserveResumed: the runner processed every package (MemberResume).
	ObserveResumed
	// ObserveFence: the runner fenced the node by itself (a guest its
	// driver could not stop, even forced: Reason, At): it stopped every
	// guest and must record node.fenced.
	ObserveFence
	// ObserveLeaseRecorded: the node.lease_taken Decide asked for was
	// appended (guarded by the node's last sequence) at Seq.
	ObserveLeaseRecorded
)

// Observation is one thing the runner saw happen.
type Observation struct {
	Kind   ObservationKind
	Reason string
	// Hold (ObserveFence): the fence keeps the node out until `node run`.
	Hold bool
	At   time.Time
	Seq  uint64
}

// Observe folds what the runner observed.
func (m *Member) Observe(o Observation) {
	switch o.Kind {
	case ObserveLeaseTaken:
		m.Held, m.Recorded = true, false
	case ObserveLeaseLost:
		m.Held = false
		if !m.Fenced && !m.FrozenAt(o.At) {
			m.Fenced, m.FenceReason, m.FenceTime, m.FenceSeq, m.FenceHold = true, o.Reason, o.At, 0, false
		}
	case ObserveSuperseded:
		m.Superseded, m.Held = true, false
	case ObserveShutdown:
		// A frozen node keeps its guests running: a stop while frozen
		// leaves them, as a stop without HaltOnExit does.
		if !m.FrozenAt(o.At) {
			m.Shutdown = true
		}
	case ObserveJoinAppended:
		m.JoinSeq, m.Recorded = o.Seq, true
	case ObserveLeaseRecorded:
		m.Recorded = true
	case ObserveFenceAppended:
		m.FenceSeq = o.Seq
	case ObserveResumed:
		m.Resume = false
	case ObserveFence:
		m.Fenced, m.FenceReason, m.FenceTime, m.FenceSeq, m.FenceHold = true, o.Reason, o.At, 0, o.Hold
	}
}

// MemberAction is what Decide asks the runner to do about the membership.
type MemberAction int

// Outcomes of Member.Decide.
const (
	// MemberNone: nothing.
	MemberNone MemberAction = iota
	// MemberAppendFenced: append node.fenced (FenceReason, since
	// FenceTime), then ObserveFenceAppended.
	MemberAppendFenced
	// MemberResume: process every package again (the fence is recorded, or
	// a freeze ended), then ObserveResumed.
	MemberResume
	// MemberAppendJoined: append node.joined, guarded by the node's last
	// sequence, then ObserveJoinAppended.
	MemberAppendJoined
	// MemberAppendLeaseTaken: append node.lease_taken, guarded by the
	// node's last sequence, then ObserveLeaseRecorded; on a conflict, read
	// the node's newer events and decide again.
	MemberAppendLeaseTaken
)

// String names the action.
func (a MemberAction) String() string {
	switch a {
	case MemberAppendFenced:
		return "append node.fenced"
	case MemberResume:
		return "resume"
	case MemberAppendJoined:
		return "append node.joined"
	case MemberAppendLeaseTaken:
		return "append node.lease_taken"
	}
	return "none"
}

// Decide returns what the membership needs next at now. Outcomes, in
// order:
//   - not holding the lease, or superseded: nothing (nothing can be
//     written on the node's behalf);
//   - fenced and node.fenced not appended: append node.fenced;
//   - fenced, node.fenced appended but not read back: nothing;
//   - the lease take not on record: append node.joined if the node may
//     join now (as below), else node.lease_taken (both guarded by the
//     node's last sequence: MayAct waits for one of them);
//   - a fence recorded or a freeze ended: resume (process every package);
//   - frozen: nothing (no decision about a frozen node);
//   - not joined, free to join, no join on its way, not stopping: append
//     node.joined;
//   - otherwise nothing.
func (m *Member) Decide(now time.Time) MemberAction {
	switch {
	case !m.Held || m.Superseded:
		return MemberNone
	case m.Fenced && m.FenceSeq == 0:
		return MemberAppendFenced
	case m.Fenced:
		return MemberNone
	case !m.Recorded && m.mayJoin(now):
		return MemberAppendJoined
	case !m.Recorded:
		return MemberAppendLeaseTaken
	case m.Resume && !m.FrozenAt(now):
		return MemberResume
	case m.FrozenAt(now):
		return MemberNone
	case m.mayJoin(now):
		return MemberAppendJoined
	}
	return MemberNone
}

// mayJoin reports whether the node is to join at now: the log does not
// show it joined, it is free to join, no join is on its way, it is not
// stopping and not frozen.
func (m *Member) mayJoin(now time.Time) bool {
	return !m.Joined && m.MayJoin && m.JoinSeq == 0 && !m.Shutdown && !m.FrozenAt(now)
}
