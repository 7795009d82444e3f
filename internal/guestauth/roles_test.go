package guestauth_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/vmguard/vmguard/failover"
	"github.com/vmguard/vmguard/internal/guestauth"
)

// TestRoleBuckets: the bucket names the roles name are failover's.
func TestRoleBuckets(t *testing.T) {
	c := guestauth.Controller()
	for _, b := range []string{failover.ElectionBucket, failover.SnapshotBucket} {
		if !slices.Contains(c.Publish, "$KV."+b+".>") || !slices.Contains(guestauth.Reader().Publish, "$JS.API.STREAM.INFO.KV_"+b) {
			t.Errorf("bucket %s: not in the controller's or reader's rights", b)
		}
	}
}

func TestForHost(t *testing.T) {
	p, err := guestauth.ForHost(guestauth.Host{Node: "node1", Packages: []string{"web", "api", "web"}, Guests: []string{"webvm"}})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{
		"vmguard.events.node.node1.joined", "vmguard.events.node.node1.fenced",
		"vmguard.events.pkg.web.package.started", "vmguard.events.pkg.api.process.*", "vmguard.events.pkg.web.service.*",
		"$KV.vmguard_leases.node1", "vmguard.agent.webvm.>", "vmguard.hb.guest.webvm",
	} {
		if !slices.Contains(p.Publish, s) {
			t.Errorf("host may not publish %s", s)
		}
	}
	for _, s := range p.Publish {
		for _, bad := range []string{"node2", "package.placed", "package.reset", "switching_changed", ".lost", "cluster.", "STREAM.DELETE", "STREAM.PURGE", "vmguard.events.>", "$KV.vmguard_leases.>", "$KV.vmguard_failover", "dbvm"} {
			if strings.Contains(s, bad) {
				t.Errorf("host may publish %s", s)
			}
		}
	}
	if !slices.Contains(p.Subscribe, "_INBOX_webvm.>") || !slices.Contains(p.Subscribe, "vmguard.hb.guest.webvm") {
		t.Errorf("host subscribe: %q", p.Subscribe)
	}
	for _, bad := range []guestauth.Host{{Node: ""}, {Node: "a.b"}, {Node: "n", Packages: []string{"*"}}, {Node: "n", Guests: []string{">"}}} {
		if _, err := guestauth.ForHost(bad); err == nil {
			t.Errorf("ForHost(%+v): no error", bad)
		}
	}
}

// TestReaderWritesNothing: the reader's rights name no subject of the log,
// of a lease or of a guest, and no JetStream call that changes a stream.
func TestReaderWritesNothing(t *testing.T) {
	r := guestauth.Reader()
	for _, s := range r.Publish {
		if !strings.HasPrefix(s, "$JS.API.") {
			t.Errorf("reader may publish %s", s)
		}
		for _, bad := range []string{"STREAM.CREATE", "STREAM.UPDATE", "STREAM.DELETE", "STREAM.PURGE", "MSG.DELETE", "CONSUMER.LIST", "CONSUMER.NAMES"} {
			if strings.Contains(s, bad) {
				t.Errorf("reader may publish %s", s)
			}
		}
	}
	c := guestauth.Controller()
	if !slices.Contains(c.Publish, "vmguard.events.pkg.*.package.checked") {
		t.Error("controller may not publish the markers of its placements (package.checked)")
	}
	for _, s := range c.Publish {
		if strings.HasPrefix(s, "$KV.vmguard_leases.") && s != "$KV.vmguard_leases._probe.>" || strings.HasPrefix(s, "vmguard.agent") || strings.Contains(s, "cluster.") {
			t.Errorf("controller may publish %s", s)
		}
	}
}
