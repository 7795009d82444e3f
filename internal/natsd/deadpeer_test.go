package natsd

import (
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// blackhole passes TCP connections to target until cut, then swallows
// everything both ways without closing anything, as a network partition
// does; it notes when either end closed its connection.
type blackhole struct {
	ln     net.Listener
	target string

	mu     sync.Mutex
	cut    bool
	closed time.Time
	conns  []net.Conn
}

func (b *blackhole) serve() {
	for {
		in, err := b.ln.Accept()
		if err != nil {
			return
		}
		out, err := net.Dial("tcp", b.target)
		if err != nil {
			in.Close()
			continue
		}
		b.mu.Lock()
		b.conns = append(b.conns, in, out)
		b.mu.Unlock()
		go b.pipe(out, in)
		go b.pipe(in, out)
	}
}

func (b *blackhole) pipe(dst, src net.Conn) {
	buf := make([]byte, 32*1024)
	for {
		n, err := src.Read(buf)
		if err != nil {
			b.mu.Lock()
			if b.cut && b.closed.IsZero() && err != io.ErrClosedPipe {
				b.closed = time.Now()
			}
			b.mu.Unlock()
			return
		}
		b.mu.Lock()
		cut := b.cut
		b.mu.Unlock()
		if !cut {
			if _, err := dst.Write(buf[:n]); err != nil {
				return
			}
		}
	}
}

func (b *blackhole) close() {
	b.ln.Close()
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, c := range b.conns {
		c.Close()
	}
}

// TestDeadRouteClosedFast: a route whose peer stops answering without
// closing anything (a partition) is closed by a server within the tuned
// bound, RoutePing × (RoutePingsOut + 1) and some slack, not after the
// 1-1.5 minutes of nats-server's defaults.
func TestDeadRouteClosedFast(t *testing.T) {
	ports := freePorts(t, 5)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	bh := &blackhole{ln: ln, target: fmt.Sprintf("127.0.0.1:%d", ports[2])}
	go bh.serve()
	defer bh.close()
	a, err := Start(Config{StoreDir: t.TempDir(), Port: ports[0], Name: "a", Interval: true, ClusterName: "dead", ClusterPort: ports[2],
		// JetStream wants a configured route; this one leads nowhere, so
		// the only route between a and b passes the blackhole.
		Routes: []string{fmt.Sprintf("nats-route://127.0.0.1:%d", ports[4])}})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Shutdown()
	b, err := Start(Config{StoreDir: t.TempDir(), Port: ports[1], Name: "b", Interval: true, ClusterName: "dead", ClusterPort: ports[3],
		Routes: []string{"nats-route://" + ln.Addr().String()}})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Shutdown()
	deadline := time.Now().Add(20 * time.Second)
	for a.NumRoutes() == 0 || b.NumRoutes() == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("no route between a and b: a %d, b %d", a.NumRoutes(), b.NumRoutes())
		}
		time.Sleep(20 * time.Millisecond) // poll
	}
	bh.mu.Lock()
	bh.cut = true
	bh.mu.Unlock()
	cut := time.Now()
	bound := RoutePing*(RoutePingsOut+1) + 5*time.Second
	for {
		bh.mu.Lock()
		closed := bh.closed
		bh.mu.Unlock()
		if !closed.IsZero() {
			t.Logf("a route across a partition closed %v after the cut (route ping %v, %d outstanding)", closed.Sub(cut).Round(time.Millisecond), RoutePing, RoutePingsOut)
			return
		}
		if time.Since(cut) > bound {
			t.Fatalf("a route across a partition still open %v after the cut, want closed within %v", time.Since(cut).Round(time.Millisecond), bound)
		}
		time.Sleep(50 * time.Millisecond) // poll
	}
}

// TestDeadPeerTuningKeepsConfigFile: the bounds fill in only what the
// config file leaves unset.
func TestDeadPeerTuningKeepsConfigFile(t *testing.T) {
	o, err := Config{StoreDir: t.TempDir()}.Options()
	if err != nil {
		t.Fatal(err)
	}
	if o.Cluster.PingInterval != RoutePing || o.Cluster.MaxPingsOut != RoutePingsOut || o.Cluster.WriteDeadline != RouteWriteDeadline ||
		o.PingInterval != ClientPing || o.MaxPingsOut != ClientPingsOut {
		t.Errorf("defaults: route ping %v/%d write %v, client ping %v/%d", o.Cluster.PingInterval, o.Cluster.MaxPingsOut, o.Cluster.WriteDeadline, o.PingInterval, o.MaxPingsOut)
	}
	p := writeConf(t, "ping_interval: \"20s\"\nping_max: 5\ncluster { name: c, listen: 127.0.0.1:6399, ping_interval: \"7s\", ping_max: 4, write_deadline: \"9s\" }\n")
	o, err = Config{ConfigFile: p, StoreDir: t.TempDir(), Name: "x"}.Options()
	if err != nil {
		t.Fatal(err)
	}
	if o.Cluster.PingInterval != 7*time.Second || o.Cluster.MaxPingsOut != 4 || o.Cluster.WriteDeadline != 9*time.Second ||
		o.PingInterval != 20*time.Second || o.MaxPingsOut != 5 {
		t.Errorf("from the file: route ping %v/%d write %v, client ping %v/%d", o.Cluster.PingInterval, o.Cluster.MaxPingsOut, o.Cluster.WriteDeadline, o.PingInterval, o.MaxPingsOut)
	}
}
