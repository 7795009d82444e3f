package events_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/vmguard/vmguard/events"
	"github.com/vmguard/vmguard/events/eventstest"
)

func TestRoleOf(t *testing.T) {
	for _, tc := range []struct {
		source string
		role   events.Role
		name   string
	}{
		{events.GuestSource("webvm"), events.RoleGuest, "webvm"},
		{events.HostSource("node1"), events.RoleHost, "node1"},
		{events.ControllerSource, events.RoleController, ""},
		{events.OperatorSource("alice"), events.RoleOperator, "alice"},
		{events.OperatorSource("a%2Fb"), events.RoleOperator, "a%2Fb"},
		{"/vmguard/cli/", events.RoleNone, ""},
		{"/vmguard/guests/a.b/agent", events.RoleNone, ""},
		{"/vmguard/guests//agent", events.RoleNone, ""},
		{"/vmguard/nodes/node1/host/x", events.RoleNone, ""},
		{"/vmguard/failover/x", events.RoleNone, ""},
		{"/t", events.RoleNone, ""},
		{"", events.RoleNone, ""},
	} {
		if r, n := events.RoleOf(tc.source); r != tc.role || n != tc.name {
			t.Errorf("RoleOf(%q) = %s %q, want %s %q", tc.source, r, n, tc.role, tc.name)
		}
	}
}

// TestSourceFits: each type is accepted from its writers only, and a
// host's node event only about its own node.
func TestSourceFits(t *testing.T) {
	guest, host, ctl, op := events.GuestSource("webvm"), events.HostSource("node1"), events.ControllerSource, events.OperatorSource("alice")
	for _, tc := range []struct {
		source  string
		subject string
		data    events.Payload
		ok      bool
	}{
		{guest, "web", events.ProcessExited{}, true},
		{host, "web", events.ProcessExited{}, true},
		{ctl, "web", events.ProcessExited{}, false},
		{op, "web", events.ProcessStarted{}, false},
		{guest, "web", events.PackagePlaced{}, false},
		{host, "web", events.PackagePlaced{}, false},
		{ctl, "web", events.PackagePlaced{}, true},
		{op, "web", events.PackagePlaced{}, true},
		{host, "web", events.PackageStarted{}, true},
		{ctl, "web", events.PackageStarted{}, false},
		{host, "web", events.PackageHalting{}, true},
		{ctl, "web", events.PackageHalting{}, true},
		{op, "web", events.PackageHalting{}, true},
		{guest, "web", events.PackageHalting{}, false},
		{host, "web", events.PackageReset{}, false},
		{op, "web", events.PackageReset{}, true},
		{ctl, "web", events.PackageChecked{For: "db"}, true},
		{host, "web", events.PackageChecked{For: "db"}, false},
		{op, "web", events.PackageChecked{For: "db"}, false},
		{ctl, "node1", events.PlacementNoted{Package: "web", Epoch: 1}, true},
		{op, "node1", events.PlacementNoted{Package: "web", Epoch: 1}, true},
		{host, "node1", events.PlacementNoted{Package: "web", Epoch: 1}, false},
		{host, "web", events.ServiceRestarting{}, true},
		{guest, "web", events.GuestLost{}, false},
		{host, "node1", events.NodeJoined{}, true},
		{host, "node2", events.NodeJoined{}, false},
		{host, "node2", events.NodeFenced{}, false},
		{host, "node1", events.NodeFenced{}, true},
		{op, "node2", events.NodeJoined{}, true},
		{op, "node2", events.NodeFenced{}, false},
		{host, "node1", events.NodeLost{}, false},
		{ctl, "node1", events.NodeLost{}, true},
		{op, "demo", events.ConfigApplied{}, true},
		{host, "demo", events.ConfigApplied{}, false},
		{ctl, "demo", events.ConfigApplied{}, false},
		{op, "node1", events.NodeDrained{}, true},
		{host, "node1", events.NodeDrained{}, false},
		{host, "node1", events.NodeResourceSet{Name: "disk", Status: "up"}, true},
		{op, "node1", events.NodeResourceSet{Name: "disk", Status: "down"}, true},
		{ctl, "node1", events.NodeThawed{}, true},
		{ctl, "node1", events.NodeFrozen{}, false},
		{host, "web", events.GuestMigrated{}, true},
		{guest, "web", events.GuestMigrating{}, false},
		{"/t", "web", events.ProcessExited{}, false},
	} {
		err := events.SourceFits(events.Event{Source: tc.source, Subject: tc.subject, Data: tc.data})
		if (err == nil) != tc.ok || (err != nil && !errors.Is(err, events.ErrInvalid)) {
			t.Errorf("%s from %s about %s: %v, want ok=%v", tc.data.EventType(), tc.source, tc.subject, err, tc.ok)
		}
	}
	for _, typ := range events.Types() {
		if len(events.Writers(typ)) == 0 {
			t.Errorf("%s: no writer", typ)
		}
	}
}

// TestForgedSourceSkipped: a guest, allowed to publish on its package's
// process subjects, writes a process.exited that claims to come from the
// failover controller or a host's node.joined of another node is stored
// on the host's own subject; readers skip and count both.
func TestForgedSourceSkipped(t *testing.T) {
	ctx := context.Background()
	l, _ := openLog(t)
	good := eventstest.New("web", events.ProcessExited{Guest: "webvm", Service: "s", PID: 1, RequestID: "r", Epoch: 1})
	forged := []events.Event{
		events.New(events.ControllerSource, "web", events.ProcessExited{Guest: "webvm", Service: "s", PID: 2, RequestID: "r", Epoch: 1}),
		events.New("/somebody", "web", events.ProcessExited{Guest: "webvm", Service: "s", PID: 3, RequestID: "r", Epoch: 1}),
		events.New(events.HostSource("node2"), "node1", events.NodeJoined{}),
	}
	for _, e := range append(forged, good) {
		m, err := l.Codec().Encode(e)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := l.JetStream().PublishMsg(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	var got []string
	if _, err := l.Replay(ctx, events.ReadOptions{}, func(e events.Event) error { got = append(got, e.ID); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0] != good.ID || l.Skipped() != 3 {
		t.Errorf("read %v, skipped %d; want only %s, 3 skipped", got, l.Skipped(), good.ID)
	}
	if _, err := l.Get(ctx, 1); !errors.Is(err, events.ErrInvalid) || !strings.Contains(err.Error(), "is written by guest or host") {
		t.Errorf("Get of a forged source: %v", err)
	}
}
