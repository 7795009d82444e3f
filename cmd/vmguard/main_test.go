package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rogpeppe/go-internal/testscript"

	"github.com/vmguard/vmguard/events"
	"github.com/vmguard/vmguard/guestagent"
	"github.com/vmguard/vmguard/internal/natsd/natstest"
)

// vmguardBin is the vmguard binary built once for tests that need a separate
// OS process (kill -9, CLIs).
var vmguardBin string

// TestMain builds vmguardBin once, and makes the test binary act as
// `vmguard` when TestScripts' scripts exec it (testscript re-executes it
// under that name: in-process code, a separate OS process per command).
func TestMain(m *testing.M) {
	testscript.Main(buildBinaryFirst{m}, map[string]func(){
		"vmguard": func() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) },
	})
}

// buildBinaryFirst runs the tests after building vmguardBin.
type buildBinaryFirst struct{ m *testing.M }

func (b buildBinaryFirst) Run() int { return natstest.MainWithBinary(b.m, ".", ".", &vmguardBin) }

// freePort returns a loopback TCP port that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// startServer runs `vmguard server` as a separate process and waits until
// its stream is usable.
func startServer(t *testing.T, store string, port int, extra ...string) *exec.Cmd {
	t.Helper()
	args := append([]string{"server", "--store", store, "--port", fmt.Sprint(port), "-q"}, extra...)
	cmd := exec.Command(vmguardBin, args...)
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	url := fmt.Sprintf("nats://127.0.0.1:%d", port)
	natstest.WaitFor(t, 30*time.Second, "vmguard server ready", func() bool {
		return strings.Contains(out.String(), "ready") && canConnect(url)
	})
	return cmd
}

// startLogged starts cmd with its output (stdout and stderr) in the
// buffer it returns; cmd is killed and waited for when the test ends.
func startLogged(t *testing.T, cmd *exec.Cmd) *syncBuffer {
	t.Helper()
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	return out
}

// syncBuffer is a buffer safe for a writer and a reader at once.
type syncBuffer = natstest.Buffer

func canConnect(url string) bool {
	nc, err := nats.Connect(url, nats.Timeout(time.Second))
	if err != nil {
		return false
	}
	nc.Close()
	return true
}

// waitAgentAnswers waits up to 30 s until guest's agent answers a ping
// over nc; what says how it should answer.
func waitAgentAnswers(t *testing.T, nc *nats.Conn, guest, what string) {
	t.Helper()
	c, err := guestagent.NewClient(nc, guest)
	if err != nil {
		t.Fatal(err)
	}
	natstest.WaitFor(t, 30*time.Second, what, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, err := c.Ping(ctx)
		return err == nil
	})
}

func dialLog(t *testing.T, url string, opts ...nats.Option) *events.Log {
	t.Helper()
	nc, err := nats.Connect(url, opts...)
	return openDialed(t, nc, err)
}

// openDialed opens the log, without creating its stream, on a connection
// just dialed (err is the dial's); the connection is closed when the test
// ends.
func openDialed(t *testing.T, nc *nats.Conn, err error) *events.Log {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	l, err := events.Open(context.Background(), nc, events.WithoutCreate())
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// TestServerKill9KeepsAcknowledgedEvents appends events to a durable
// `vmguard server`, kills it with SIGKILL, restarts it on the same store and
// checks that every acknowledged event is there, in order.
func TestServerKill9KeepsAcknowledgedEvents(t *testing.T) {
	ctx := context.Background()
	store := t.TempDir()
	port := freePort(t)
	url := fmt.Sprintf("nats://127.0.0.1:%d", port)
	srv := startServer(t, store, port)

	l := dialLog(t, url)
	const n = 300
	var ids []string
	for i := 1; i <= n; i++ {
		e := events.New(events.HostSource("node1"), "web", events.PackageStarted{Node: "node1", Epoch: uint64(i)})
		if _, err := l.Append(ctx, e); err != nil {
			t.Fatalf("append %d: %v", i, err)
		}
		ids = append(ids, e.ID)
	}
	if err := srv.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = srv.Wait()

	startServer(t, store, port)
	l2 := dialLog(t, url)
	var got []string
	if _, err := l2.Replay(ctx, events.ReadOptions{}, func(e events.Event) error {
		got = append(got, e.ID)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(got) != n {
		t.Fatalf("after kill -9: %d events, want %d", len(got), n)
	}
	for i := range ids {
		if got[i] != ids[i] {
			t.Fatalf("event %d: got id %s, want %s", i+1, got[i], ids[i])
		}
	}
}

// TestRunExitCodes checks the exit code mapping of the CLI: 0 ok, 1 error, 2 usage.
func TestRunExitCodes(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run([]string{"--version"}, &out, &errb); code != exitOK || !strings.HasPrefix(out.String(), "vmguard "+version+" commit ") {
		t.Errorf("--version: code %d, out %q", code, out.String())
	}
	if code := run([]string{"no-such-command"}, &out, &errb); code != exitUsage {
		t.Errorf("unknown command: code %d, want %d", code, exitUsage)
	}
	if code := run([]string{"events", "--nats", "nats://127.0.0.1:1", "-p", "bad.name"}, &out, &errb); code != exitUsage {
		t.Errorf("bad package name: code %d, want %d (%s)", code, exitUsage, errb.String())
	}
	errb.Reset()
	if code := run([]string{"events", "--nats", "nats://127.0.0.1:1"}, &out, &errb); code != exitError || !strings.Contains(errb.String(), "connect to NATS") {
		t.Errorf("no server: code %d, stderr %q", code, errb.String())
	}
}
