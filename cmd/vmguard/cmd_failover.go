package main

import (
	"context"
	"fmt"
	"time"

	"github.com/vmguard/vmguard/failover"
	"github.com/vmguard/vmguard/internal/natsconn"
)

type failoverCmd struct {
	ID            string        `name:"id" help:"Name of this instance in the leader election (default: host name and process id)."`
	ElectionTTL   time.Duration `name:"election-ttl" default:"3s" help:"How long leadership lasts without renewal: a standby takes over at most this long after the leader dies (at once after a clean stop). Use the same value on every instance."`
	CheckInterval time.Duration `name:"check-interval" default:"250ms" help:"How often the leader checks the node leases."`
	NoSnapshot    bool          `name:"no-snapshot" help:"Neither load nor write state snapshots (KV bucket vmguard_snapshots): replay the whole log at start."`
	Verbose       bool          `name:"verbose" short:"v" help:"Log debug messages (refused decisions, snapshots)."`
	metricsFlag   `embed:""`
	ClusterWait   time.Duration `name:"cluster-wait" default:"2m" help:"How long to wait, at start, for a JetStream cluster that is still forming before exiting."`
}

// Help is shown by `vmguard failover --help`.
func (c *failoverCmd) Help() string {
	return `The failover controller: it decides where each package runs. Run any number
of instances, on any machines that reach NATS; one leads (it holds the key
"leader" of the KV bucket vmguard_failover, renewed every --election-ttl/3),
the others follow the log and stay warm, ready to take over.

The leader places auto_run packages when their nodes are up, moves a package
to the next eligible node when it failed (package.failed) or its node was
lost, fails back under failback_policy automatic, and records node.lost for
a node whose lease (KV bucket vmguard_leases) expired - never earlier. Every
decision is appended with an expected-sequence check on the package's
subjects, so even two leaders at once cannot both place a package.

At start it loads its last snapshot (KV bucket vmguard_snapshots) and reads
only the events after it; SIGINT or SIGTERM stops it cleanly: it writes a
snapshot and releases leadership, so that a standby takes over at once.

Example:
  vmguard failover --nats nats://10.0.0.5:4222 --id ctl1
  vmguard failover --nats nats://10.0.0.5:4222 --id ctl2     # a standby`
}

// Run runs the controller until SIGINT or SIGTERM.
func (c *failoverCmd) Run(ctx context.Context, g *globals) error {
	switch {
	case c.ElectionTTL < 100*time.Millisecond:
		return fmt.Errorf("%w: --election-ttl: %s, want at least 100ms", errUsage, c.ElectionTTL)
	case c.CheckInterval <= 0:
		return fmt.Errorf("%w: --check-interval: %s, want more than 0", errUsage, c.CheckInterval)
	}
	logger := newLogger(g.Stderr, c.Verbose)
	name := "vmguard failover"
	if c.ID != "" {
		name += " " + c.ID
	}
	d, err := startDaemon(ctx, g, logger, daemonSpec{name: name, metrics: c.metricsFlag, wait: c.ClusterWait, what: "open the log"})
	if err != nil {
		return err
	}
	defer d.close()
	m, l := d.metrics, d.log
	r, err := failover.NewRunner(failover.Config{
		Log: l, Logger: logger, ID: c.ID,
		ElectionTTL: c.ElectionTTL, CheckInterval: c.CheckInterval, NoSnapshot: c.NoSnapshot,
	})
	if err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if m != nil {
		watchFailover(m, l, r)
	}
	logger.Info("failover controller starting", "nats", natsconn.Redact(g.NATS), "election_ttl", c.ElectionTTL)
	ready()
	if err := r.Run(ctx); err != nil {
		return err
	}
	s := r.Stats()
	logger.Info("failover controller stopped", "seq", s.Seq, "decisions", s.Decisions, "conflicts", s.Conflicts)
	return nil
}
