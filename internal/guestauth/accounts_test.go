package guestauth_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/vmguard/vmguard/internal/guestauth"
)

// TestRenderAccounts: the accounts nats-server reads from RenderAccounts'
// output: the control account with its users and JetStream, one account a
// guest with its user and no other, and a guest without its own inbox
// prefix refused.
func TestRenderAccounts(t *testing.T) {
	g := guestauth.Guest{Name: "webvm", Packages: []string{"web"}, Nodes: []string{"node1"}, InboxPrefix: guestauth.InboxPrefix("webvm")}
	p, err := guestauth.For(g)
	if err != nil {
		t.Fatal(err)
	}
	control := []guestauth.User{{Name: "admin", Password: "pw1"}, {Name: "srv", Password: "pw2", InProcessOnly: true}}
	text, err := guestauth.RenderAccounts(control, []guestauth.AccountGuest{{Guest: g, User: guestauth.User{Name: "webvm", Password: "pw3", Permissions: &p}}}, guestauth.DefaultLimits, "srv")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "nats.conf")
	if err := os.WriteFile(path, []byte("jetstream {}\n"+text), 0o600); err != nil {
		t.Fatal(err)
	}
	opts, err := server.ProcessConfigFile(path)
	if err != nil {
		t.Fatalf("nats-server refuses the accounts: %v\n%s", err, text)
	}
	accOf := map[string]string{}
	for _, u := range opts.Users {
		accOf[u.Username] = u.Account.Name
	}
	if accOf["admin"] != guestauth.ControlAccount || accOf["srv"] != guestauth.ControlAccount || accOf["webvm"] != guestauth.GuestAccount("webvm") {
		t.Errorf("users' accounts: %v", accOf)
	}
	if opts.NoAuthUser != "srv" {
		t.Errorf("no_auth_user %q", opts.NoAuthUser)
	}
	for _, want := range []string{
		`{service: {account: "VMGUARD", subject: "vmguard.gate.webvm.pkg.web.process.exited"}, to: "vmguard.events.pkg.web.process.exited"}`,
		`{service: "vmguard.gate.webvm.pkg.web.process.exited", accounts: ["GUEST_webvm"]}`,
		`{service: {account: "VMGUARD", subject: "$JS.API.INFO"}}`,
		`{stream: "_INBOX_webvm.>", accounts: ["GUEST_webvm"]}`,
		`{service: {account: "GUEST_webvm", subject: "vmguard.agent.webvm.>"}}`,
		`max_payload: 65536`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("no %s in\n%s", want, text)
		}
	}
	g.InboxPrefix = ""
	if _, err := guestauth.RenderAccounts(control, []guestauth.AccountGuest{{Guest: g}}, guestauth.DefaultLimits, ""); err == nil {
		t.Error("a guest with the shared inbox prefix was accepted")
	}
}
