package natsd

import (
	"testing"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// StartTest runs an embedded JetStream server on a free loopback port with
// its store in a test temp dir (or in dir, if given) and shuts it down when
// the test ends. Tests use interval mode unless they test durability.
func StartTest(t testing.TB, dir ...string) *server.Server {
	t.Helper()
	store := t.TempDir()
	if len(dir) > 0 {
		store = dir[0]
	}
	s, err := Start(Config{StoreDir: store, Port: -1, Interval: true})
	if err != nil {
		t.Fatalf("start nats server: %v", err)
	}
	t.Cleanup(s.Shutdown)
	return s
}

// Connect opens a connection to s that is closed when the test ends.
func Connect(t testing.TB, s *server.Server) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(s.ClientURL(), nats.MaxReconnects(-1))
	if err != nil {
		t.Fatalf("connect to %s: %v", s.ClientURL(), err)
	}
	t.Cleanup(nc.Close)
	return nc
}
