package natsconn

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/vmguard/vmguard/internal/natsd"
)

func TestRedact(t *testing.T) {
	for in, want := range map[string]string{
		"nats://127.0.0.1:4222":                   "nats://127.0.0.1:4222",
		"nats://admin:s3cret@host:4222":           "nats://admin:xxxxx@host:4222",
		"nats://tok3n@host:4222":                  "nats://xxxxx@host:4222",
		"nats://a:p1@h1:4222,nats://b:p2@h2:4222": "nats://a:xxxxx@h1:4222,nats://b:xxxxx@h2:4222",
		"nats://admin:p%2Fw@host:4222":            "nats://admin:xxxxx@host:4222",
		"tls://admin:s3cret@[::1]:4222":           "tls://admin:xxxxx@[::1]:4222",
		"nats://admin:s3cret\x7f@host:4222":       "xxxxx@host:4222",
		"host:4222":                               "host:4222",
	} {
		if got := Redact(in); got != want {
			t.Errorf("Redact(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestConnectErrorSaysAuthorization: a wrong password on a real server is
// reported as an authorization failure, with the password redacted; a
// server that is not there is not.
func TestConnectErrorSaysAuthorization(t *testing.T) {
	srv := natsd.StartTestConf(t, t.TempDir(), `authorization { users = [ {user: admin, password: right} ] }`)
	port := srv.Addr().(*net.TCPAddr).Port
	wrong := fmt.Sprintf("nats://admin:wrong-pw@127.0.0.1:%d", port)
	_, err := nats.Connect(wrong, nats.Timeout(5*time.Second), nats.MaxReconnects(-1))
	if err == nil {
		t.Fatal("a wrong password was accepted")
	}
	msg := ConnectError(wrong, "host node1", err).Error()
	if !strings.Contains(msg, "authorization failed") || strings.Contains(msg, "wrong-pw") || strings.Contains(msg, "is `vmguard server`") {
		t.Errorf("wrong password reported as %q", msg)
	}
	if _, err := nats.Connect(fmt.Sprintf("nats://admin:right@127.0.0.1:%d", port)); err != nil {
		t.Fatalf("the right password: %v", err)
	}
	srv.Shutdown()
	srv.WaitForShutdown()
	_, err = nats.Connect(wrong, nats.Timeout(time.Second))
	if msg := ConnectError(wrong, "host node1", err).Error(); strings.Contains(msg, "authorization") || !strings.Contains(msg, "running?") || strings.Contains(msg, "wrong-pw") {
		t.Errorf("no server reported as %q", msg)
	}
}

func TestReadURLFile(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "url")
	if err := os.WriteFile(p, []byte("nats://a:b@h:4222\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadURLFile(p); err == nil || !strings.Contains(err.Error(), p) || !strings.Contains(err.Error(), "0600") {
		t.Errorf("a world-readable URL file: %v", err)
	}
	if err := os.Chmod(p, 0o600); err != nil {
		t.Fatal(err)
	}
	if u, err := ReadURLFile(p); err != nil || u != "nats://a:b@h:4222" {
		t.Errorf("ReadURLFile = %q, %v", u, err)
	}
}
