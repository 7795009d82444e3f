package netlab

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// needLab fails unless labs can be made here when CI is set (.ci/run sets
// it and installs what they need); elsewhere a machine without root,
// iproute2 or iptables skips them, saying what is missing, so that `go test
// ./...` on a fresh machine with only Go passes. VMGUARD_NO_NETNS=1 skips.
func needLab(t *testing.T) {
	t.Helper()
	if os.Getenv("VMGUARD_NO_NETNS") == "1" {
		t.Skip("VMGUARD_NO_NETNS=1: network namespace tests skipped")
	}
	if err := Available(); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("network namespaces: %v; set VMGUARD_NO_NETNS=1 to skip these tests on purpose", err)
		}
		t.Skipf("network namespaces cannot be made here (%v): run as root with iproute2 and iptables installed, as .ci/run does", err)
	}
}

// echo listens on addr inside h and echoes every connection.
func echo(t *testing.T, h *Host, addr string) {
	t.Helper()
	var ln net.Listener
	if err := inNamespace(h.NS, func() (err error) { ln, err = net.Listen("tcp", addr); return err }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); _, _ = io.Copy(c, c) }()
		}
	}()
}

// roundTrip dials addr from inside h, sends a line and reads it back within
// d; it returns how long that took.
func roundTrip(h *Host, addr string, d time.Duration) (time.Duration, error) {
	var c net.Conn
	begin := time.Now()
	if err := inNamespace(h.NS, func() (err error) { c, err = net.DialTimeout("tcp", addr, d); return err }); err != nil {
		return 0, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(d))
	if _, err := c.Write([]byte("ping\n")); err != nil {
		return 0, err
	}
	buf := make([]byte, 5)
	if _, err := io.ReadFull(c, buf); err != nil {
		return 0, err
	}
	return time.Since(begin), nil
}

// TestLabFaults builds three hosts and checks each fault against real TCP:
// isolation, a one-way drop, heal, and the proxy's latency; Find tells in
// which host a process runs; Close leaves no namespace behind.
func TestLabFaults(t *testing.T) {
	needLab(t)
	ctx := context.Background()
	l, err := New(ctx, 3)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	h1, h2, h3 := l.Hosts[0], l.Hosts[1], l.Hosts[2]
	echo(t, h2, h2.Addr+":7000")
	echo(t, h1, h1.Addr+":7000")
	if _, err := roundTrip(h1, h2.Addr+":7000", 2*time.Second); err != nil {
		t.Fatalf("h1 -> h2 before any fault: %v", err)
	}

	if err := l.Isolate(ctx, h2); err != nil {
		t.Fatal(err)
	}
	if _, err := roundTrip(h1, h2.Addr+":7000", 500*time.Millisecond); err == nil {
		t.Error("h1 reached h2 while h2 was isolated")
	}
	if _, err := roundTrip(h2, "127.0.0.1:7000", time.Second); err == nil {
		t.Error("nothing listens on h2's loopback:7000, yet it answered") // the echo is on eth0's address
	}
	if _, err := roundTrip(h2, h2.Addr+":7000", time.Second); err != nil {
		t.Errorf("h2 could not reach itself while isolated: %v", err)
	}
	if err := l.Heal(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := roundTrip(h1, h2.Addr+":7000", 2*time.Second); err != nil {
		t.Fatalf("h1 -> h2 after heal: %v", err)
	}

	// h3 -> h2 dropped: h3 cannot talk to h2, h1 still can.
	if err := l.DropOneWay(ctx, h3, h2); err != nil {
		t.Fatal(err)
	}
	if _, err := roundTrip(h3, h2.Addr+":7000", 500*time.Millisecond); err == nil {
		t.Error("h3 reached h2 with h3 -> h2 dropped")
	}
	if _, err := roundTrip(h1, h2.Addr+":7000", 2*time.Second); err != nil {
		t.Errorf("h1 -> h2 with only h3 -> h2 dropped: %v", err)
	}
	if err := l.Heal(ctx); err != nil {
		t.Fatal(err)
	}

	// A proxy in h1 in front of h2's echo, with 100 ms each way.
	px, err := l.Proxy(h1, h1.Addr+":7100", h2.Addr+":7000")
	if err != nil {
		t.Fatal(err)
	}
	fast, err := roundTrip(h3, h1.Addr+":7100", 2*time.Second)
	if err != nil {
		t.Fatalf("through the proxy: %v", err)
	}
	l.Delay(h1, 100*time.Millisecond)
	slow, err := roundTrip(h3, h1.Addr+":7100", 5*time.Second)
	if err != nil {
		t.Fatalf("through the slowed proxy: %v", err)
	}
	if slow < 200*time.Millisecond {
		t.Errorf("round trip through a proxy delaying 100 ms each way took %v (%v without delay)", slow, fast)
	}
	t.Logf("round trip through the proxy: %v, with 100 ms each way: %v (proxy %s)", fast, slow, px.Addr())

	// A forward from this process's namespace into h2.
	fw, err := l.Forward(h2, h2.Addr+":7000")
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.DialTimeout("tcp", fw.Addr(), time.Second)
	if err != nil {
		t.Fatalf("dial the forward: %v", err)
	}
	fmt.Fprintln(c, "hi")
	b := make([]byte, 3)
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := io.ReadFull(c, b); err != nil || string(b) != "hi\n" {
		t.Errorf("through the forward: %q, %v", b, err)
	}
	c.Close()

	// Find tells the host a process runs in.
	marker := fmt.Sprintf("netlab-find-%d", time.Now().UnixNano())
	cmd := h3.Command("sh", "-c", "sleep 30 # "+marker)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	deadline := time.Now().Add(5 * time.Second)
	for {
		found, err := l.Find(marker)
		if err != nil {
			t.Fatal(err)
		}
		if len(found["h3"]) == 1 && found["h3"][0] == cmd.Process.Pid && len(found) == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Find(%q) = %v, want h3: [%d]", marker, found, cmd.Process.Pid)
		}
		time.Sleep(20 * time.Millisecond) // poll
	}

	l.Close()
	out, _ := exec.Command("ip", "netns", "list").Output()
	if strings.Contains(string(out), l.ID) {
		t.Errorf("namespaces left after Close:\n%s", out)
	}
}

// TestSweepRemovesAbandonedLabs: a namespace named for a process that is
// gone is removed (with what runs in it); one of a live process is kept.
func TestSweepRemovesAbandonedLabs(t *testing.T) {
	needLab(t)
	ctx := context.Background()
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	stale := fmt.Sprintf("%s%dx0001-h1", Prefix, dead.Process.Pid)
	live := fmt.Sprintf("%s%dx0002-h1", Prefix, os.Getpid())
	for _, ns := range []string{stale, live} {
		if err := run(ctx, "ip", "netns", "add", ns); err != nil {
			t.Fatal(err)
		}
	}
	defer removeNamespaces(ctx, []string{stale, live})
	sleeper := exec.Command("ip", "netns", "exec", stale, "sleep", "60")
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- sleeper.Wait() }()

	Sweep(ctx)
	out, _ := exec.Command("ip", "netns", "list").Output()
	if strings.Contains(string(out), stale) {
		t.Errorf("abandoned namespace %s not swept", stale)
	}
	if !strings.Contains(string(out), live) {
		t.Errorf("namespace %s of this live process swept", live)
	}
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Error("the process in the abandoned namespace still runs")
	}
}

// rules returns h's iptables rules.
func rules(t *testing.T, h *Host) string {
	t.Helper()
	out, err := exec.Command("ip", "netns", "exec", h.NS, "iptables", "-w", "5", "-S").CombinedOutput()
	if err != nil {
		t.Fatalf("iptables -S in %s: %v: %s", h.Name, err, out)
	}
	return string(out)
}

// TestLabFlapLossHeal: loss installs random drops both ways, a flapping
// link cuts and restores h, and Heal leaves no rule behind, also while a
// flap was about to cut again.
func TestLabFlapLossHeal(t *testing.T) {
	needLab(t)
	ctx := context.Background()
	l, err := New(ctx, 2)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	h1, h2 := l.Hosts[0], l.Hosts[1]
	if err := l.Loss(ctx, h1, 0.25); err != nil {
		t.Fatal(err)
	}
	if r := rules(t, h1); strings.Count(r, "--probability 0.25") != 2 {
		t.Errorf("loss 0.25 on h1: want two random-drop rules, got:\n%s", r)
	}
	if err := l.Heal(ctx); err != nil {
		t.Fatal(err)
	}
	echo(t, h2, h2.Addr+":7000")
	if err := l.Flap(ctx, h1, 300*time.Millisecond, 300*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if _, err := roundTrip(h1, h2.Addr+":7000", 200*time.Millisecond); err == nil {
		t.Error("h1 reached h2 right after the flap's first cut")
	}
	sawUp := false
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline) && !sawUp; {
		_, err := roundTrip(h1, h2.Addr+":7000", 200*time.Millisecond)
		sawUp = err == nil
	}
	if !sawUp {
		t.Error("the flapping link never let h1 through")
	}
	if err := l.Heal(ctx); err != nil {
		t.Fatal(err)
	}
	time.Sleep(700 * time.Millisecond) // longer than a flap period: a flap still running would cut again
	if r := rules(t, h1); strings.Contains(r, "DROP") {
		t.Errorf("rules left after Heal:\n%s", r)
	}
	if _, err := roundTrip(h1, h2.Addr+":7000", 2*time.Second); err != nil {
		t.Errorf("h1 -> h2 after Heal: %v", err)
	}
}
