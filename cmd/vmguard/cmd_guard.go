package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"

	"github.com/vmguard/vmguard/events"
	"github.com/vmguard/vmguard/hostmanager"
)

type guardCmd struct {
	Node     string `name:"node" short:"n" required:"" help:"Name of the node guarded."`
	State    string `name:"state" help:"The node's state directory, as given to vmguard host (default .vmguard/host/<node>)."`
	Pet      string `name:"pet" placeholder:"JSON" hidden:"" help:"The first pet, as vmguard host sends it on the socket (vmguard host passes the pet it is about to send, so that the guard is armed from its start)."`
	Escalate string `name:"escalate" placeholder:"COMMAND" help:"Command run after the guard stopped the guests because the host manager stopped petting it, or when a stop failed, e.g. 'systemctl reboot --force' (split on spaces). Default: none."`
}

// Help is shown by `vmguard guard --help`.
func (c *guardCmd) Help() string {
	return `The node guard (Serviceguard's safety timer, Proxmox's watchdog-mux): a
small process beside the host manager that stops every guest of the node,
with force, through its driver, when the host manager has not petted it in
time (it died, hangs, or cannot renew the node's lease), or at once when the
host manager reports its lease lost. Then it runs --escalate, if given. It
only ever stops guests; it never starts anything.

vmguard host starts it (in its own session, so it outlives even a kill -9 of
the host manager) and pets it over <state>/guard.sock after each lease
renewal; a later host manager of the node pets the same guard. It records
each action in <state>/guard.actions (one JSON line each) and logs to
<state>/guard.log. Its timing is guard_bound and guard_stop_time of the
cluster config (vmguard check shows whether the timeline holds).`
}

// Run runs the guard until SIGTERM or Ctrl-C.
func (c *guardCmd) Run(ctx context.Context, g *globals) error {
	if err := events.CheckName("--node", c.Node); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	state := c.State
	if state == "" {
		state = filepath.Join(".vmguard", "host", c.Node)
	}
	logger := slog.New(slog.NewTextHandler(g.Stderr, nil))
	gd, err := hostmanager.NewGuard(hostmanager.GuardConfig{
		Node: c.Node, StateDir: state, Escalate: strings.Fields(c.Escalate), Logger: logger, FirstPet: c.Pet,
	})
	if err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	err = gd.Run(ctx)
	if errors.Is(err, hostmanager.ErrGuardRunning) {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	return err
}
