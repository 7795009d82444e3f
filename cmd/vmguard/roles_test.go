package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/vmguard/vmguard/events"
	"github.com/vmguard/vmguard/guestagent"
	"github.com/vmguard/vmguard/internal/lease"
	"github.com/vmguard/vmguard/internal/natsconn"
	"github.com/vmguard/vmguard/internal/natsd/natstest"
)

// rolesConfig gives each node a package of its own, so that a host has a
// package and a guest it may not act for.
const rolesConfig = `cluster: roles
node_timeout: 3s
guest_timeout: 3s
nodes: [node1, node2]
packages:
  - name: web
    nodes: [node1]
    guest: {name: webvm, driver: process, start_timeout: 20s}
    services:
      - name: httpd
        cmd: ["sh", "-c", "while :; do sleep 1; done"]
        halt_timeout: 1s
  - name: db
    nodes: [node2]
    guest: {name: dbvm, driver: process, start_timeout: 20s}
    services:
      - name: store
        cmd: ["sh", "-c", "while :; do sleep 1; done"]
        halt_timeout: 1s
`

// secureEnv is a `vmguard init` set-up with its `vmguard server` running.
type secureEnv struct {
	t      *testing.T
	dir    string
	out    string // vmguard init's --out
	cfg    string
	url    string
	server *syncBuffer // the server's own log: permission violations
}

// newSecureEnv runs `vmguard init` on config and starts `vmguard server`
// with its nats.conf and serverArgs, logging.
func newSecureEnv(t *testing.T, config string, serverArgs ...string) *secureEnv {
	t.Helper()
	return newSecureEnvInit(t, config, func(string) []string { return nil }, serverArgs...)
}

// newSecureEnvInit is newSecureEnv with more `vmguard init` arguments,
// given the init directory.
func newSecureEnvInit(t *testing.T, config string, initArgs func(out string) []string, serverArgs ...string) *secureEnv {
	t.Helper()
	dir := t.TempDir()
	e := &secureEnv{t: t, dir: dir, out: filepath.Join(dir, "init"), cfg: filepath.Join(dir, "cluster.yaml")}
	if err := os.WriteFile(e.cfg, []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	if code, stdout, stderr := runCLI(append([]string{"init", "-f", e.cfg, "--out", e.out}, initArgs(e.out)...)...); code != 0 {
		t.Fatalf("init: exit %d: %s%s", code, stdout, stderr)
	}
	port := freePort(t)
	e.url = fmt.Sprintf("nats://127.0.0.1:%d", port)
	srv := exec.Command(vmguardBin, append([]string{"server", "-c", filepath.Join(e.out, "nats.conf"), "--store", filepath.Join(dir, "store"),
		"--port", fmt.Sprint(port)}, serverArgs...)...)
	e.server = &syncBuffer{}
	srv.Stdout, srv.Stderr = e.server, e.server
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = srv.Process.Kill()
		_ = srv.Wait()
		if t.Failed() {
			t.Logf("--- server log:\n%s", e.server.String())
		}
	})
	natstest.WaitFor(t, 30*time.Second, "vmguard server with init's config ready", func() bool { return strings.Contains(e.server.String(), "stream VMGUARD ready") })
	return e
}

// env is the environment that connects as identity id.
func (e *secureEnv) env(id string) []string { return identityEnv(e.out, id, e.url) }

// flags are the connection flags of identity id.
func (e *secureEnv) flags(id string) natsconn.Flags {
	d := filepath.Join(e.out, id)
	return natsconn.Flags{NATS: e.url, NKey: filepath.Join(d, "user.nk"), TLSCA: filepath.Join(d, "ca.pem"),
		TLSCert: filepath.Join(d, "cert.pem"), TLSKey: filepath.Join(d, "key.pem")}
}

// cli runs a vmguard command as identity id.
func (e *secureEnv) cli(id string, args ...string) (string, error) {
	cmd := exec.Command(vmguardBin, args...)
	cmd.Env = e.env(id)
	b, err := cmd.CombinedOutput()
	return string(b), err
}

// violations returns the server's permission violation lines.
func (e *secureEnv) violations() []string {
	var out []string
	for line := range strings.Lines(e.server.String()) {
		if strings.Contains(line, "Violation") {
			out = append(out, strings.TrimSpace(line))
		}
	}
	return out
}

// roleConn is a connection as one identity that collects the server's
// asynchronous permission errors.
type roleConn struct {
	id   string
	nc   *nats.Conn
	errs chan error
}

func (e *secureEnv) connect(id string) *roleConn {
	e.t.Helper()
	rc := &roleConn{id: id, errs: make(chan error, 64)}
	nc, err := e.flags(id).Connect("roles test "+id, nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		select {
		case rc.errs <- err:
		default:
		}
	}))
	if err != nil {
		e.t.Fatalf("connect as %s: %v", id, err)
	}
	e.t.Cleanup(nc.Close)
	rc.nc = nc
	return rc
}

// refused publishes m and wants the server to refuse it: a permissions
// violation naming its subject within a few seconds.
func (rc *roleConn) refused(t *testing.T, what string, m *nats.Msg) {
	t.Helper()
	if m.Reply == "" {
		m.Reply = rc.nc.NewRespInbox()
	}
	if err := rc.nc.PublishMsg(m); err != nil {
		t.Fatalf("%s %s: publish: %v", rc.id, what, err)
	}
	want := fmt.Sprintf("Publish to %q", m.Subject)
	deadline := time.After(10 * time.Second)
	for {
		select {
		case err := <-rc.errs:
			if errors.Is(err, nats.ErrPermissionViolation) && strings.Contains(err.Error(), want) {
				return
			}
		case <-deadline:
			t.Errorf("%s may %s (%s): no permissions violation", rc.id, what, m.Subject)
			return
		}
	}
}

// eventMsg is e encoded as the log stores it, on its own subject.
func eventMsg(t *testing.T, c *events.Codec, e events.Event) *nats.Msg {
	t.Helper()
	m, err := c.Encode(e)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// forger encodes events that an identity must not be able to append, and
// remembers them, so that the test can check that none was stored.
type forger struct {
	t     *testing.T
	codec *events.Codec
	ids   map[string]bool
}

// msg encodes a new event of source about subject with d, remembered.
func (f *forger) msg(source, subject string, d events.Payload) *nats.Msg {
	f.t.Helper()
	x := events.New(source, subject, d)
	if f.ids == nil {
		f.ids = map[string]bool{}
	}
	f.ids[x.ID] = true
	return eventMsg(f.t, f.codec, x)
}

// noneStored fails the test for each forged event among evs.
func (f *forger) noneStored(evs []events.Event) {
	f.t.Helper()
	for _, x := range evs {
		if f.ids[x.ID] {
			f.t.Errorf("a refused event was stored: %s", formatEvent(x))
		}
	}
}

// TestRolesEnforcedByServer runs a `vmguard init` set-up: the server with
// its nats.conf (TLS with verified client certificates, an nkey user per
// role), the controller, and each node's host manager with its own
// identity; the packages run with no permission violation. Then every
// identity tries what its role may not do and the server refuses each
// (and nothing of it is stored); operator-readonly reads the status; an
// anonymous client, a client of another CA and `nats req` of an agent run
// as operator-readonly are refused.
func TestRolesEnforcedByServer(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test with OS processes; run without -short")
	}
	ctx := context.Background()
	e := newSecureEnv(t, rolesConfig, "--sync-interval")
	if o, err := e.cli("operator-admin", "apply", "-f", e.cfg); err != nil {
		t.Fatalf("apply as operator-admin: %v\n%s", err, o)
	}
	c := &cluster{t: t, url: e.url, dir: e.dir, procs: map[string]*exec.Cmd{}, logs: map[string]*syncBuffer{}, env: map[string][]string{
		"failover": e.env("controller"), "node1": e.env("host-node1"), "node2": e.env("host-node2"),
	}}
	defer c.stopAll()
	c.start("failover", "failover")
	for _, n := range []string{"node1", "node2"} {
		c.start(n, "host", "--node", n, "--state", filepath.Join(e.dir, n), "--agent-bin", vmguardBin)
	}
	status := func() map[string]string {
		o, err := e.cli("operator-readonly", "status", "-o", "json")
		if err != nil {
			t.Fatalf("status as operator-readonly: %v\n%s", err, o)
		}
		var v struct {
			Packages []struct{ Name, Node, State string }
		}
		if err := json.Unmarshal([]byte(o), &v); err != nil {
			t.Fatalf("status -o json: %v\n%s", err, o)
		}
		got := map[string]string{}
		for _, p := range v.Packages {
			got[p.Name] = p.State + " on " + p.Node
		}
		return got
	}
	natstest.WaitFor(t, 90*time.Second, "web running on node1 and db on node2 (each role with its own identity)", func() bool {
		s := status()
		return s["web"] == "running on node1" && s["db"] == "running on node2"
	})
	for _, v := range e.violations() {
		t.Errorf("permission violation while the roles ran the cluster: %s", v)
	}

	admin := dialLogFlags(t, e.flags("operator-admin"))
	forged := &forger{t: t, codec: admin.Codec()}
	ev := forged.msg
	placed := func(src string) *nats.Msg {
		return ev(src, "web", events.PackagePlaced{Node: "node1", Epoch: 99, Reason: "forged"})
	}
	// A forged marker would move a package's sequence and make the
	// controller's guarded placements of linked packages conflict.
	checked := func(src string) *nats.Msg {
		return ev(src, "web", events.PackageChecked{For: "db", Seq: 1})
	}
	leasePut := func(node string) *nats.Msg {
		return &nats.Msg{Subject: lease.KeySubject(node), Data: lease.Value{Node: node, Holder: "forged", TTLMS: 3000}.Encode()}
	}
	leaseDel := func(node string) *nats.Msg {
		m := nats.NewMsg(lease.KeySubject(node))
		m.Header.Set("KV-Operation", "DEL")
		return m
	}
	run := func(guest string) *nats.Msg {
		b, _ := json.Marshal(guestagent.RunRequest{Package: "web", Service: "x", Argv: []string{"sh", "-c", "touch " + filepath.Join(e.dir, "pwned")}, RequestID: "x1", Epoch: 1})
		return &nats.Msg{Subject: guestagent.Subject(guest, guestagent.EndpointRun), Data: b}
	}
	api := func(verb string) *nats.Msg { return &nats.Msg{Subject: "$JS.API." + verb} }
	cfgApplied := func(src string) *nats.Msg {
		return ev(src, "roles", events.ConfigApplied{Config: json.RawMessage(`{}`), Hash: "forged"})
	}

	type attack struct {
		what string
		m    *nats.Msg
	}
	attacks := map[string][]attack{
		"host-node1": {
			{"append a placement", placed(events.HostSource("node1"))},
			{"append the controller's package.checked", checked(events.ControllerSource)},
			{"append another node's node.fenced", ev(events.HostSource("node2"), "node2", events.NodeFenced{Reason: "forged"})},
			{"set another node's generic resource", ev(events.HostSource("node2"), "node2", events.NodeResourceSet{Name: "disk", Status: "down"})},
			{"append node.lost", ev(events.ControllerSource, "node2", events.NodeLost{Reason: "forged"})},
			{"append the lifecycle of another node's package", ev(events.HostSource("node1"), "db", events.PackageStarting{Node: "node1", Epoch: 99})},
			{"append a config", cfgApplied(events.OperatorSource("x"))},
			{"append an operator's package.reset", ev(events.OperatorSource("x"), "web", events.PackageReset{By: "x"})},
			{"write another node's lease", leasePut("node2")},
			{"delete another node's lease", leaseDel("node2")},
			{"run in another node's guest", run("dbvm")},
			{"write the controller's election key", &nats.Msg{Subject: "$KV.vmguard_failover.leader", Data: []byte("{}")}},
			{"delete the log", api("STREAM.DELETE.VMGUARD")},
			{"purge the log", api("STREAM.PURGE.VMGUARD")},
			{"change the log", api("STREAM.UPDATE.VMGUARD")},
			{"list consumers", api("CONSUMER.LIST.VMGUARD")},
		},
		"controller": {
			{"append a host's package.started", ev(events.HostSource("node1"), "web", events.PackageStarted{Node: "node1", Epoch: 99})},
			{"append node.joined", ev(events.HostSource("node1"), "node1", events.NodeJoined{})},
			{"set a generic resource", ev(events.OperatorSource("x"), "node1", events.NodeResourceSet{Name: "disk", Status: "down"})},
			{"append a process event", ev(events.GuestSource("webvm"), "web", events.ProcessExited{Guest: "webvm", Service: "x", PID: 1, RequestID: "x", Epoch: 1})},
			{"append a config", cfgApplied(events.OperatorSource("x"))},
			{"write a lease", leasePut("node1")},
			{"delete a lease", leaseDel("node1")},
			{"run in a guest", run("webvm")},
			{"delete the log", api("STREAM.DELETE.VMGUARD")},
		},
		"operator-readonly": {
			{"append a placement", placed(events.OperatorSource("x"))},
			{"append package.checked", checked(events.ControllerSource)},
			{"append a process event", ev(events.GuestSource("webvm"), "web", events.ProcessExited{Guest: "webvm", Service: "x", PID: 1, RequestID: "x", Epoch: 1})},
			{"append node.lost", ev(events.ControllerSource, "node1", events.NodeLost{Reason: "forged"})},
			{"set a generic resource", ev(events.OperatorSource("x"), "node1", events.NodeResourceSet{Name: "disk", Status: "down"})},
			{"append a config", cfgApplied(events.OperatorSource("x"))},
			{"write a lease", leasePut("node1")},
			{"delete a lease", leaseDel("node1")},
			{"run in a guest", run("webvm")},
			{"send a heartbeat", &nats.Msg{Subject: guestagent.HeartbeatSubject("webvm"), Data: []byte("{}")}},
			{"write the election key", &nats.Msg{Subject: "$KV.vmguard_failover.leader", Data: []byte("{}")}},
			{"delete the log", api("STREAM.DELETE.VMGUARD")},
			{"purge the log", api("STREAM.PURGE.VMGUARD")},
			{"delete a lease bucket", api("STREAM.DELETE.KV_vmguard_leases")},
			{"change the lease bucket", api("STREAM.UPDATE.KV_vmguard_leases")},
		},
		"guest-webvm": {
			{"append a placement of its own package", placed(events.GuestSource("webvm"))},
			{"append package.checked on its own package", checked(events.GuestSource("webvm"))},
			{"append node.lost", ev(events.GuestSource("webvm"), "node1", events.NodeLost{Reason: "forged"})},
			{"write its node's lease", leasePut("node1")},
			{"run in another guest", run("dbvm")},
			{"delete the log", api("STREAM.DELETE.VMGUARD")},
		},
	}
	for id, as := range attacks {
		rc := e.connect(id)
		for _, a := range as {
			rc.refused(t, a.what, a.m)
		}
	}

	// Nothing of it was stored or run.
	forged.noneStored(readLog(t, admin))
	kv, err := lease.Open(ctx, admin.JetStream())
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"node1", "node2"} {
		le, err := kv.Get(ctx, n)
		if err != nil {
			t.Fatalf("lease of %s after the attacks: %v", n, err)
		}
		if v, _ := lease.Decode(le.Value()); v.Holder == "forged" {
			t.Errorf("lease of %s was written by an attacker: %+v", n, v)
		}
	}
	if _, err := os.Stat(filepath.Join(e.dir, "pwned")); err == nil {
		t.Error("a refused run ran")
	}
	if s := status(); s["web"] != "running on node1" || s["db"] != "running on node2" {
		t.Errorf("after the attacks: %v", s)
	}

	// `nats req` of an agent run as operator-readonly, as the issue tried it.
	ro := e.flags("operator-readonly")
	req := natsCLI(t, "--server", e.url, "--nkey", ro.NKey, "--tlsca", ro.TLSCA, "--tlscert", ro.TLSCert, "--tlskey", ro.TLSKey,
		"--timeout", "3s", "req", "vmguard.agent.webvm.run", string(run("webvm").Data))
	// (natscli v0.5.0 prints the violation but may still exit 0.)
	if o, _ := req.CombinedOutput(); !regexp.MustCompile(`Permissions Violation for Publish to "vmguard.agent.webvm.run"`).Match(o) {
		t.Errorf("nats req vmguard.agent.webvm.run as operator-readonly: want a permissions violation:\n%s", o)
	}
	if _, err := os.Stat(filepath.Join(e.dir, "pwned")); err == nil {
		t.Error("a refused run ran")
	}

	// Anonymous, and a client certificate of another CA, are refused.
	if nc, err := nats.Connect(e.url, nats.Timeout(2*time.Second), nats.RootCAs(ro.TLSCA)); err == nil {
		nc.Close()
		t.Error("an anonymous TLS client connected")
	}
	other := filepath.Join(e.dir, "other")
	if code, _, stderr := runCLI("init", "-f", e.cfg, "--out", other); code != 0 {
		t.Fatalf("second init: %s", stderr)
	}
	wrong := e.flags("operator-admin")
	wrong.TLSCert, wrong.TLSKey = filepath.Join(other, "operator-admin", "cert.pem"), filepath.Join(other, "operator-admin", "key.pem")
	if nc, err := wrong.Connect("wrong cert"); err == nil {
		nc.Close()
		t.Error("a client certificate of another CA was accepted")
	}
	wrong = e.flags("operator-admin")
	wrong.NKey = filepath.Join(other, "operator-admin", "user.nk")
	if nc, err := wrong.Connect("wrong nkey"); err == nil {
		nc.Close()
		t.Error("an nkey of another set-up was accepted")
	}
}

// dialLogFlags opens the log as the identity of f.
func dialLogFlags(t *testing.T, f natsconn.Flags) *events.Log {
	t.Helper()
	nc, err := f.Connect("test")
	return openDialed(t, nc, err)
}
