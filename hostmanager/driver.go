package hostmanager

import (
	"context"
	"time"

	"github.com/vmguard/vmguard/config"
)

// Driver starts, stops and checks guests of one kind (config guest.driver).
// Every method is idempotent: a Start of a guest that already runs counts as
// started (after a crash of the host manager the start comes again), a Stop
// of a guest that is down succeeds. A Driver only drives the guest; the
// runner waits for the guest agent's first heartbeat before it counts the
// guest as started.
type Driver interface {
	// Start starts the guest and returns once the driver did its part (the
	// VM is booting, the agent process forked).
	Start(ctx context.Context, g GuestRef) error
	// Stop stops the guest and returns once it is down: gracefully (the
	// agent stops its processes first), or at once when force is set (the
	// guest is lost or its node fenced).
	Stop(ctx context.Context, g GuestRef, force bool) error
	// Status reports whether the guest runs.
	Status(ctx context.Context, g GuestRef) (bool, error)
}

// Migrator is a Driver that can migrate a running guest live to another
// node: it returns once the guest runs there (its processes still running)
// and no longer here, or fails and leaves it running here. The runner
// bounds it by migrateTimeout.
type Migrator interface {
	Migrate(ctx context.Context, g GuestRef, target string) error
}

// migrateTimeout bounds one migration of guest g: exec.migrate_timeout for
// the exec driver, DefaultProcessMigrateTimeout for the process driver.
func migrateTimeout(g config.Guest) time.Duration {
	if g.Exec != nil && g.Exec.MigrateTimeout.D() > 0 {
		return g.Exec.MigrateTimeout.D()
	}
	if g.Driver == config.DriverExec {
		return config.DefaultMigrateTimeout
	}
	return DefaultProcessMigrateTimeout
}

// GuestRef names a guest to a Driver: the package it belongs to, the node
// it runs on and its configuration (name, driver settings).
type GuestRef struct {
	Package string
	Node    string
	Guest   config.Guest
}

// Name returns the guest's name.
func (g GuestRef) Name() string { return g.Guest.Name }
