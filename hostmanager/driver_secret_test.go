package hostmanager

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/vmguard/vmguard/config"
	"github.com/vmguard/vmguard/guestagent"
	"github.com/vmguard/vmguard/internal/natsconn"
	"github.com/vmguard/vmguard/internal/natsd"
)

// startProcessGuest starts package web's process-driver guest name with a
// driver of cfg, forced off when the test ends, and returns the driver.
func startProcessGuest(t *testing.T, cfg ProcessDriverConfig, name string) *ProcessDriver {
	t.Helper()
	d, err := NewProcessDriver(cfg)
	if err != nil {
		t.Fatal(err)
	}
	g := GuestRef{Package: "web", Guest: config.Guest{Name: name, Driver: config.DriverProcess}}
	t.Cleanup(func() { _ = d.Stop(context.Background(), g, true) })
	if err := d.Start(context.Background(), g); err != nil {
		t.Fatal(err)
	}
	return d
}

// TestProcessDriverKeepsSecrets: with a NATS URL holding a password (a real
// server with that user) in the driver's config and in the host manager's
// own NATS_URL, the agent's command line and environment and a service's
// environment show no password and no NATS_URL; the agent gets its URL
// through a 0600 file and connects with it.
func TestProcessDriverKeepsSecrets(t *testing.T) {
	const secret = "s3cret-pw-4711"
	dir := t.TempDir()
	srv := natsd.StartTestConf(t, dir, `authorization { users = [ {user: admin, password: "`+secret+`"} ] }`)
	url := fmt.Sprintf("nats://admin:%s@127.0.0.1:%d", secret, srv.Addr().(*net.TCPAddr).Port)
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatalf("connect with the password: %v", err)
	}
	defer nc.Close()
	t.Setenv("NATS_URL", url) // as `NATS_URL=... vmguard host` would have it
	d := startProcessGuest(t, ProcessDriverConfig{Bin: vmguardBin, NATS: url, Dir: filepath.Join(dir, "guests"), StopTimeout: 10 * time.Second}, "secvm")
	ctx := context.Background()
	pid, ok := d.PID("secvm")
	if !ok {
		t.Fatal("no agent after Start")
	}
	fi, err := os.Stat(filepath.Join(d.StateDir("secvm"), "nats-url"))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("URL file mode %v, want 0600", fi.Mode().Perm())
	}
	c := agentAnswers(ctx, t, nc, dir, "secvm", "over the password URL")
	rctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	reply, err := c.Run(rctx, guestagent.RunRequest{Package: "web", Service: "s", Argv: []string{"sleep", "60"},
		Env: map[string]string{"FROM_CONFIG": "yes"}, RequestID: "r1", Epoch: 1})
	if err != nil {
		t.Fatal(err)
	}
	svc := reply.Process.PID
	for what, path := range map[string]string{
		"agent command line":  "/proc/" + strconv.Itoa(pid) + "/cmdline",
		"agent environment":   "/proc/" + strconv.Itoa(pid) + "/environ",
		"service environment": "/proc/" + strconv.Itoa(svc) + "/environ",
	} {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if s := string(b); strings.Contains(s, secret) || strings.Contains(s, "NATS_URL") {
			t.Errorf("%s shows a secret: %q", what, strings.ReplaceAll(s, "\x00", " "))
		}
	}
	env, _ := os.ReadFile("/proc/" + strconv.Itoa(svc) + "/environ")
	vars := strings.Split(string(env), "\x00")
	for _, want := range []string{"FROM_CONFIG=yes", "VMGUARD_GUEST=secvm"} {
		if !slices.Contains(vars, want) {
			t.Errorf("service environment lacks %s: %q", want, vars)
		}
	}
	for _, v := range vars {
		name, _, _ := strings.Cut(v, "=")
		switch {
		case v == "", name == "FROM_CONFIG", strings.HasPrefix(name, "VMGUARD_"), slices.Contains(guestagent.MinimalEnv([]string{v}), v):
		default:
			t.Errorf("service environment has %s, neither from its config nor the documented minimum", name)
		}
	}
}

// TestProcessDriverPassesCredentialFiles: with a host's --nkey and TLS
// files as agent arguments (natsconn.Flags.Args), the agents the driver
// starts connect to a server that requires both.
func TestProcessDriverPassesCredentialFiles(t *testing.T) {
	dir := t.TempDir()
	url, tl, seed := natsd.StartTestSecure(t, "host")
	flags := natsconn.Flags{NATS: url, NKey: seed, TLSCA: tl.CA, TLSCert: tl.ClientCert, TLSKey: tl.ClientKey}
	nc, err := flags.Connect("test")
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	startProcessGuest(t, ProcessDriverConfig{Bin: vmguardBin, NATS: flags.NATS, Dir: filepath.Join(dir, "guests"), Args: flags.Args(), StopTimeout: 10 * time.Second}, "tlsvm")
	ctx := context.Background()
	agentAnswers(ctx, t, nc, dir, "tlsvm", "over TLS with the host's nkey")
}

// agentAnswers returns a client of guest's agent once the agent answers a
// ping, within 30 s; else it fails the test with the agent's log (under
// dir/guests), saying it does not answer how.
func agentAnswers(ctx context.Context, t *testing.T, nc *nats.Conn, dir, guest, how string) *guestagent.Client {
	t.Helper()
	c, err := guestagent.NewClient(nc, guest)
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if _, err := c.Ping(ctx); err == nil {
			return c
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(filepath.Join(dir, "guests", guest+".log"))
			t.Fatalf("agent does not answer %s; its log:\n%s", how, b)
		}
	}
}
