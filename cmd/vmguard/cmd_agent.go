package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/vmguard/vmguard/guestagent/agentcmd"
)

// agentCmd is `vmguard agent`; its options and work are shared with the
// slim guest binary cmd/vmguard-agent.
type agentCmd struct {
	agentcmd.Options `embed:""`
}

// Run serves run/stop/list/ping for the guest until SIGTERM, then stops its
// processes and delivers their exits.
func (c *agentCmd) Run(ctx context.Context, g *globals) error {
	err := c.Options.Run(ctx, g.Flags, g.Stderr, version)
	if ue, ok := errors.AsType[*agentcmd.UsageError](err); ok {
		return fmt.Errorf("%w: %v", errUsage, ue.Err)
	}
	return err
}
