package natsd

import (
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/vmguard/vmguard/internal/dirlock"
)

// TestSecondServerOnStoreRefused: two servers must never write one
// JetStream store; the second is refused and told who holds it.
func TestSecondServerOnStoreRefused(t *testing.T) {
	store := t.TempDir()
	s := StartTest(t, store)
	_, err := Start(Config{StoreDir: store, Port: -1, Interval: true})
	if !errors.Is(err, dirlock.ErrHeld) {
		t.Fatalf("second server on %s: %v, want refused as held", store, err)
	}
	if !strings.Contains(err.Error(), "vmguard server (pid") {
		t.Errorf("refusal does not name the holder: %v", err)
	}
	s.Shutdown()
	s.WaitForShutdown()
	s2, err := Start(Config{StoreDir: store, Port: -1, Interval: true})
	if err != nil {
		t.Fatalf("a server after the first shut down: %v", err)
	}
	s2.Shutdown()
	s2.WaitForShutdown()
}

// TestBusyPortFailsAtOnce: a port in use is reported at once, with the
// server's reason, not after the 30 s readiness bound.
func TestBusyPortFailsAtOnce(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	store := t.TempDir()
	begin := time.Now()
	_, err = Start(Config{StoreDir: store, Port: port, Interval: true})
	took := time.Since(begin)
	if err == nil || !strings.Contains(err.Error(), "address already in use") {
		t.Fatalf("start on a busy port: %v, want address already in use", err)
	}
	if took > 10*time.Second {
		t.Errorf("the busy port was reported after %v; the readiness bound is 30s, a listen error must end it at once", took)
	}
	// The failed server released its store: another server may use it.
	s := StartTest(t, store)
	s.Shutdown()
}
