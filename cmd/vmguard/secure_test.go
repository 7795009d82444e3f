package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/vmguard/vmguard/events"
	"github.com/vmguard/vmguard/internal/natsconn"
	"github.com/vmguard/vmguard/internal/natsd"
	"github.com/vmguard/vmguard/internal/natsd/natstest"
)

// TestServerRefusesOpenBeyondLoopback: `vmguard server --host 0.0.0.0`
// without authorization exits 2 and says how to fix it; with --insecure it
// starts and warns; on loopback it needs nothing.
func TestServerRefusesOpenBeyondLoopback(t *testing.T) {
	port := freePort(t)
	cmd := exec.Command(vmguardBin, "server", "--store", t.TempDir(), "--host", "0.0.0.0", "--port", fmt.Sprint(port), "-q")
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 2 {
		t.Fatalf("vmguard server --host 0.0.0.0 without authorization: %v, want exit 2\n%s", err, out)
	}
	for _, want := range []string{"without authorization", "-c", "--host 127.0.0.1", "--insecure"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("refusal does not mention %q:\n%s", want, out)
		}
	}
	if canConnect(fmt.Sprintf("nats://127.0.0.1:%d", port)) {
		t.Error("the refused server accepts connections")
	}

	cmd = exec.Command(vmguardBin, "server", "--store", t.TempDir(), "--host", "0.0.0.0", "--port", fmt.Sprint(port), "-q", "--insecure")
	buf := startLogged(t, cmd)
	natstest.WaitFor(t, 30*time.Second, "vmguard server --insecure ready", func() bool { return strings.Contains(buf.String(), "ready") })
	if !strings.Contains(buf.String(), "WARNING: INSECURE") {
		t.Errorf("--insecure does not warn:\n%s", buf.String())
	}
	if !canConnect(fmt.Sprintf("nats://127.0.0.1:%d", port)) {
		t.Error("the --insecure server refuses an anonymous client")
	}
}

// startAuthServer runs an embedded server whose only user is admin with
// password, with the VMGUARD stream, and returns its port.
func startAuthServer(t *testing.T, password string) int {
	t.Helper()
	srv := natsd.StartTestConf(t, t.TempDir(), `authorization { users = [ {user: admin, password: "`+password+`"} ] }`)
	port := srv.Addr().(*net.TCPAddr).Port
	onJetStream(t, fmt.Sprintf("nats://admin:%s@127.0.0.1:%d", password, port), 10*time.Second, func(ctx context.Context, js jetstream.JetStream) {
		if _, err := events.EnsureStream(ctx, js, 1); err != nil {
			t.Fatal(err)
		}
	})
	return port
}

// TestNoPasswordInLogsAndPlainAuthErrors: `vmguard host` logs its NATS URL
// with the password redacted; a wrong password is reported as an
// authorization failure, not as a server that is away.
func TestNoPasswordInLogsAndPlainAuthErrors(t *testing.T) {
	const secret = "s3cret-pw-0815"
	port := startAuthServer(t, secret)
	url := fmt.Sprintf("nats://admin:%s@127.0.0.1:%d", secret, port)

	host := exec.Command(vmguardBin, "host", "--node", "node1", "--state", t.TempDir())
	host.Env = append(os.Environ(), "NATS_URL="+url)
	out := startLogged(t, host)
	natstest.WaitFor(t, 30*time.Second, "host manager starting", func() bool { return strings.Contains(out.String(), "host manager starting") })
	if s := out.String(); strings.Contains(s, secret) || !strings.Contains(s, "nats=nats://admin:xxxxx@127.0.0.1") {
		t.Errorf("host log shows the password or no redacted URL:\n%s", s)
	}

	wrong := fmt.Sprintf("nats://admin:wrong-pw@127.0.0.1:%d", port)
	code, _, stderr := runCLI("--nats", wrong, "status")
	if code != 1 || !strings.Contains(stderr, "authorization failed") || strings.Contains(stderr, "wrong-pw") || strings.Contains(stderr, "running?") {
		t.Errorf("status with a wrong password: exit %d, %q", code, stderr)
	}
}

// TestClientsTLSAndNKey: the CLI (flags, and the nats CLI's environment
// variables) and the agent connect to a server requiring TLS with client
// certificates and an nkey user; without them they are refused.
func TestClientsTLSAndNKey(t *testing.T) {
	url, tl, seed := natsd.StartTestSecure(t, "admin")
	flags := []string{"--nats", url, "--nkey", seed, "--tlsca", tl.CA, "--tlscert", tl.ClientCert, "--tlskey", tl.ClientKey}
	if code, _, stderr := runCLI(append(flags, "apply", "-f", filepath.Join("..", "..", "examples", "demo.yaml"))...); code != 0 {
		t.Fatalf("apply with TLS and nkey flags: exit %d: %s", code, stderr)
	}
	status := exec.Command(vmguardBin, "status")
	status.Env = append(os.Environ(), "NATS_URL="+url, "NATS_NKEY="+seed, "NATS_CA="+tl.CA, "NATS_CERT="+tl.ClientCert, "NATS_KEY="+tl.ClientKey)
	if out, err := status.CombinedOutput(); err != nil {
		t.Errorf("status with the nats CLI's environment variables: %v\n%s", err, out)
	}
	if code, _, stderr := runCLI("--nats", url, "--tlsca", tl.CA, "--tlscert", tl.ClientCert, "--tlskey", tl.ClientKey, "status"); code != 1 || !strings.Contains(stderr, "authorization failed") {
		t.Errorf("status without the nkey: exit %d, %q", code, stderr)
	}

	agent := exec.Command(vmguardBin, append([]string{"agent", "--guest", "tlsvm", "--state", t.TempDir()}, flags...)...)
	startLogged(t, agent)
	nc, err := natsconn.Flags{NATS: url, NKey: seed, TLSCA: tl.CA, TLSCert: tl.ClientCert, TLSKey: tl.ClientKey}.Connect("test")
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	waitAgentAnswers(t, nc, "tlsvm", "the agent answers over TLS with its nkey")
}

// TestAgentSaysAuthorizationFailed: an agent (which retries for ever) with
// a wrong password logs that its credentials were refused, without the
// password, rather than just waiting for a server.
func TestAgentSaysAuthorizationFailed(t *testing.T) {
	port := startAuthServer(t, "right-pw")
	agent := exec.Command(vmguardBin, "agent", "--guest", "authvm", "--state", t.TempDir())
	agent.Env = append(os.Environ(), fmt.Sprintf("NATS_URL=nats://admin:wrong-pw@127.0.0.1:%d", port))
	out := startLogged(t, agent)
	natstest.WaitFor(t, 30*time.Second, "the agent's authorization error", func() bool { return strings.Contains(out.String(), "authorization failed") })
	if strings.Contains(out.String(), "wrong-pw") {
		t.Errorf("the agent's log shows the password:\n%s", out.String())
	}
}
