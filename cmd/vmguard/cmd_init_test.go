package main

import (
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/vmguard/vmguard/internal/natsconn"
	"github.com/vmguard/vmguard/internal/natsd/natstest"
)

// identityEnv returns the environment that connects as identity id of a
// `vmguard init` directory (its env file, with the directory's real path).
func identityEnv(out, id, url string) []string {
	d := filepath.Join(out, id)
	return append(os.Environ(), "NATS_URL="+url, "NATS_NKEY="+filepath.Join(d, "user.nk"), "NATS_CA="+filepath.Join(d, "ca.pem"),
		"NATS_CERT="+filepath.Join(d, "cert.pem"), "NATS_KEY="+filepath.Join(d, "key.pem"))
}

// envFile returns the environment an init env file sets (KEY=VALUE lines,
// # comments), with PATH and HOME.
func envFile(t *testing.T, file string) []string {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	env := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}
	for line := range strings.Lines(string(b)) {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if !strings.Contains(line, "=") {
			t.Fatalf("%s: %q is not KEY=VALUE", file, line)
		}
		env = append(env, line)
	}
	return env
}

// TestInitSecureSetup: `vmguard init` writes a server config, a CA and an
// identity per role, every file 0600; it refuses to overwrite without
// --force; `vmguard server -c` with it listens on 0.0.0.0 (it counts as
// authorized); operator-admin applies and reads, a guest's agent answers
// with its identity but may not apply, and a client without credentials
// or without a client certificate is refused.
func TestInitSecureSetup(t *testing.T) {
	out := filepath.Join(t.TempDir(), "secure")
	demo := filepath.Join("..", "..", "examples", "demo.yaml")
	port := freePort(t)
	url := fmt.Sprintf("tls://127.0.0.1:%d", port)
	// The identities stay where init wrote them: --install-dir is --out.
	if code, stdout, stderr := runCLI("init", "-f", demo, "--out", out, "--install-dir", out, "--url", url); code != 0 {
		t.Fatalf("init: exit %d: %s%s", code, stdout, stderr)
	}
	err := filepath.WalkDir(out, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		if want := fs.FileMode(0o600); !d.IsDir() && fi.Mode().Perm() != want {
			t.Errorf("%s: mode %v, want %v", p, fi.Mode().Perm(), want)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"controller", "operator-admin", "operator-readonly", "host-node1", "host-node2", "host-node3", "guest-webvm", "guest-dbvm"} {
		if _, err := os.Stat(filepath.Join(out, id, "user.nk")); err != nil {
			t.Errorf("identity %s: %v", id, err)
		}
	}
	conf := filepath.Join(out, "nats.conf")
	before, _ := os.ReadFile(conf)
	seed := filepath.Join(out, "operator-admin", "user.nk")
	seedBefore, _ := os.ReadFile(seed)
	if code, _, stderr := runCLI("init", "-f", demo, "--out", out); code != 2 || !strings.Contains(stderr, "--force") {
		t.Errorf("second init without --force: exit %d, %q", code, stderr)
	}
	if after, _ := os.ReadFile(conf); !bytes.Equal(before, after) {
		t.Error("a refused init changed nats.conf")
	}
	if after, _ := os.ReadFile(seed); !bytes.Equal(seedBefore, after) {
		t.Error("a refused init changed a seed")
	}

	srv := exec.Command(vmguardBin, "server", "-c", conf, "--store", t.TempDir(), "--host", "0.0.0.0", "--port", fmt.Sprint(port), "-q")
	buf := startLogged(t, srv)
	natstest.WaitFor(t, 30*time.Second, "vmguard server with init's config ready", func() bool { return strings.Contains(buf.String(), "ready") })
	if strings.Contains(buf.String(), "INSECURE") {
		t.Errorf("init's config counted as insecure:\n%s", buf.String())
	}

	// Each client runs with its identity's env file and nothing else.
	run := func(id string, args ...string) (string, error) {
		cmd := exec.Command(vmguardBin, args...)
		cmd.Env = envFile(t, filepath.Join(out, id, "env"))
		b, err := cmd.CombinedOutput()
		return string(b), err
	}
	if o, err := run("operator-admin", "apply", "-f", demo); err != nil {
		t.Fatalf("apply as operator-admin: %v\n%s", err, o)
	}
	if o, err := run("operator-admin", "status"); err != nil {
		t.Errorf("status as operator-admin: %v\n%s", err, o)
	}
	if o, err := run("guest-webvm", "apply", "-f", demo, "--reason", "forged"); err == nil || !strings.Contains(o, "ermissions violation") {
		t.Errorf("apply as guest-webvm: %v, want refused by the server's permissions:\n%s", err, o)
	}
	if _, err := nats.Connect(url, nats.Timeout(2*time.Second)); err == nil {
		t.Error("an anonymous client without TLS connected")
	}
	noCert := natsconn.Flags{NATS: url, NKey: seed, TLSCA: filepath.Join(out, "ca.pem")}
	if nc, err := noCert.Connect("test"); err == nil {
		nc.Close()
		t.Error("a client with the admin nkey but no client certificate connected")
	}

	agent := exec.Command(vmguardBin, "agent", "--guest", "webvm", "--state", t.TempDir())
	agent.Env = envFile(t, filepath.Join(out, "guest-webvm", "env"))
	startLogged(t, agent)
	admin := natsconn.Flags{NATS: url, NKey: seed, TLSCA: filepath.Join(out, "ca.pem"),
		TLSCert: filepath.Join(out, "operator-admin", "cert.pem"), TLSKey: filepath.Join(out, "operator-admin", "key.pem")}
	nc, err := admin.Connect("test")
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	waitAgentAnswers(t, nc, "webvm", "guest webvm's agent answers with its identity")

	if code, _, stderr := runCLI("init", "-f", demo, "--out", out, "--install-dir", out, "--url", url, "--force"); code != 0 {
		t.Fatalf("init --force: exit %d: %s", code, stderr)
	}
	if after, _ := os.ReadFile(seed); bytes.Equal(seedBefore, after) {
		t.Error("init --force kept the old seed")
	}
}
