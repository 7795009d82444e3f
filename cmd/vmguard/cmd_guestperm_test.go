package main

import (
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/vmguard/vmguard/events"
	"github.com/vmguard/vmguard/guestagent"
	"github.com/vmguard/vmguard/internal/guestauth"
)

// parseUsers loads a nats-server config and returns its users by name.
func parseUsers(t *testing.T, conf string) (*server.Options, map[string]*server.User) {
	t.Helper()
	file := filepath.Join(t.TempDir(), "nats.conf")
	if err := os.WriteFile(file, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	opts, err := server.ProcessConfigFile(file)
	if err != nil {
		t.Fatalf("parse config: %v\n%s", err, conf)
	}
	users := map[string]*server.User{}
	for _, u := range opts.Users {
		users[u.Username] = u
	}
	return opts, users
}

// checkPerms compares a parsed user's permissions with guestauth.For(g).
func checkPerms(t *testing.T, u *server.User, g guestauth.Guest) {
	t.Helper()
	want, err := guestauth.For(g)
	if err != nil {
		t.Fatal(err)
	}
	if u == nil || u.Permissions == nil {
		t.Fatalf("user %s: no permissions", g.Name)
	}
	if !slices.Equal(u.Permissions.Publish.Allow, want.Publish) {
		t.Errorf("user %s publish: %q, want %q", u.Username, u.Permissions.Publish.Allow, want.Publish)
	}
	if !slices.Equal(u.Permissions.Subscribe.Allow, want.Subscribe) {
		t.Errorf("user %s subscribe: %q, want %q", u.Username, u.Permissions.Subscribe.Allow, want.Subscribe)
	}
	if r := u.Permissions.Response; r == nil || r.MaxMsgs != 1 || r.Expires != want.Responses {
		t.Errorf("user %s responses: %+v", u.Username, r)
	}
}

func TestGuestPermissionsCommand(t *testing.T) {
	t.Setenv("WEBVM_PASSWORD", `s3cr"et`)
	code, out, errOut := runCLI("guest-permissions", "--guest", "webvm", "-p", "web", "-p", "api",
		"-n", "node2", "-n", "node1", "--user", "web-agent", "--password-env", "WEBVM_PASSWORD")
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	_, users := parseUsers(t, "authorization { users = [\n"+out+"] }\n")
	u := users["web-agent"]
	if u == nil || u.Password != `s3cr"et` {
		t.Fatalf("user web-agent: %+v\n%s", u, out)
	}
	checkPerms(t, u, guestauth.Guest{Name: "webvm", Packages: []string{"api", "web"}, Nodes: []string{"node1", "node2"}, InboxPrefix: guestauth.InboxPrefix("webvm")})
	if !strings.Contains(out, "vmguard agent --guest webvm --node <node>") {
		t.Errorf("no agent hint:\n%s", out)
	}

	// From the cluster config: dbvm runs package db, which lists three nodes;
	// a random password when none is given.
	code, out, errOut = runCLI("guest-permissions", "--guest", "dbvm", "-f", "../../examples/demo.yaml",
		"--inbox-prefix", guestauth.InboxPrefix("dbvm"))
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	_, users = parseUsers(t, "authorization { users = [\n"+out+"] }\n")
	if u := users["dbvm"]; u == nil || len(u.Password) < 20 {
		t.Fatalf("user dbvm: %+v", u)
	}
	checkPerms(t, users["dbvm"], guestauth.Guest{Name: "dbvm", Packages: []string{"db"},
		Nodes: []string{"node1", "node2", "node3"}, InboxPrefix: guestauth.InboxPrefix("dbvm")})

	for _, args := range [][]string{
		{"--guest", "webvm"}, // no package
		{"--guest", "web.vm", "-p", "web"},
		{"--guest", "webvm", "-p", "web", "-n", "node>"},
		{"--guest", "webvm", "-p", "web", "--password-env", "VMGUARD_TEST_UNSET_VARIABLE"},
		{"--guest", "nosuchvm", "-f", "../../examples/demo.yaml"},
		{"--guest", "webvm", "-p", "web", "--user", "a b"},
	} {
		if code, _, errOut := runCLI(append([]string{"guest-permissions"}, args...)...); code != exitUsage {
			t.Errorf("%q: exit %d, want %d (%s)", args, code, exitUsage, errOut)
		}
	}
}

// TestServerWithGuestsConfig runs `vmguard server -c examples/nats-guests.conf`
// and checks who may do what on it.
func TestServerWithGuestsConfig(t *testing.T) {
	const example = "../../examples/nats-guests.conf"
	// The example's passwords come from the server's environment.
	pass := map[string]string{"VMGUARD_ADMIN_PASSWORD": "admin-" + rand.Text(), "VMGUARD_WEBVM_PASSWORD": "webvm-" + rand.Text(), "VMGUARD_DBVM_PASSWORD": "dbvm-" + rand.Text()}
	for k, v := range pass {
		t.Setenv(k, v)
	}
	if strings.Contains(mustRead(t, example), "CHANGE-ME") {
		t.Error("the example ships a placeholder password")
	}
	_, users := parseUsers(t, mustRead(t, example))
	for _, g := range []guestauth.Guest{
		{Name: "webvm", Packages: []string{"web"}, Nodes: []string{"node1", "node2", "node3"}, InboxPrefix: guestauth.InboxPrefix("webvm")},
		{Name: "dbvm", Packages: []string{"db"}, Nodes: []string{"node1", "node2", "node3"}, InboxPrefix: guestauth.InboxPrefix("dbvm")},
	} {
		checkPerms(t, users[g.Name], g)
	}

	port := freePort(t)
	cmd := exec.Command(vmguardBin, "server", "-c", example, "--store", t.TempDir(), "--port", fmt.Sprint(port), "-q")
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	waitFor(t, 30*time.Second, "vmguard server ready", func() bool { return strings.Contains(out.String(), "ready") })
	url := fmt.Sprintf("nats://127.0.0.1:%d", port)

	if nc, err := nats.Connect(url, nats.NoReconnect()); err == nil {
		nc.Close()
		t.Error("a client without credentials connected")
	}
	if nc, err := nats.Connect(url, nats.UserInfo("vmguard-server", "in-process-only"), nats.NoReconnect()); err == nil {
		nc.Close()
		t.Error("a network client connected as the in-process user")
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	admin := dialLog(t, "nats://admin:"+pass["VMGUARD_ADMIN_PASSWORD"]+"@"+strings.TrimPrefix(url, "nats://"))
	if _, err := admin.Append(ctx, events.New("/vmguard/cli/test", "node1", events.NodeHalted{Reason: "test"})); err != nil {
		t.Fatalf("admin append: %v", err)
	}
	guest := dialLog(t, "nats://webvm:"+pass["VMGUARD_WEBVM_PASSWORD"]+"@"+strings.TrimPrefix(url, "nats://"), nats.CustomInboxPrefix(guestauth.InboxPrefix("webvm")))
	src := guestagent.Source("webvm")
	if _, err := guest.Append(ctx, events.New(src, "web", events.ProcessStarted{
		Guest: "webvm", Service: "httpd", PID: 1, RequestID: "r", Epoch: 1})); err != nil {
		t.Fatalf("guest append of its own process event: %v", err)
	}
	rctx, rcancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer rcancel()
	if _, err := guest.Append(rctx, events.New(src, "node1", events.NodeLost{Reason: "lease expired"})); err == nil {
		t.Error("guest appended node.lost")
	}
}

func mustRead(t *testing.T, file string) string {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
