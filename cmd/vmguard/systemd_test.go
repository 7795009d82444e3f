package main

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// unitFile reads the [Service] keys of a systemd unit (the last value of each).
func unitFile(t *testing.T, path string) map[string]string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	keys := map[string]string{}
	section := ""
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#"):
		case strings.HasPrefix(line, "["):
			section = line
		case section == "[Service]":
			k, v, _ := strings.Cut(line, "=")
			keys[k] = v
		}
	}
	return keys
}

// TestSystemdUnits checks examples/systemd: every unit restarts always, the
// host manager's leaves the node guard and the guests alone when it is
// restarted (KillMode=process) and has a watchdog, and every ExecStart is a
// command line vmguard accepts (parsed with --help appended).
func TestSystemdUnits(t *testing.T) {
	dir := filepath.Join("..", "..", "examples", "systemd")
	conf := filepath.Join(t.TempDir(), "nats.conf") // -c must name a file
	if err := os.WriteFile(conf, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for unit, want := range map[string]map[string]string{
		"vmguard-server.service":   {"Type": "notify"},
		"vmguard-host@.service":    {"Type": "notify", "KillMode": "process", "WatchdogSec": "30s"},
		"vmguard-failover.service": {"Type": "notify"},
		"vmguard-agent@.service":   {"KillMode": "mixed"},
	} {
		keys := unitFile(t, filepath.Join(dir, unit))
		want["Restart"] = "always"
		for k, v := range want {
			if keys[k] != v {
				t.Errorf("%s: %s=%q, want %q", unit, k, keys[k], v)
			}
		}
		r := strings.NewReplacer("%i", "node1", "%H", "host1", "${VMGUARD_NODE}", "node1", "/etc/vmguard/nats.conf", conf)
		args := strings.Fields(r.Replace(keys["ExecStart"]))
		switch {
		case len(args) > 0 && args[0] == "/usr/local/bin/vmguard":
			args = args[1:]
		case len(args) > 0 && args[0] == "/usr/local/bin/vmguard-agent":
			args = append([]string{"agent"}, args[1:]...)
		default:
			t.Errorf("%s: ExecStart %q is not vmguard", unit, keys["ExecStart"])
			continue
		}
		var out, errOut bytes.Buffer
		if code := run(append(args, "--help"), &out, &errOut); code != exitOK {
			t.Errorf("%s: vmguard %s: exit %d\n%s", unit, strings.Join(args, " "), code, errOut.String())
		}
	}
}

// TestSystemdNotify runs `vmguard server` and `vmguard host` as systemd
// would, with a notification socket and a watchdog: the server says READY=1
// once its stream is ready, and the host manager pets the watchdog
// (WATCHDOG=1) as it renews its lease.
func TestSystemdNotify(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	got := make(chan string, 64)
	go func() {
		b := make([]byte, 256)
		for {
			n, err := conn.Read(b)
			if err != nil {
				return
			}
			got <- string(b[:n])
		}
	}()
	t.Setenv("NOTIFY_SOCKET", sock)
	t.Setenv("WATCHDOG_USEC", "2000000")
	port := freePort(t)
	startServer(t, filepath.Join(dir, "nats"), port)
	wait := func(want string) {
		t.Helper()
		deadline := time.After(60 * time.Second)
		for {
			select {
			case s := <-got:
				if s == want {
					return
				}
			case <-deadline:
				t.Fatalf("no %s within 60 s", want)
			}
		}
	}
	wait("READY=1")
	c := &cluster{t: t, url: fmt.Sprintf("nats://127.0.0.1:%d", port), dir: dir, procs: map[string]*exec.Cmd{}, logs: map[string]*syncBuffer{}}
	defer c.stopAll()
	cfg := filepath.Join(dir, "cluster.yaml")
	if err := os.WriteFile(cfg, []byte(e2eConfig), 0o644); err != nil {
		t.Fatal(err)
	}
	c.cli("apply", "-f", cfg)
	c.start("node1", "host", "--node", "node1", "--state", filepath.Join(dir, "node1"), "--agent-bin", vmguardBin, "--no-guard")
	wait("WATCHDOG=1")
}
