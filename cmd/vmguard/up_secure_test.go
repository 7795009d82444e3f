package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/vmguard/vmguard/events"
	"github.com/vmguard/vmguard/internal/guestauth"
	"github.com/vmguard/vmguard/internal/invariant"
	"github.com/vmguard/vmguard/internal/natsconn"
	"github.com/vmguard/vmguard/internal/natsd/natstest"
)

// TestUpSecure runs `vmguard up --secure` on the demo: it writes its set-up
// into the store (files mode 0600), the packages start and the flaky
// service is restarted with every component under its own identity; the
// printed operator variables make `vmguard status` work; an anonymous
// client is refused; guest webvm's identity cannot append guest dbvm's
// event or a placement, operator-readonly cannot append, and nothing of it
// is stored. A second run on the same store keeps the set-up (same keys)
// and runs the packages again.
func TestUpSecure(t *testing.T) {
	if testing.Short() {
		t.Skip("runs vmguard up twice; run without -short")
	}
	ctx := context.Background()
	work := t.TempDir()
	store := filepath.Join(work, ".vmguard") // up's default store in work
	port := freePort(t)
	cmd, out := runUp(t, store, port, "--secure", "--ui", "off")
	natstest.WaitFor(t, 90*time.Second, "web and db started, and a restart of the flaky service", func() bool {
		s := out.String()
		return strings.Contains(s, "web            package.started") && strings.Contains(s, "db             package.started") &&
			strings.Contains(s, "service.restarting")
	})
	dir := filepath.Join(store, "secure")
	for _, f := range []string{"nats.conf", "operator-admin/user.nk", "operator-readonly/user.nk", "controller/user.nk",
		"host-node1/user.nk", "guest-webvm/user.nk", "guest-dbvm/user.nk"} {
		st, err := os.Stat(filepath.Join(dir, f))
		if err != nil || st.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v, mode %v; want mode 0600", f, err, st)
		}
	}

	// The banner's variables are what an operator pastes.
	m := regexp.MustCompile(`export NATS_URL=(\S+) NATS_NKEY=(\S+)`).FindStringSubmatch(out.String())
	if m == nil {
		t.Fatalf("no operator variables in up's banner:\n%s", out.String())
	}
	url, adminNK := m[1], m[2]
	if want, _ := filepath.Abs(filepath.Join(dir, "operator-admin", "user.nk")); adminNK != want {
		t.Errorf("banner's NATS_NKEY %s, want %s", adminNK, want)
	}
	status := exec.Command(vmguardBin, "status")
	status.Env = append(os.Environ(), "NATS_URL="+url, "NATS_NKEY="+adminNK)
	if o, err := status.CombinedOutput(); err != nil || !strings.Contains(string(o), "web") {
		t.Errorf("status with the printed variables: %v\n%s", err, o)
	}
	// In the directory of up's default store, an operator's command finds
	// up's operator-admin identity by itself; elsewhere it has none.
	for _, tc := range []struct {
		dir string
		ok  bool
	}{{work, true}, {t.TempDir(), false}} {
		status := exec.Command(vmguardBin, "status")
		status.Dir, status.Env = tc.dir, append(os.Environ(), "NATS_URL="+url)
		if o, err := status.CombinedOutput(); (err == nil) != tc.ok || (!tc.ok && !strings.Contains(string(o), "authorization failed")) {
			t.Errorf("status with NATS_URL only in %s: %v, want success %v\n%s", tc.dir, err, tc.ok, o)
		}
	}
	if nc, err := nats.Connect(url, nats.Timeout(5*time.Second)); err == nil {
		nc.Close()
		t.Error("an anonymous client connected to up --secure")
	} else if !strings.Contains(strings.ToLower(err.Error()), "authorization") {
		t.Errorf("anonymous client: %v, want an authorization failure", err)
	}

	flags := func(id string) natsconn.Flags {
		return natsconn.Flags{NATS: url, NKey: filepath.Join(dir, id, "user.nk")}
	}
	admin := dialLogFlags(t, flags("operator-admin"))
	forged := &forger{t: t, codec: admin.Codec()}
	ev := forged.msg
	connect := func(id string, opts ...nats.Option) *roleConn {
		rc := &roleConn{id: id, errs: make(chan error, 64)}
		nc, err := flags(id).Connect("up secure test "+id, append(opts, nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			select {
			case rc.errs <- err:
			default:
			}
		}))...)
		if err != nil {
			t.Fatalf("connect as %s: %v", id, err)
		}
		t.Cleanup(nc.Close)
		rc.nc = nc
		return rc
	}

	guest := connect("guest-webvm", nats.CustomInboxPrefix(guestauth.InboxPrefix("webvm")))
	js, err := jetstream.New(guest.nc)
	if err != nil {
		t.Fatal(err)
	}
	actx, cancel := context.WithTimeout(ctx, 10*time.Second)
	other := ev(events.GuestSource("dbvm"), "db", events.ProcessExited{Guest: "dbvm", Service: "x", PID: 1, ExitCode: 1, RequestID: "forged", Epoch: 1})
	if _, err := js.PublishMsg(actx, other); err == nil {
		t.Error("guest-webvm appended guest dbvm's process.exited")
	}
	cancel()
	guest.refused(t, "append a placement", ev(events.GuestSource("webvm"), "web", events.PackagePlaced{Node: "node1", Epoch: 99, Reason: "forged"}))
	reader := connect("operator-readonly")
	reader.refused(t, "append a placement", ev(events.OperatorSource("x"), "web", events.PackagePlaced{Node: "node1", Epoch: 99, Reason: "forged"}))
	reader.refused(t, "append node.lost", ev(events.ControllerSource, "node1", events.NodeLost{Reason: "forged"}))

	evs := readLog(t, admin)
	checkUpProcesses(t, store, evs)
	forged.noneStored(evs)
	for _, p := range invariant.Check(evs) {
		t.Errorf("invariant: %s", p)
	}
	key, err := os.ReadFile(filepath.Join(dir, "guest-webvm", "user.nk"))
	if err != nil {
		t.Fatal(err)
	}
	interrupt(t, cmd, out)
	first := checkCleanStop(t, store, 0)

	// Idempotent: the second run keeps the set-up and runs the packages.
	cmd, out = runUp(t, store, port, "--secure", "--ui", "off")
	natstest.WaitFor(t, 90*time.Second, "the second run to start both packages again", func() bool {
		s := out.String()
		return strings.Contains(s, "config in force from the log") && strings.Count(s, "db             package.started") >= 2
	})
	if strings.Contains(out.String(), "vmguard init: wrote") {
		t.Error("the second run generated the set-up again")
	}
	if again, err := os.ReadFile(filepath.Join(dir, "guest-webvm", "user.nk")); err != nil || !bytes.Equal(again, key) {
		t.Errorf("guest-webvm's key changed over a restart (%v)", err)
	}
	status = exec.Command(vmguardBin, "status")
	status.Env = append(os.Environ(), "NATS_URL="+url, "NATS_NKEY="+filepath.Join(dir, "operator-readonly", "user.nk"))
	if o, err := status.CombinedOutput(); err != nil {
		t.Errorf("status as operator-readonly after the restart: %v\n%s", err, o)
	}
	interrupt(t, cmd, out)
	checkCleanStop(t, store, first)
}

// storeLog runs `vmguard server` on up's store (with up's secure set-up if
// it has one, reading as operator-admin) and opens its log; stop stops the
// server.
func storeLog(t *testing.T, store string) (l *events.Log, stop func()) {
	t.Helper()
	port := freePort(t)
	url := fmt.Sprintf("nats://127.0.0.1:%d", port)
	conf := filepath.Join(store, upSecureDir, "nats.conf")
	if _, err := os.Stat(conf); err != nil {
		srv := startServer(t, filepath.Join(store, "nats"), port)
		return dialLog(t, url), func() { _ = srv.Process.Signal(syscall.SIGINT); _ = srv.Wait() }
	}
	srv := exec.Command(vmguardBin, "server", "-c", conf, "--store", filepath.Join(store, "nats"), "--port", fmt.Sprint(port), "-q")
	out := &syncBuffer{}
	srv.Stdout, srv.Stderr = out, out
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Process.Kill(); _ = srv.Wait() })
	natstest.WaitFor(t, 30*time.Second, "vmguard server with up's set-up ready", func() bool { return strings.Contains(out.String(), "ready") })
	l = dialLogFlags(t, natsconn.Flags{NATS: url, NKey: filepath.Join(store, upSecureDir, "operator-admin", "user.nk")})
	return l, func() { l.Conn().Close(); _ = srv.Process.Signal(syscall.SIGINT); _ = srv.Wait() }
}

// TestUpOperatorIdentity: only an operator's command without an identity,
// on a loopback URL, in the directory of up's default store with a secure
// set-up, takes up's operator-admin nkey.
func TestUpOperatorIdentity(t *testing.T) {
	dir := t.TempDir()
	nk := filepath.Join(dir, ".vmguard", upSecureDir, "operator-admin", "user.nk")
	local := natsconn.Flags{NATS: "nats://127.0.0.1:4222"}
	if got := upOperatorIdentity(local, "status", dir); got.NKey != "" {
		t.Errorf("no set-up: nkey %q", got.NKey)
	}
	if err := os.MkdirAll(filepath.Dir(nk), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(nk, []byte("SU...\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		f       natsconn.Flags
		command string
		want    string
	}{
		{local, "status", nk},
		{local, "pkg move <pkg>", nk},
		{natsconn.Flags{NATS: "nats://localhost:4999"}, "events", nk},
		{local, "host", ""},
		{local, "agent", ""},
		{local, "failover", ""},
		{natsconn.Flags{NATS: "nats://10.0.0.1:4222"}, "status", ""},
		{natsconn.Flags{NATS: "nats://u:p@127.0.0.1:4222"}, "status", ""},
		{natsconn.Flags{NATS: local.NATS, NKey: "/other.nk"}, "status", "/other.nk"},
		{natsconn.Flags{NATS: local.NATS, Creds: "/x.creds"}, "status", ""},
	} {
		if got := upOperatorIdentity(tc.f, tc.command, dir); got.NKey != tc.want {
			t.Errorf("%s with %+v: nkey %q, want %q", tc.command, tc.f, got.NKey, tc.want)
		}
	}
}

// checkUpProcesses checks the processes of up --secure on store: each
// guest's agent runs with its own guest's nkey file, and no nkey seed of
// the set-up is in the command line or environment of up, an agent or a
// live service the log says was started.
func checkUpProcesses(t *testing.T, store string, evs []events.Event) {
	t.Helper()
	dir := filepath.Join(store, upSecureDir)
	var seeds []string
	for _, id := range []string{"controller", "operator-admin", "operator-readonly", "host-node1", "host-node2", "host-node3", "guest-webvm", "guest-dbvm"} {
		b, err := os.ReadFile(filepath.Join(dir, id, "user.nk"))
		if err != nil || !bytes.HasPrefix(b, []byte("SU")) {
			t.Fatalf("%s's seed: %v", id, err)
		}
		seeds = append(seeds, strings.TrimSpace(string(b)))
	}
	pids := map[int]bool{}
	agents := map[string]bool{}
	for _, p := range procsNaming(store) {
		var pid int
		if _, err := fmt.Sscan(p, &pid); err == nil {
			pids[pid] = true
		}
		for _, g := range []string{"webvm", "dbvm"} {
			if strings.Contains(p, " agent --guest "+g+" ") && strings.Contains(p, "--nkey "+filepath.Join(dir, "guest-"+g, "user.nk")) {
				agents[g] = true
			}
		}
	}
	if !agents["webvm"] || !agents["dbvm"] {
		t.Errorf("agents with their own guest's nkey: %v, want webvm and dbvm; processes: %v", agents, procsNaming(store))
	}
	for _, e := range evs {
		if d, ok := e.Data.(events.ProcessStarted); ok {
			if _, live := liveCmdline(d.PID); live {
				pids[d.PID] = true
			}
		}
	}
	for pid := range pids {
		cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		environ, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
		if err != nil {
			continue // ended meanwhile
		}
		for _, sd := range seeds {
			if bytes.Contains(cmdline, []byte(sd)) || bytes.Contains(environ, []byte(sd)) {
				t.Errorf("process %d (%s) shows an nkey seed", pid, bytes.ReplaceAll(cmdline, []byte{0}, []byte(" ")))
			}
		}
	}
	t.Logf("no nkey seed in the command line or environment of %d processes", len(pids))
}
