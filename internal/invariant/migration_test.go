package invariant

import (
	"strings"
	"testing"

	"github.com/vmguard/vmguard/events"
)

// migrationLog is web running on n1 (epoch 1, one process), moved to n2 by
// an operator with migrate (epoch 2); ops change the log before and after
// the guest.migrated; the rest is what the host managers write.
func migrationLog(migrate bool, before, after func(l *logb, placed2 events.Event)) []events.Event {
	l := newLog()
	_, starting1 := l.startWeb("n1")
	guest1 := l.add("web", starting1.ID, events.GuestStarted{Guest: "g", Node: "n1", Epoch: 1})
	ps := l.add("web", guest1.ID, events.ProcessStarted{Guest: "g", Service: "s", PID: 10, RequestID: guest1.ID + "/s", Epoch: 1})
	l.add("web", ps.ID, events.PackageStarted{Node: "n1", Epoch: 1})
	placed2 := l.add("web", "", events.PackagePlaced{Node: "n2", Epoch: 2, Reason: "operator_move", PreviousNode: "n1", By: "alice", Migrate: migrate})
	mig := l.add("web", placed2.ID, events.GuestMigrating{Guest: "g", Node: "n1", Epoch: 1, TargetNode: "n2", TargetEpoch: 2})
	if before != nil {
		before(l, placed2)
	}
	done := l.add("web", mig.ID, events.GuestMigrated{Guest: "g", Node: "n1", Epoch: 1, TargetNode: "n2", TargetEpoch: 2,
		Processes: []events.MigratedProcess{{Service: "s", RequestID: guest1.ID + "/s", PID: 10, StartedID: ps.ID}}})
	starting2 := l.add("web", done.ID, events.PackageStarting{Node: "n2", Epoch: 2})
	guest2 := l.add("web", starting2.ID, events.GuestStarted{Guest: "g", Node: "n2", Epoch: 2})
	l.add("web", guest2.ID, events.PackageStarted{Node: "n2", Epoch: 2})
	// The adopted process exits (it reports its old epoch); n2 restarts it.
	x := l.add("web", guest1.ID+"/s", events.ProcessExited{Guest: "g", Service: "s", PID: 10, ExitCode: 1, RequestID: guest1.ID + "/s", Epoch: 1})
	r := l.add("web", x.ID, events.ServiceRestarting{Service: "s", Node: "n2", Epoch: 2, Attempt: 1, RestartsLeft: 1})
	l.add("web", r.ID, events.ProcessStarted{Guest: "g", Service: "s", PID: 11, RequestID: r.ID, Epoch: 2})
	if after != nil {
		after(l, placed2)
	}
	return l.evs
}

// TestMigrationPasses: a live migration hands epoch 1 over to epoch 2; the
// adopted process runs on under epoch 2, so epoch 2's own process starts
// beside no other epoch's.
func TestMigrationPasses(t *testing.T) {
	r := Verify(migrationLog(true, nil, nil), Options{})
	if !r.OK() || r.Checked[RuleMigration] != 1 {
		t.Fatalf("violations %v, checked %v", r.Violations, r.Checked)
	}
}

// TestMigrationViolations breaks a migration one way at a time.
func TestMigrationViolations(t *testing.T) {
	for _, tc := range []struct {
		name          string
		migrate       bool
		before, after func(l *logb, placed2 events.Event)
		rule          Rule
		want          string
	}{
		{name: "placement did not ask for it", migrate: false, rule: RuleMigration, want: "did not ask for a migration"},
		{name: "source released first", migrate: true, rule: RuleMigration, want: "already released",
			before: func(l *logb, placed2 events.Event) {
				l.add("web", placed2.ID, events.PackageHalted{Node: "n1", Epoch: 1, Reason: "moved"})
			}},
		{name: "target started before the hand-over", migrate: true, rule: RuleReleasedFirst, want: "epoch 2 starts while epoch 1",
			before: func(l *logb, placed2 events.Event) {
				l.add("web", placed2.ID, events.PackageStarting{Node: "n2", Epoch: 2})
			}},
		{name: "old epoch starts a process after it", migrate: true, rule: RuleOneEpoch, want: "process of epoch 1 starts while",
			after: func(l *logb, _ events.Event) {
				ask := l.add("web", "", events.ServiceRestarting{Service: "w", Node: "n1", Epoch: 1, Attempt: 1, RestartsLeft: 0})
				l.add("web", ask.ID, events.ProcessStarted{Guest: "g", Service: "w", PID: 30, RequestID: ask.ID, Epoch: 1})
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := Verify(migrationLog(tc.migrate, tc.before, tc.after), Options{})
			found := false
			for _, v := range r.Violations {
				if v.Rule == tc.rule && strings.Contains(v.Message, tc.want) {
					found = true
				}
			}
			if !found {
				t.Fatalf("want a %s violation %q, got %v", tc.rule, tc.want, r.Violations)
			}
		})
	}
}
