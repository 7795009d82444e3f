package hostmanager

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/vmguard/vmguard/config"
	"github.com/vmguard/vmguard/guestagent"
	"github.com/vmguard/vmguard/internal/lease"
)

// The runner's effects over NATS, the roles declared where they are used:
// the node lease's store (leaseStore, lease.go) and the guests' agents
// (guestLinks, perform.go: requests and heartbeats). newRunner builds them
// here from Config; no other file of the runner reaches into the Log's
// connection.

// natsLinks are a runner's effects over NATS.
type natsLinks struct {
	leases    natsLeases
	guests    natsGuests
	connected func() bool // whether the log's connection is up
	url       string      // the URL the log's connection uses
}

// newNATSLinks returns the effects cfg asks for: the node lease on
// Config.LeaseConn, else the log's connection; agents on the log's
// connection (process driver) or Config.GuestConn.
func newNATSLinks(cfg Config) (natsLinks, error) {
	nc := cfg.Log.Conn()
	js := cfg.Log.JetStream()
	if cfg.LeaseConn != nil {
		var err error
		if js, err = jetstream.New(cfg.LeaseConn); err != nil {
			return natsLinks{}, fmt.Errorf("lease connection: %w", err)
		}
	}
	guestNC := nc
	if cfg.GuestConn != nil {
		guestNC = cfg.GuestConn
	}
	return natsLinks{leases: natsLeases{js: js}, guests: natsGuests{nc: nc, guestNC: guestNC},
		connected: nc.IsConnected, url: nc.ConnectedUrl()}, nil
}

// natsLeases is the leaseStore of the lease bucket (internal/lease).
type natsLeases struct{ js jetstream.JetStream }

func (s natsLeases) open(ctx context.Context, ttl time.Duration) (leaseBucket, error) {
	kv, err := lease.Ensure(ctx, s.js, ttl)
	if err != nil {
		return nil, err
	}
	return natsBucket{kv}, nil
}

func (s natsLeases) release(ctx context.Context, key string, ours func([]byte) bool) error {
	kv, err := lease.Open(ctx, s.js)
	if err != nil {
		return err
	}
	return lease.Release(ctx, kv, key, ours)
}

// natsBucket is the leaseBucket of the opened lease bucket.
type natsBucket struct{ kv jetstream.KeyValue }

func (b natsBucket) put(ctx context.Context, key string, value []byte) (uint64, error) {
	return b.kv.Put(ctx, key, value)
}

func (b natsBucket) Update(ctx context.Context, key string, value []byte, rev uint64) (uint64, error) {
	return b.kv.Update(ctx, key, value, rev)
}

func (b natsBucket) get(ctx context.Context, key string) (uint64, []byte, error) {
	e, err := b.kv.Get(ctx, key)
	if err != nil {
		return 0, nil, err
	}
	return e.Revision(), e.Value(), nil
}

// natsGuests is the guestLinks of the agents' NATS micro services and
// heartbeat subjects.
type natsGuests struct {
	nc      *nats.Conn // the log's connection: process-driver agents
	guestNC *nats.Conn // Config.GuestConn, else nc
}

// conn is the connection to g's agent: Config.GuestConn unless g's agent
// is the host manager's own child (the process driver).
func (n natsGuests) conn(g config.Guest) *nats.Conn {
	if g.Driver == config.DriverProcess || g.Driver == "" {
		return n.nc
	}
	return n.guestNC
}

func (n natsGuests) client(g config.Guest) (*guestagent.Client, error) {
	return guestagent.NewClient(n.conn(g), g.Name)
}

func (n natsGuests) beats(g config.Guest, fn func(subject string, data []byte)) (func(), error) {
	sub, err := n.conn(g).Subscribe(guestagent.HeartbeatSubject(g.Name), func(m *nats.Msg) { fn(m.Subject, m.Data) })
	if err != nil {
		return nil, err
	}
	return func() { _ = sub.Unsubscribe() }, nil
}

// settleWait bounds natsGuests.settle: a server that does not answer a
// flush within it is not waited for.
const settleWait = 2 * time.Second

func (n natsGuests) settle(ctx context.Context, g config.Guest) {
	nc := n.conn(g)
	if !nc.IsConnected() {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, settleWait)
	defer cancel()
	_ = nc.FlushWithContext(ctx)
}
