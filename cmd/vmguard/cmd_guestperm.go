package main

import (
	"context"
	"errors"
	"fmt"
)

// guestPermCmd is `vmguard guest-permissions`, retired: it printed one
// guest's user entry for a server config where every role shares one
// account. Guests now sit in accounts of their own (limits, imports, the
// guest gate for their events; on leaf nodes with `init --leaf`), which
// one user entry cannot express, so it says what to run instead. Its old
// flags are still accepted so that an old script gets that message, not a
// parse error.
type guestPermCmd struct {
	Guest       string   `name:"guest" hidden:""`
	Packages    []string `name:"package" short:"p" hidden:""`
	Nodes       []string `name:"node" short:"n" hidden:""`
	File        string   `name:"file" short:"f" hidden:""`
	User        string   `name:"user" hidden:""`
	PasswordEnv string   `name:"password-env" hidden:""`
	InboxPrefix string   `name:"inbox-prefix" hidden:""`
}

// errGuestPermRetired is what `vmguard guest-permissions` says.
var errGuestPermRetired = errors.New("guest-permissions is retired: a guest's NATS user no longer goes beside the other roles' in one account. " +
	"Each guest needs an account of its own (limits, its imports, and the guest gate that checks its events), which one user entry cannot express. " +
	"Run `vmguard init -f cluster.yaml --out DIR` (with `--leaf tls://SERVER:7422` to have guests connect to leaf nodes on their hosts): it writes the server's nats.conf with every guest's account and each guest's identity; " +
	"to add a guest, run it again with --force (docs/security.md)")

// Run refuses, saying what to run instead.
func (c *guestPermCmd) Run(ctx context.Context, g *globals) error {
	return fmt.Errorf("%w: %w", errUsage, errGuestPermRetired)
}
