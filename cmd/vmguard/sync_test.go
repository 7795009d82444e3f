package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/vmguard/vmguard/internal/natsd/natstest"
)

// TestServerSyncSetting: `vmguard server` without flags runs a server that
// fsyncs every write before acknowledging it, as the running server's own
// monitoring (/varz) reports; --sync-interval --flush 3s switches it to
// flushing every 3s. The kill -9 test cannot tell the two apart (the page
// cache survives a killed process), so this is what keeps the default
// durable.
func TestServerSyncSetting(t *testing.T) {
	for _, tc := range []struct {
		name     string
		args     []string
		always   bool
		interval time.Duration
	}{
		{"default", nil, true, 0},
		{"sync-interval", []string{"--sync-interval", "--flush", "3s"}, false, 3 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			httpPort := freePort(t)
			startServer(t, t.TempDir(), freePort(t), append([]string{"--http", fmt.Sprint(httpPort)}, tc.args...)...)
			js := varzJetStream(t, httpPort)
			if js.SyncAlways != tc.always || (!tc.always && js.SyncInterval != tc.interval) {
				t.Errorf("server's effective JetStream config: sync_always %v, sync_interval %s; want sync_always %v, sync_interval %s",
					js.SyncAlways, js.SyncInterval, tc.always, tc.interval)
			}
		})
	}
}

// varzJetStream reads the JetStream configuration in force from a server's
// monitoring port.
func varzJetStream(t *testing.T, httpPort int) server.JetStreamConfig {
	t.Helper()
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/varz", httpPort))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var v server.Varz
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		t.Fatalf("decode /varz: %v", err)
	}
	if v.JetStream.Config == nil {
		t.Fatal("/varz: no JetStream config")
	}
	return *v.JetStream.Config
}

// TestUpSyncSetting: `vmguard up` runs its embedded server durable by
// default and in interval mode with --sync-interval; its banner reports the
// mode of the running server (read from the server, not from the flag).
func TestUpSyncSetting(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "one.yaml")
	if err := os.WriteFile(cfg, []byte("cluster: one\nnodes: [node1]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"default", nil, "durable (fsync before every acknowledgement)"},
		{"sync-interval", []string{"--sync-interval"}, "interval (flush every 2m0s;"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			store := t.TempDir()
			args := append([]string{"up", "-q", "-f", cfg, "--store", store, "--port", fmt.Sprint(freePort(t))}, tc.args...)
			cmd := exec.Command(vmguardBin, args...)
			out := &syncBuffer{}
			cmd.Stdout, cmd.Stderr = out, out
			cmd.WaitDelay = 5 * time.Second
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
			natstest.WaitFor(t, 60*time.Second, "vmguard up's banner", func() bool { return strings.Contains(out.String(), "vmguard up: NATS on") })
			banner, _, _ := strings.Cut(out.String()[strings.Index(out.String(), "vmguard up: NATS on"):], "\n")
			if !strings.Contains(banner, tc.want) {
				t.Errorf("banner %q: want %q", banner, tc.want)
			}
			interrupt(t, cmd, out)
		})
	}
}
