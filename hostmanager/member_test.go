package hostmanager

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"pgregory.net/rapid"

	"github.com/vmguard/vmguard/events"
)

// memberSim drives a Member with one-word steps, the way the runner does:
// node events get the next stream sequence, an append reserves the
// sequence its event is read back at, and the clock moves only by tick.
type memberSim struct {
	m   *Member
	seq uint64
	now time.Time
	// ours are the node events the core asked for, appended and not yet
	// read back, in order, with their sequences.
	ours []events.Event
	// log is every node event applied, in order.
	log []events.Event
}

func newMemberSim() *memberSim { return &memberSim{m: NewMember(me), now: t0} }

// event applies a node event from someone else at the next sequence; the
// log delivers in order, so our appended events come first.
func (s *memberSim) event(d events.Payload) {
	for s.readBack() {
	}
	s.seq++
	e := events.Event{ID: fmt.Sprintf("n%d", s.seq), Subject: me, Seq: s.seq, Time: s.now, Data: d}
	s.m.Apply(e)
	s.log = append(s.log, e)
}

// appendOurs is the runner appending what the core decided: it reserves a
// sequence, reports it, and the event is read back later (readBack).
func (s *memberSim) appendOurs(d events.Payload, kind ObservationKind) {
	s.seq++
	s.ours = append(s.ours, events.Event{ID: fmt.Sprintf("n%d", s.seq), Subject: me, Seq: s.seq, Time: s.now, Data: d, Source: HostSource(me)})
	s.m.Observe(Observation{Kind: kind, Seq: s.seq, At: s.now})
}

// readBack applies the oldest of our appended events.
func (s *memberSim) readBack() bool {
	if len(s.ours) == 0 {
		return false
	}
	e := s.ours[0]
	s.ours = s.ours[1:]
	s.m.Apply(e)
	s.log = append(s.log, e)
	return true
}

// act carries out Decide once and returns what it decided.
func (s *memberSim) act() MemberAction {
	a := s.m.Decide(s.now)
	switch a {
	case MemberAppendFenced:
		s.appendOurs(events.NodeFenced{Reason: s.m.FenceReason, Since: s.m.FenceTime, Hold: s.m.FenceHold}, ObserveFenceAppended)
	case MemberAppendJoined:
		s.appendOurs(events.NodeJoined{}, ObserveJoinAppended)
	case MemberAppendLeaseTaken:
		s.appendOurs(events.NodeLeaseTaken{Holder: "h"}, ObserveLeaseRecorded)
	case MemberResume:
		s.m.Observe(Observation{Kind: ObserveResumed})
	}
	return a
}

// step runs one step by name; it reports an unknown step as an error.
func (s *memberSim) step(st string) error {
	word, arg, _ := strings.Cut(st, " ")
	switch word {
	case "joined":
		s.event(events.NodeJoined{})
	case "lost":
		s.event(events.NodeLost{Reason: "lease expired"})
	case "fenced":
		s.event(events.NodeFenced{Reason: "elsewhere"})
	case "halted":
		s.event(events.NodeHalted{Reason: "x", By: arg})
	case "frozen":
		var until time.Time
		if arg != "" {
			d, err := time.ParseDuration(arg)
			if err != nil {
				return err
			}
			until = s.now.Add(d)
		}
		s.event(events.NodeFrozen{Until: until, By: "op"})
	case "thawed":
		s.event(events.NodeThawed{By: "op"})
	case "drained":
		s.event(events.NodeDrained{By: "op"})
	case "taken":
		s.m.Observe(Observation{Kind: ObserveLeaseTaken, At: s.now})
	case "lease-lost":
		s.m.Observe(Observation{Kind: ObserveLeaseLost, Reason: "not renewed", At: s.now})
	case "superseded":
		s.m.Observe(Observation{Kind: ObserveSuperseded, At: s.now})
	case "shutdown":
		s.m.Observe(Observation{Kind: ObserveShutdown, At: s.now})
	case "unstoppable":
		s.m.Observe(Observation{Kind: ObserveFence, Reason: "guest cannot be stopped", At: s.now})
	case "fail-fast":
		s.m.Observe(Observation{Kind: ObserveFence, Reason: "fail_fast: service a of package web failed", At: s.now, Hold: true})
	case "operator-run":
		s.event(events.NodeJoined{By: "op"})
	case "act":
		s.act()
	case "read-back":
		s.readBack()
	case "tick":
		d, err := time.ParseDuration(arg)
		if err != nil {
			return err
		}
		s.now = s.now.Add(d)
	default:
		return fmt.Errorf("unknown step %q", st)
	}
	return nil
}

func TestMemberDecide(t *testing.T) {
	tests := []struct {
		name  string
		steps string // steps separated by ", "
		want  MemberAction
		act   bool // MayAct after the steps
	}{
		{"before the lease: nothing", "", MemberNone, false},
		// Packages are acted on once the lease take is on record: the join
		// (or node.lease_taken) appended with the node's last sequence,
		// before it is read back.
		{"lease taken, never joined: join", "taken", MemberAppendJoined, false},
		{"join appended, not read back: acts", "taken, act", MemberNone, true},
		{"joined: acts", "taken, act, read-back", MemberNone, true},
		// act_before_loss and stale_loss (sim findings): a host manager that
		// finds the node joined records its lease take before it acts.
		{"joined by an earlier instance: record the take, no act yet", "joined, taken", MemberAppendLeaseTaken, false},
		{"joined by an earlier instance: take recorded, acts", "joined, taken, act", MemberNone, true},
		{"take recorded and read back: no second record", "joined, taken, act, read-back", MemberNone, true},
		{"a loss read before the record: join instead, no act yet", "joined, taken, lost", MemberAppendJoined, false},
		{"lost while running: joins again", "joined, taken, act, lost", MemberAppendJoined, true},
		{"operator halt: stays out", "joined, taken, act, halted op", MemberNone, true},
		{"operator halt, then lost: stays out (halt_on_halted_node)", "joined, taken, act, halted op, lost", MemberNone, true},
		{"operator halt, restarted: records the take, no join", "joined, halted op, taken", MemberAppendLeaseTaken, false},
		{"own clean stop recorded: the next instance joins", "joined, halted, taken", MemberAppendJoined, false},
		{"lease lost: fenced, no act", "joined, taken, act, lease-lost", MemberNone, false},
		{"lease back after a fence: record it", "joined, taken, act, lease-lost, taken", MemberAppendFenced, false},
		{"fence appended, not read back: still no act", "joined, taken, act, lease-lost, taken, act", MemberNone, false},
		{"fence read back: join first (the take's record)", "joined, taken, act, read-back, lease-lost, taken, act, read-back", MemberAppendJoined, false},
		{"after the fence and the join: resume", "joined, taken, act, read-back, lease-lost, taken, act, read-back, act", MemberResume, true},
		{"unstoppable guest: fence recorded", "joined, taken, act, unstoppable", MemberAppendFenced, false},
		{"fail-fast: fence recorded", "joined, taken, act, fail-fast", MemberAppendFenced, false},
		{"fail-fast fence read back: resume", "joined, taken, act, read-back, fail-fast, act, read-back", MemberResume, true},
		{"fail-fast fence holds: no join by itself", "joined, taken, act, read-back, fail-fast, act, read-back, act", MemberNone, true},
		{"fail-fast fence held, then lost: still held out", "joined, taken, act, read-back, fail-fast, act, read-back, act, lost", MemberNone, true},
		{"fail-fast fence ended by node run", "joined, taken, act, read-back, fail-fast, act, read-back, act, operator-run", MemberNone, true},
		{"superseded: nothing ever", "joined, taken, superseded, lost, taken", MemberNone, false},
		{"shutdown before the record: lease_taken, no join", "taken, shutdown", MemberAppendLeaseTaken, false},
		{"shutdown: no join", "taken, act, read-back, lost, shutdown", MemberNone, true},
		{"frozen: no act", "joined, taken, act, frozen 1m", MemberNone, false},
		{"frozen: a lease loss does not fence, the take is recorded", "joined, taken, act, frozen 1m, lease-lost, taken", MemberAppendLeaseTaken, false},
		{"frozen: a clean stop leaves the guests", "joined, taken, act, frozen 1m, shutdown, thawed", MemberResume, true},
		{"frozen, lost meanwhile: no join", "joined, taken, act, frozen 1m, lost", MemberNone, false},
		{"thawed: resume", "joined, taken, act, frozen 1m, thawed", MemberResume, true},
		{"freeze end passed before the thaw is recorded: acts", "joined, taken, act, frozen 1m, tick 1m", MemberNone, true},
		{"freeze end passed: a lease loss fences", "joined, taken, act, frozen 1m, tick 1m, lease-lost, taken", MemberAppendFenced, false},
		{"unbounded freeze (written by hand) lasts until thawed", "joined, taken, act, frozen, tick 100h", MemberNone, false},
		{"drained: still a member that acts", "joined, taken, act, drained", MemberNone, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newMemberSim()
			if tt.steps != "" {
				for _, st := range strings.Split(tt.steps, ", ") {
					if err := s.step(st); err != nil {
						t.Fatal(err)
					}
				}
			}
			if got := s.m.Decide(s.now); got != tt.want {
				t.Errorf("Decide = %s, want %s", got, tt.want)
			}
			if got := s.m.MayAct(s.now); got != tt.act {
				t.Errorf("MayAct = %v, want %v", got, tt.act)
			}
		})
	}
}

func TestMemberApplyIgnoresOthers(t *testing.T) {
	m := NewMember(me)
	for _, e := range []events.Event{
		{Subject: "node2", Seq: 1, Data: events.NodeFrozen{}},
		{Subject: me, Seq: 0, Data: events.NodeFrozen{}},
		{Subject: me, Seq: 2, Data: events.PackageReset{}},
	} {
		if m.Apply(e) {
			t.Errorf("Apply(%s %s seq %d) = true, want ignored", e.Type(), e.Subject, e.Seq)
		}
	}
	if !reflect.DeepEqual(m, NewMember(me)) {
		t.Errorf("state changed: %+v", m)
	}
}

// TestMemberReplay runs testdata/member.steps, one step a line, and
// compares each step's decision, MayAct and state with member.golden
// (rewritten with -update).
func TestMemberReplay(t *testing.T) {
	in, err := os.ReadFile(filepath.Join("testdata", "member.steps"))
	if err != nil {
		t.Fatal(err)
	}
	s := newMemberSim()
	var out bytes.Buffer
	sc := bufio.NewScanner(bytes.NewReader(in))
	for sc.Scan() {
		st := strings.TrimSpace(sc.Text())
		if st == "" || strings.HasPrefix(st, "#") {
			continue
		}
		if err := s.step(st); err != nil {
			t.Fatal(err)
		}
		b, err := json.Marshal(s.m)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&out, "%-14s decide=%-19s may_act=%-5v %s\n", st, s.m.Decide(s.now), s.m.MayAct(s.now), b)
	}
	golden := filepath.Join("testdata", "member.golden")
	if *update {
		if err := os.WriteFile(golden, out.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out.Bytes(), want) {
		t.Errorf("replay differs from %s (run with -update to accept):\n%s", golden, out.String())
	}
}

// randomMemberRun drives a Member with random steps, as the runner and the
// rest of the cluster would, checking the properties after each:
//   - it never acts while fenced: from a lease loss (not frozen) until its
//     node.fenced is read back, MayAct is false;
//   - never two joins without a leave between: the node.joined events it
//     asks for never follow another node.joined without a lost, fenced or
//     halted between them;
//   - a frozen node never decides: while frozen, MayAct is false and
//     Decide asks for no join and no resume.
func randomMemberRun(t *rapid.T) *memberSim {
	s := newMemberSim()
	steps := []string{"joined", "lost", "fenced", "halted op", "halted", "frozen 30s", "frozen", "thawed", "drained",
		"taken", "lease-lost", "shutdown", "unstoppable", "act", "act", "act", "read-back", "read-back", "tick 10s", "tick 1s"}
	if rapid.Bool().Draw(t, "superseded possible") {
		steps = append(steps, "superseded")
	}
	fencedUntilSeq := uint64(0) // the fence's node.fenced is read back at or after this
	fencing := false
	n := rapid.IntRange(1, 60).Draw(t, "steps")
	for range n {
		st := rapid.SampledFrom(steps).Draw(t, "step")
		wasFrozen := s.m.FrozenAt(s.now)
		before := len(s.log)
		if st == "act" {
			a := s.act()
			if wasFrozen && (a == MemberAppendJoined || a == MemberResume) {
				t.Fatalf("frozen node decided %s", a)
			}
			if a == MemberAppendFenced {
				fencedUntilSeq = s.seq
			}
		} else if err := s.step(st); err != nil {
			t.Fatal(err)
		}
		if (st == "lease-lost" && !wasFrozen) || st == "unstoppable" {
			if !fencing {
				fencing, fencedUntilSeq = true, 0
			}
		}
		for _, e := range s.log[before:] {
			if _, ok := e.Data.(events.NodeFenced); ok && fencing && fencedUntilSeq > 0 && e.Seq >= fencedUntilSeq {
				fencing = false
			}
		}
		if fencing && s.m.MayAct(s.now) {
			t.Fatalf("acts while fenced (after %q): %+v", st, s.m)
		}
		if s.m.FrozenAt(s.now) && s.m.MayAct(s.now) {
			t.Fatalf("acts while frozen (after %q): %+v", st, s.m)
		}
	}
	// Never two joins without a leave between, for the joins it asked for.
	joined := false
	for _, e := range s.log {
		switch e.Data.(type) {
		case events.NodeJoined:
			if joined && e.Source == HostSource(me) {
				t.Fatalf("node.joined at seq %d follows another without a leave between", e.Seq)
			}
			joined = true
		case events.NodeLost, events.NodeFenced, events.NodeHalted:
			joined = false
		}
	}
	return s
}

func TestMemberProperties(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) { randomMemberRun(t) })
}

// TestMemberFoldIdempotent: applying the log again changes nothing, and
// a prefix then the rest folds to the same state as the whole log.
func TestMemberFoldIdempotent(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		s := randomMemberRun(t)
		fold := func(evs []events.Event) *Member {
			m := NewMember(me)
			for _, e := range evs {
				m.Apply(e)
			}
			return m
		}
		whole := fold(s.log)
		again := fold(s.log)
		for _, e := range s.log {
			if again.Apply(e) {
				t.Fatalf("seq %d applied twice", e.Seq)
			}
		}
		if !reflect.DeepEqual(whole, again) {
			t.Fatalf("replayed twice: %+v, want %+v", again, whole)
		}
		cut := rapid.IntRange(0, len(s.log)).Draw(t, "cut")
		split := fold(s.log[:cut])
		for _, e := range s.log[cut:] {
			split.Apply(e)
		}
		if !reflect.DeepEqual(whole, split) {
			t.Fatalf("prefix then rest: %+v, want %+v", split, whole)
		}
	})
}
