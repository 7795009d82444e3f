package guestauth_test

import (
	"crypto/tls"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nkeys"

	"github.com/vmguard/vmguard/internal/guestauth"
	"github.com/vmguard/vmguard/internal/natsd"
)

// TestRenderLeaf: nats-server reads RenderLeaf's output: the host's
// in-process account, one account a guest with its user (its JetStream
// requests under the leaf name), and one remote a guest, bound to the
// guest's account, that never imports the guest's requests.
func TestRenderLeaf(t *testing.T) {
	g := guestauth.Guest{Name: "webvm", Packages: []string{"web"}, Nodes: []string{"node1"}, InboxPrefix: guestauth.InboxPrefix("webvm")}
	p, err := guestauth.For(g)
	if err != nil {
		t.Fatal(err)
	}
	lp := guestauth.OnLeaf(p)
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	seed, _ := kp.Seed()
	tf := natsd.WriteTestTLS(t, t.TempDir(), "leaf")
	text, err := guestauth.RenderLeaf(guestauth.Leaf{
		Node: "node1", Host: "127.0.0.1", Port: 4223, Hub: []string{"tls://hub:7422"}, HostPassword: "pw",
		Listen: guestauth.TLSFiles{Cert: tf.ServerCert, Key: tf.ServerKey, CA: tf.CA},
		Remote: guestauth.TLSFiles{Cert: tf.ClientCert, Key: tf.ClientKey, CA: tf.CA},
		Guests: []guestauth.LeafGuest{{Guest: g, User: guestauth.User{Name: "guest-webvm", Password: "gpw", Permissions: &lp}, RemoteSeed: string(seed)}},
		Limits: guestauth.DefaultLimits,
	})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "leaf.conf")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	opts, err := server.ProcessConfigFile(path)
	if err != nil {
		t.Fatalf("nats-server refuses the leaf config: %v\n%s", err, text)
	}
	if opts.TLSConfig == nil || opts.TLSConfig.ClientAuth != tls.RequireAndVerifyClientCert || opts.NoAuthUser != guestauth.LeafHostUser {
		t.Errorf("leaf listener: tls %v, no_auth_user %q; want verified client certificates", opts.TLSConfig, opts.NoAuthUser)
	}
	accOf := map[string]string{}
	for _, u := range opts.Users {
		accOf[u.Username] = u.Account.Name
	}
	if accOf[guestauth.LeafHostUser] != guestauth.LeafHostAccount || accOf["guest-webvm"] != guestauth.GuestAccount("webvm") {
		t.Errorf("users' accounts: %v", accOf)
	}
	if len(opts.LeafNode.Remotes) != 1 {
		t.Fatalf("%d remotes, want 1", len(opts.LeafNode.Remotes))
	}
	r := opts.LeafNode.Remotes[0]
	if r.LocalAccount != guestauth.GuestAccount("webvm") || r.Nkey != string(seed) || !slices.Contains(r.DenyImports, "vmguard.agent.webvm.>") {
		t.Errorf("remote: account %q, nkey set %v, deny_imports %v", r.LocalAccount, r.Nkey != "", r.DenyImports)
	}
	for _, want := range []string{
		`mappings = { "$JS.API.>": "$JS.vmguard.API.>" }`,
		`"$JS.vmguard.API.STREAM.INFO.VMGUARD"`,
		`{service: {account: "HOST", subject: "vmguard.gate.webvm.pkg.web.process.exited"}, to: "vmguard.events.pkg.web.process.exited"}`,
		`{service: {account: "GUEST_webvm", subject: "vmguard.agent.webvm.>"}}`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("no %s in\n%s", want, text)
		}
	}
}
