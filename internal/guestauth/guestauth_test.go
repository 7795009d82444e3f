package guestauth_test

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/vmguard/vmguard/internal/guestauth"
)

func TestFor(t *testing.T) {
	srv := []string{
		"$SRV.PING", "$SRV.PING.vmguard-agent", "$SRV.PING.vmguard-agent.*",
		"$SRV.INFO", "$SRV.INFO.vmguard-agent", "$SRV.INFO.vmguard-agent.*",
		"$SRV.STATS", "$SRV.STATS.vmguard-agent", "$SRV.STATS.vmguard-agent.*",
	}
	tests := []struct {
		name     string
		guest    guestauth.Guest
		pub, sub []string
	}{{
		name:  "one package, no node",
		guest: guestauth.Guest{Name: "webvm", Packages: []string{"web"}},
		pub: []string{
			"vmguard.hb.guest.webvm",
			"vmguard.events.pkg.web.process.started", "vmguard.events.pkg.web.process.exited",
			"$JS.API.STREAM.INFO.VMGUARD",
		},
		sub: append(append([]string{"vmguard.agent.webvm.>"}, srv...), "_INBOX.>"),
	}, {
		name: "packages sorted without repeats, nodes, inbox prefix",
		guest: guestauth.Guest{Name: "g-1", Packages: []string{"db", "app", "db"}, Nodes: []string{"n2", "n1", "n2"},
			InboxPrefix: guestauth.InboxPrefix("g-1")},
		pub: []string{
			"vmguard.hb.guest.g-1",
			"vmguard.events.pkg.app.process.started", "vmguard.events.pkg.app.process.exited",
			"vmguard.events.pkg.db.process.started", "vmguard.events.pkg.db.process.exited",
			"$JS.API.STREAM.INFO.VMGUARD",
			"$JS.API.DIRECT.GET.VMGUARD.vmguard.events.pkg.app.package.placed",
			"$JS.API.DIRECT.GET.VMGUARD.vmguard.events.pkg.db.package.placed",
			"$JS.API.STREAM.INFO.KV_vmguard_leases",
			"$JS.API.CONSUMER.CREATE.KV_vmguard_leases.*.$KV.vmguard_leases.n1",
			"$JS.API.CONSUMER.CREATE.KV_vmguard_leases.*.$KV.vmguard_leases.n2",
			"$JS.API.DIRECT.GET.KV_vmguard_leases.$KV.vmguard_leases.n1",
			"$JS.API.DIRECT.GET.KV_vmguard_leases.$KV.vmguard_leases.n2",
		},
		sub: append(append([]string{"vmguard.agent.g-1.>"}, srv...), "_INBOX_g-1.>"),
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := guestauth.For(tt.guest)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(p.Publish, tt.pub) {
				t.Errorf("publish:\n got %q\nwant %q", p.Publish, tt.pub)
			}
			if !slices.Equal(p.Subscribe, tt.sub) {
				t.Errorf("subscribe:\n got %q\nwant %q", p.Subscribe, tt.sub)
			}
			if p.Responses != guestauth.ResponseExpiry {
				t.Errorf("responses: %s, want %s", p.Responses, guestauth.ResponseExpiry)
			}
			// No wildcard may reach beyond the guest's own subjects.
			for _, s := range p.Publish {
				if strings.Contains(s, ">") {
					t.Errorf("publish %q: a '>' wildcard", s)
				}
			}
		})
	}
}

func TestForRefusesBadInput(t *testing.T) {
	for _, g := range []guestauth.Guest{
		{Name: "", Packages: []string{"web"}},
		{Name: "web.vm", Packages: []string{"web"}},
		{Name: "webvm"},
		{Name: "webvm", Packages: []string{"web", "*"}},
		{Name: "webvm", Packages: []string{"web"}, Nodes: []string{"node>"}},
		{Name: "webvm", Packages: []string{"web"}, InboxPrefix: "_INBOX.*"},
		{Name: "webvm", Packages: []string{"web"}, InboxPrefix: "_INBOX."},
	} {
		if _, err := guestauth.For(g); err == nil {
			t.Errorf("For(%+v): no error", g)
		}
	}
}

// TestRenderRoundTrip renders users as a config file, loads it with
// nats-server's own parser and gets the same users back.
func TestRenderRoundTrip(t *testing.T) {
	p, err := guestauth.For(guestauth.Guest{Name: "webvm", Packages: []string{"web"}, Nodes: []string{"node1"}})
	if err != nil {
		t.Fatal(err)
	}
	users := []guestauth.User{
		{Name: "vmguard-server", Password: "in-process", InProcessOnly: true, Comment: "the embedded server's own connection"},
		{Name: "admin", Password: `a"b\c $x` + "\t\n\x01", Comment: "hosts, failover\nand operators"},
		{Name: "webvm", Password: "$2a$notreally", Permissions: &p},
	}
	conf := guestauth.RenderAuthorization(users, "vmguard-server")
	file := filepath.Join(t.TempDir(), "nats.conf")
	if err := os.WriteFile(file, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	opts, err := server.ProcessConfigFile(file)
	if err != nil {
		t.Fatalf("parse rendered config: %v\n%s", err, conf)
	}
	if opts.NoAuthUser != "vmguard-server" {
		t.Errorf("no_auth_user: %q", opts.NoAuthUser)
	}
	want := guestauth.ServerUsers(users...)
	if len(opts.Users) != len(want) {
		t.Fatalf("%d users, want %d\n%s", len(opts.Users), len(want), conf)
	}
	for i, got := range opts.Users {
		w := want[i]
		if got.Username != w.Username || got.Password != w.Password {
			t.Errorf("user %d: %q/%q, want %q/%q", i, got.Username, got.Password, w.Username, w.Password)
		}
		if !sameKeys(got.AllowedConnectionTypes, w.AllowedConnectionTypes) {
			t.Errorf("user %s: connection types %v, want %v", w.Username, got.AllowedConnectionTypes, w.AllowedConnectionTypes)
		}
		if (got.Permissions == nil) != (w.Permissions == nil) {
			t.Fatalf("user %s: permissions %v, want %v", w.Username, got.Permissions, w.Permissions)
		}
		if w.Permissions == nil {
			continue
		}
		gp, wp := got.Permissions, w.Permissions
		if !slices.Equal(gp.Publish.Allow, wp.Publish.Allow) || gp.Publish.Deny != nil {
			t.Errorf("user %s publish: %+v, want %+v", w.Username, gp.Publish, wp.Publish)
		}
		if !slices.Equal(gp.Subscribe.Allow, wp.Subscribe.Allow) || gp.Subscribe.Deny != nil {
			t.Errorf("user %s subscribe: %+v, want %+v", w.Username, gp.Subscribe, wp.Subscribe)
		}
		if gp.Response == nil || gp.Response.MaxMsgs != 1 || gp.Response.Expires != time.Hour+5*time.Minute {
			t.Errorf("user %s responses: %+v", w.Username, gp.Response)
		}
	}
}

func sameKeys(a, b map[string]struct{}) bool {
	if len(a) != len(b) {
		return false
	}
	for k := range a {
		if _, ok := b[k]; !ok {
			return false
		}
	}
	return true
}
