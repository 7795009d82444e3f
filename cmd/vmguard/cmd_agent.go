package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/vmguard/vmguard/guestagent"
	"github.com/vmguard/vmguard/guestagent/agentcmd"
)

// agentCmd is `vmguard agent`; its options and work are shared with the
// slim guest binary cmd/vmguard-agent.
type agentCmd struct {
	agentcmd.Options `embed:""`
	metricsFlag      `embed:""`
}

// Run serves run/stop/list/ping for the guest until SIGTERM, then stops its
// processes and delivers their exits.
func (c *agentCmd) Run(ctx context.Context, g *globals) error {
	m, err := c.start(ctx, slog.New(slog.NewTextHandler(g.Stderr, nil)))
	if err != nil {
		return err
	}
	c.OnAgent = func(a *guestagent.Agent) {
		if m != nil {
			m.AddGauge("agent_processes", "Processes the guest agent runs now.", prometheus.Labels{"guest": c.Guest},
				func() float64 { return float64(a.Running()) })
		}
		ready()
	}
	err = c.Options.Run(ctx, g.Flags, g.Stderr, version)
	if ue, ok := errors.AsType[*agentcmd.UsageError](err); ok {
		return fmt.Errorf("%w: %v", errUsage, ue.Err)
	}
	return err
}
