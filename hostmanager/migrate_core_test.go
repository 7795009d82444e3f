package hostmanager

import (
	"fmt"
	"slices"
	"testing"

	"github.com/vmguard/vmguard/events"
)

const migrateGuest = "driver: process\nmigrate: true"

// moveMigrate appends `pkg move web -n node2` for a migratable guest.
func (h *harness) moveMigrate() events.Event {
	h.t.Helper()
	return h.add("/vmguard/cli/test", "web", "", events.PackagePlaced{Node: "node2", Epoch: h.s.Package("web").Current.Epoch + 1,
		Reason: "operator_move", PreviousNode: me, By: "test", Migrate: true})
}

// TestCoreMigrationSource: a migrate placement makes the source decide
// guest.migrating and then ask for MigrateGuest with the processes that
// run; guest.migrated ends its instance and releases its placement without
// a halt (nothing of the guest stops).
func TestCoreMigrationSource(t *testing.T) {
	h := newHarness(t, cfgYAML("", migrateGuest))
	h.start()
	h.moveMigrate()
	if got := shortTypes(h.decide("web")); !slices.Equal(got, []string{"guest.migrating"}) {
		t.Fatalf("decisions after a migrate placement: %v", got)
	}
	acts := Pending(h.s, "web")
	if len(acts) != 1 || acts[0].Kind != MigrateGuest || acts[0].Target != "node2" || acts[0].TargetEpoch != 2 || len(acts[0].Procs) != 2 {
		t.Fatalf("pending: %+v, want one MigrateGuest to node2 epoch 2 carrying 2 processes", acts)
	}
	got := h.settle()
	if !slices.Equal(got, []string{"guest.migrated"}) {
		t.Fatalf("settle: %v, want only guest.migrated", got)
	}
	p := h.s.Package("web")
	if p.Inst != nil || len(p.Prior) != 0 || p.Adopt != nil {
		t.Fatalf("after guest.migrated: instance %+v, prior %+v, adopt %+v", p.Inst, p.Prior, p.Adopt)
	}
}

// TestCoreMigrationFallback: a failed migration halts the instance as a
// move without migration would.
func TestCoreMigrationFallback(t *testing.T) {
	h := newHarness(t, cfgYAML("", migrateGuest))
	h.failMigrate = "refused"
	h.start()
	h.moveMigrate()
	got := h.settle()
	want := []string{"guest.migrating", "guest.migration_failed", "process.exited", "process.exited", "guest.stopped", "package.halted"}
	if !slices.Equal(got, want) {
		t.Fatalf("settle: %v, want %v", got, want)
	}
	if d := h.last().Data.(events.PackageHalted); d.Epoch != 1 || d.Reason != ReasonMoved {
		t.Errorf("package.halted: %+v", d)
	}
}

// TestCoreMigrationNotMigratable: a guest whose driver cannot migrate
// halts at once, even when the placement asks for a migration.
func TestCoreMigrationNotMigratable(t *testing.T) {
	h := newHarness(t, cfgYAML("", ""))
	h.start()
	h.moveMigrate()
	got := h.settle()
	want := []string{"process.exited", "process.exited", "guest.stopped", "package.halted"}
	if !slices.Equal(got, want) {
		t.Fatalf("settle: %v, want %v", got, want)
	}
}

// TestCoreMigrationTarget: the target node folds the same log; after
// guest.migrated it starts its placement, which adopts the guest's
// processes: once the guest reports up there, the package is started
// without running any service again, and the processes' later reports
// (under the old epoch) reach the new instance.
func TestCoreMigrationTarget(t *testing.T) {
	h := newHarness(t, cfgYAML("restart: 1", migrateGuest))
	h.start()
	h.moveMigrate()
	h.settle()
	s2 := NewState("node2")
	for _, e := range h.log {
		s2.Apply(e)
	}
	if a := s2.Package("web").Adopt; a == nil || a.Epoch != 2 || a.FromEpoch != 1 || len(a.Procs) != 2 {
		t.Fatalf("adopt on node2: %+v", a)
	}
	seq := uint64(len(h.log))
	apply := func(e events.Event) events.Event {
		seq++
		e.Seq, e.ID, e.Time = seq, fmt.Sprintf("t%d", seq), h.now
		if !s2.Apply(e) {
			t.Fatalf("%s not applied", e.Type())
		}
		return e
	}
	d, ok := Decide(s2, "web")
	if !ok || events.ShortType(d.Type()) != "package.starting" {
		t.Fatalf("node2 decides %v %v, want package.starting", d.Type(), ok)
	}
	apply(d)
	acts := Pending(s2, "web")
	if len(acts) != 1 || acts[0].Kind != StartGuest {
		t.Fatalf("pending on node2: %+v, want StartGuest (the driver finds the guest running)", acts)
	}
	apply(acts[0].GuestStarted())
	if acts := Pending(s2, "web"); len(acts) != 0 {
		t.Fatalf("pending after the adopted guest is up: %+v, want nothing (its processes run)", acts)
	}
	d, ok = Decide(s2, "web")
	if !ok || events.ShortType(d.Type()) != "package.started" {
		t.Fatalf("node2 decides %v %v, want package.started", d.Type(), ok)
	}
	apply(d)
	// An adopted process exits: it reports epoch 1; node2 restarts it.
	in := s2.Package("web").Inst
	pr := in.Service("a").Proc
	apply(events.Event{Source: agentSource("webvm"), Subject: "web", Data: events.ProcessExited{Guest: "webvm", Service: "a", PID: pr.PID,
		ExitCode: 1, RequestID: pr.RequestID, Epoch: 1}})
	d, ok = Decide(s2, "web")
	if r, isR := d.Data.(events.ServiceRestarting); !ok || !isR || r.Epoch != 2 || r.Service != "a" {
		t.Fatalf("after the adopted process exits: %+v %v, want service.restarting of a under epoch 2", d, ok)
	}
}
