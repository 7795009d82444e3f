package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
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
	"github.com/vmguard/vmguard/internal/guestauth"
	"github.com/vmguard/vmguard/internal/natsconn"
	"github.com/vmguard/vmguard/internal/natsd/natstest"
)

// leafConfig: guest webvm runs package web on node1, guest dbvm package
// db on node2, each "in a VM" (started by the test, the exec driver's
// commands do nothing); web's service exits every second.
const leafConfig = `cluster: leaf
node_timeout: 10s
guest_timeout: 10s
nodes: [node1, node2]
packages:
  - name: web
    nodes: [node1]
    guest:
      name: webvm
      driver: exec
      start_timeout: 60s
      exec: {start: ["true"], stop: ["true"], status: ["true"]}
    services:
      - name: tick
        cmd: ["sh", "-c", "sleep 1; exit 1"]
        restart: unlimited
        halt_timeout: 1s
  - name: db
    nodes: [node2]
    guest:
      name: dbvm
      driver: exec
      start_timeout: 60s
      exec: {start: ["true"], stop: ["true"], status: ["true"]}
    services:
      - name: steady
        cmd: ["sleep", "3600"]
        halt_timeout: 1s
`

// leafz is what the server's /leafz says of one leaf connection.
type leafz struct {
	Account string `json:"account"`
	InMsgs  int64  `json:"in_msgs"`
	InBytes int64  `json:"in_bytes"`
}

// hubLeafs reads the server's leaf connections by account.
func hubLeafs(t *testing.T, httpPort int) map[string]leafz {
	t.Helper()
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/leafz", httpPort))
	if err != nil {
		t.Fatalf("read /leafz: %v", err)
	}
	defer resp.Body.Close()
	var z struct {
		Leafs []leafz `json:"leafs"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&z); err != nil {
		t.Fatalf("decode /leafz: %v", err)
	}
	out := map[string]leafz{}
	for _, l := range z.Leafs {
		out[l.Account] = l
	}
	return out
}

// TestLeafNodes: a `vmguard init --leaf` set-up. Each host manager runs
// its node's leaf node (vmguard host --leaf); each guest's agent
// connects to its host's leaf with its own identity and runs its
// services: its process events reach the log through the host's gate
// and the server's, its lease watch reads the server's JetStream across
// the leaf connection. The guest's credentials are refused by the
// server and by the other host's leaf; a leaf's own credentials are
// refused as a client; a guest on node1's leaf reaches no guest on
// node2's; requests to a guest and its heartbeats never cross to the
// server; and a guest flooding junk on its event and heartbeat subjects
// makes its leaf forward almost nothing (the leaf connection's messages
// into the server, from its /leafz), while its service keeps being
// restarted after the flood.
func TestLeafNodes(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test with OS processes; run without -short")
	}
	ctx := context.Background()
	ports := freePorts(t, 4)
	hubLeaf, leaf1, leaf2, httpPort := ports[0], ports[1], ports[2], ports[3]
	e := newSecureEnvInit(t, leafConfig,
		func(out string) []string {
			return []string{"--leaf", fmt.Sprintf("tls://127.0.0.1:%d", hubLeaf), "--leaf-listen", fmt.Sprintf("127.0.0.1:%d", leaf1), "--install-dir", out}
		},
		"--http", fmt.Sprint(httpPort))
	if o, err := e.cli("operator-admin", "apply", "-f", e.cfg); err != nil {
		t.Fatalf("apply as operator-admin: %v\n%s", err, o)
	}
	// The guests' users are on the leaves only.
	hubConf, err := os.ReadFile(filepath.Join(e.out, "nats.conf"))
	if err != nil {
		t.Fatal(err)
	}
	leaf1Conf, err := os.ReadFile(filepath.Join(e.out, "leaf-node1", "leaf.conf"))
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"guest-webvm", "guest-dbvm"} {
		if strings.Contains(string(hubConf), id+":") {
			t.Errorf("the server's nats.conf has %s's user", id)
		}
	}
	if !strings.Contains(string(leaf1Conf), "guest-webvm:") || strings.Contains(string(leaf1Conf), "guest-dbvm:") {
		t.Error("leaf-node1/leaf.conf: want guest-webvm's user and not guest-dbvm's")
	}

	c := &cluster{t: t, url: e.url, dir: e.dir, procs: map[string]*exec.Cmd{}, logs: map[string]*syncBuffer{}, env: map[string][]string{
		"failover": e.env("controller"), "node1": e.env("host-node1"), "node2": e.env("host-node2"),
	}}
	defer c.stopAll()
	c.start("failover", "failover")
	c.start("node1", "host", "--node", "node1", "--state", filepath.Join(e.dir, "node1"), "--no-guard",
		"--leaf", filepath.Join(e.out, "leaf-node1", "leaf.conf"))
	c.start("node2", "host", "--node", "node2", "--state", filepath.Join(e.dir, "node2"), "--no-guard",
		"--leaf", filepath.Join(e.out, "leaf-node2", "leaf.conf"), "--leaf-listen", fmt.Sprintf("127.0.0.1:%d", leaf2))
	leafURL := func(port int) string { return fmt.Sprintf("nats://127.0.0.1:%d", port) }
	for _, a := range []struct {
		guest, node string
		port        int
	}{{"webvm", "node1", leaf1}, {"dbvm", "node2", leaf2}} {
		ac := &cluster{t: t, url: leafURL(a.port), dir: e.dir, procs: map[string]*exec.Cmd{}, logs: map[string]*syncBuffer{},
			env: map[string][]string{"agent": identityEnv(e.out, "guest-"+a.guest, leafURL(a.port))}}
		defer ac.stopAll()
		ac.start("agent", "agent", "--guest", a.guest, "--node", a.node, "--state", filepath.Join(e.dir, "agent-"+a.guest))
	}

	admin := dialLogFlags(t, e.flags("operator-admin"))
	natstest.WaitFor(t, 90*time.Second, "3 restarts of tick through node1's leaf and both gates", func() bool {
		return len(restarts(readLog(t, admin), "tick")) >= 3
	})
	natstest.WaitFor(t, 60*time.Second, "db's steady service started on node2 through its leaf", func() bool {
		for _, x := range readLog(t, admin) {
			if d, ok := x.Data.(events.ProcessStarted); ok && d.Service == "steady" {
				return true
			}
		}
		return false
	})
	for _, x := range readLog(t, admin) {
		if strings.HasPrefix(x.Type(), "io.vmguard.process.") && x.Source != events.GuestSource("webvm") && x.Source != events.GuestSource("dbvm") {
			t.Errorf("process event from %s, want a guest's agent", x.Source)
		}
	}

	// A guest's identity is valid on its nodes' leaves only.
	guestFlags := func(url string) natsconn.Flags {
		f := e.flags("guest-webvm")
		f.NATS = url
		return f
	}
	for _, tc := range []struct{ what, url string }{{"the server", e.url}, {"node2's leaf", leafURL(leaf2)}} {
		nc, err := guestFlags(tc.url).Connect("test", nats.NoReconnect())
		if err == nil {
			nc.Close()
			t.Errorf("guest-webvm connected to %s", tc.what)
		} else if !strings.Contains(err.Error(), "authorization") {
			t.Errorf("guest-webvm at %s: %v, want an authorization failure", tc.what, err)
		}
	}
	// A leaf's own identity is no client's.
	seed := regexp.MustCompile(`nkey: "(SU[A-Z0-9]+)"`).FindSubmatch(leaf1Conf)
	if seed == nil {
		t.Fatal("no remote seed in leaf-node1/leaf.conf")
	}
	kf := filepath.Join(t.TempDir(), "leaf.nk")
	if err := os.WriteFile(kf, append(seed[1], '\n'), 0o600); err != nil {
		t.Fatal(err)
	}
	lf := e.flags("operator-admin")
	lf.NKey = kf
	if nc, err := lf.Connect("test", nats.NoReconnect()); err == nil {
		nc.Close()
		t.Error("a leaf's identity connected to the server as a client")
	}

	// No secret of the set-up in the command line or environment of any
	// process of it: the server, the controller, the host managers (with
	// their leaves), the agents, and the services they run.
	var steady int
	for _, x := range readLog(t, admin) {
		if d, ok := x.Data.(events.ProcessStarted); ok && d.Service == "steady" {
			steady = d.PID
		}
	}
	checkNoSecretsInProc(t, secretsIn(t, e.out), []string{e.dir, vmguardBin}, steady)

	// On its leaf, guest webvm reaches no other guest; the host manager
	// reaches it there, nobody reaches it through the server.
	guest, err := guestFlags(leafURL(leaf1)).Connect("test as guest webvm", nats.CustomInboxPrefix(guestauth.InboxPrefix("webvm")))
	if err != nil {
		t.Fatalf("guest-webvm on node1's leaf: %v", err)
	}
	defer guest.Close()
	if _, err := guest.Request(guestagent.Subject("dbvm", "ping"), []byte("{}"), 2*time.Second); err == nil {
		t.Error("guest webvm on node1's leaf reached guest dbvm's agent")
	}
	adminNC, err := e.flags("operator-admin").Connect("test as operator-admin")
	if err != nil {
		t.Fatal(err)
	}
	defer adminNC.Close()
	for _, g := range []string{"webvm", "dbvm"} {
		cl, err := guestagent.NewClient(adminNC, g)
		if err != nil {
			t.Fatal(err)
		}
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, err = cl.Ping(pctx)
		cancel()
		if err == nil {
			t.Errorf("operator-admin reached guest %s's agent through the server", g)
		}
	}
	beats := make(chan *nats.Msg, 64)
	sub, err := adminNC.ChanSubscribe("vmguard.hb.>", beats)
	if err != nil {
		t.Fatal(err)
	}
	gates := make(chan *nats.Msg, 4096)
	gsub, err := adminNC.ChanSubscribe(guestauth.GatePrefix+".>", gates)
	if err != nil {
		t.Fatal(err)
	}
	_ = gsub.SetPendingLimits(-1, -1)

	// Flood: junk on the event and heartbeat subjects, as fast as the
	// guest can, for 3 s.
	before := hubLeafs(t, httpPort)[guestauth.GuestAccount("webvm")]
	subj := events.PackageSubject("web", "process", "exited")
	junk := make([]byte, 32<<10)
	var sent int
	end := time.Now().Add(3 * time.Second)
	for time.Now().Before(end) {
		for range 100 {
			if err := guest.Publish(subj, junk); err != nil {
				t.Fatalf("flood: %v", err)
			}
			if err := guest.Publish(guestagent.HeartbeatSubject("webvm"), junk); err != nil {
				t.Fatalf("flood: %v", err)
			}
			sent += 2
		}
		if err := guest.FlushTimeout(10 * time.Second); err != nil {
			t.Fatalf("flood: flush: %v", err)
		}
	}
	floodEnd := time.Now()
	// What the leaf forwarded during the flood, and what reached the
	// server's gate from node1's, once the flood has drained.
	var last leafz
	var lastAt time.Time
	natstest.WaitFor(t, 30*time.Second, "node1's leaf quiet after the flood (under 10 messages in a second)", func() bool {
		cur := hubLeafs(t, httpPort)[guestauth.GuestAccount("webvm")]
		if !lastAt.IsZero() && time.Since(lastAt) < time.Second {
			return false
		}
		quiet := !lastAt.IsZero() && cur.InMsgs-last.InMsgs < 10
		last, lastAt = cur, time.Now()
		return quiet
	})
	after := hubLeafs(t, httpPort)[guestauth.GuestAccount("webvm")]
	_ = sub.Unsubscribe()
	var forwarded, gateBytes int
	for len(gates) > 0 {
		m := <-gates
		if strings.HasPrefix(m.Subject, guestauth.GatePrefix+".webvm.") {
			forwarded++
			gateBytes += len(m.Data)
		}
	}
	t.Logf("flood: %d junk messages (%d MB) sent to node1's leaf in 3 s; the leaf connection brought the server %d messages (%d bytes); node1's gate forwarded %d events (%d bytes) to the server's gate; heartbeats seen at the server: %d",
		sent, sent*len(junk)>>20, after.InMsgs-before.InMsgs, after.InBytes-before.InBytes, forwarded, gateBytes, len(beats))
	if n := len(beats); n != 0 {
		t.Errorf("%d heartbeats reached the server, want none (they stay on the host)", n)
	}
	// The agent's own lease reads (a few a second) cross the leaf; none
	// of the junk does.
	if in := after.InBytes - before.InBytes; in > int64(len(junk)) {
		t.Errorf("node1's leaf forwarded %d bytes to the server during a flood of %d messages of %d bytes: want less than one junk message", in, sent, len(junk))
	}
	if forwarded > 0 && gateBytes > forwarded*8<<10 {
		t.Errorf("node1's gate forwarded %d bytes in %d events: junk", gateBytes, forwarded)
	}

	// The service keeps being restarted after the flood.
	n0 := len(restarts(readLog(t, admin), "tick"))
	natstest.WaitFor(t, 60*time.Second, "2 more restarts of tick after the flood", func() bool {
		return len(restarts(readLog(t, admin), "tick")) >= n0+2
	})
	t.Logf("restarts resumed %v after the flood", time.Since(floodEnd).Round(100*time.Millisecond))

	evs := readLog(t, admin)
	if n := admin.Skipped(); n != 0 {
		t.Errorf("%d malformed messages in the log (of %d events)", n, len(evs))
	}
	for _, x := range evs {
		switch x.Type() {
		case "io.vmguard.node.fenced.v1", "io.vmguard.node.lost.v1", "io.vmguard.guest.lost.v1":
			t.Errorf("%s at seq %d", x.Type(), x.Seq)
		}
	}
	if v := e.violations(); len(v) > 0 {
		t.Logf("server's permission violations:\n%s", strings.Join(v, "\n"))
	}

	// The leaf lives in the host manager: killed (-9) and started again,
	// its guest's agent reconnects to the new leaf and the service is
	// restarted on as before.
	c.kill9("node1")
	killed := time.Now()
	n1 := len(restarts(readLog(t, admin), "tick"))
	c.start("node1", "host", "--node", "node1", "--state", filepath.Join(e.dir, "node1"), "--no-guard",
		"--leaf", filepath.Join(e.out, "leaf-node1", "leaf.conf"))
	natstest.WaitFor(t, 60*time.Second, "2 more restarts of tick after node1's host manager and leaf restarted", func() bool {
		return len(restarts(readLog(t, admin), "tick")) >= n1+2
	})
	t.Logf("node1's host manager and leaf killed and restarted: tick restarted again %v after the kill", time.Since(killed).Round(100*time.Millisecond))
	for _, x := range readLog(t, admin) {
		switch x.Type() {
		case "io.vmguard.node.lost.v1", "io.vmguard.guest.lost.v1", "io.vmguard.package.failed.v1":
			t.Errorf("%s at seq %d after a restart of node1's host manager", x.Type(), x.Seq)
		case "io.vmguard.node.fenced.v1":
			t.Logf("%s at seq %d after a restart of node1's host manager", x.Type(), x.Seq)
		}
	}
}

// secretsIn returns the secrets `vmguard init` wrote under out: nkey seeds
// (user.nk files and the leaves' remote seeds), passwords of the
// in-process users, and a piece of each private key's PEM body.
func secretsIn(t *testing.T, out string) []string {
	t.Helper()
	var secrets []string
	seed := regexp.MustCompile(`SU[A-Z2-7]{50,}`)
	password := regexp.MustCompile(`password: "([^"]+)"`)
	err := filepath.WalkDir(out, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, m := range seed.FindAll(b, -1) {
			secrets = append(secrets, string(m))
		}
		for _, m := range password.FindAllSubmatch(b, -1) {
			secrets = append(secrets, string(m[1]))
		}
		if strings.Contains(string(b), "PRIVATE KEY-----") {
			lines := strings.Split(string(b), "\n")
			if len(lines) > 2 {
				secrets = append(secrets, lines[1][:min(len(lines[1]), 40)])
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(secrets) < 10 {
		t.Fatalf("found only %d secrets under %s", len(secrets), out)
	}
	return secrets
}

// checkNoSecretsInProc fails if the command line or environment of any
// process whose command line names one of marks (the test's directory,
// its vmguard binary), or of the extra pids, holds one of secrets. It
// reads /proc.
func checkNoSecretsInProc(t *testing.T, secrets, marks []string, extra ...int) {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	checked := 0
	for _, en := range entries {
		var pid int
		if _, err := fmt.Sscan(en.Name(), &pid); err != nil {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", en.Name(), "cmdline"))
		if err != nil {
			continue
		}
		mine := false
		for _, m := range marks {
			mine = mine || strings.Contains(string(cmdline), m)
		}
		for _, x := range extra {
			mine = mine || x == pid
		}
		if !mine {
			continue
		}
		environ, err := os.ReadFile(filepath.Join("/proc", en.Name(), "environ"))
		if err != nil {
			t.Errorf("read environ of %d: %v", pid, err)
			continue
		}
		checked++
		for _, sec := range secrets {
			if strings.Contains(string(cmdline), sec) || strings.Contains(string(environ), sec) {
				t.Errorf("process %d (%s) shows a secret of the set-up in its command line or environment", pid, strings.ReplaceAll(string(cmdline), "\x00", " "))
			}
		}
	}
	// The server, the controller, two host managers, two agents and a service.
	if checked < 7 {
		t.Errorf("checked %d processes, want at least 7", checked)
	}
	t.Logf("no secret (%d of them) in the command line or environment of %d processes", len(secrets), checked)
}
