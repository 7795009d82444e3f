package main

import (
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"
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
	buf := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = buf, buf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	waitFor(t, 30*time.Second, "vmguard server --insecure ready", func() bool { return strings.Contains(buf.String(), "ready") })
	if !strings.Contains(buf.String(), "WARNING: INSECURE") {
		t.Errorf("--insecure does not warn:\n%s", buf.String())
	}
	if !canConnect(fmt.Sprintf("nats://127.0.0.1:%d", port)) {
		t.Error("the --insecure server refuses an anonymous client")
	}
}
