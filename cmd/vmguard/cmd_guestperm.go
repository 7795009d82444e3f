package main

import (
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/vmguard/vmguard/internal/guestauth"
)

// guestPermCmd is `vmguard guest-permissions`: the nats-server user entry
// that limits one guest's agent to its own subjects.
type guestPermCmd struct {
	Guest       string   `name:"guest" required:"" help:"The guest (its agent's --guest)."`
	Packages    []string `name:"package" short:"p" placeholder:"PKG" help:"A package whose services run in the guest (repeat for more)."`
	Nodes       []string `name:"node" short:"n" placeholder:"NODE" help:"A node whose lease the agent may watch (its --node); list every node the guest may run on (repeat). None: the agent must run without --node."`
	File        string   `name:"file" short:"f" type:"existingfile" placeholder:"cluster.yaml" help:"Take the guest's packages and their nodes from this cluster configuration (added to --package and --node)."`
	User        string   `name:"user" help:"NATS user name (default: the guest's name)."`
	PasswordEnv string   `name:"password-env" placeholder:"VAR" help:"Environment variable holding the user's password (default: a random password is generated and printed)."`
	InboxPrefix string   `name:"inbox-prefix" placeholder:"PREFIX" help:"Inbox prefix of the agent's connection (default _INBOX_<guest>, which vmguard agent uses, so the guest receives its own replies only; _INBOX is shared by every client and would let the guest read every reply)."`
}

// Run prints the user entry to paste into the users list of a nats-server
// authorization block.
func (c *guestPermCmd) Run(ctx context.Context, g *globals) error {
	inbox := c.InboxPrefix
	if inbox == "" {
		inbox = guestauth.InboxPrefix(c.Guest)
	}
	guest := guestauth.Guest{Name: c.Guest, Packages: c.Packages, Nodes: c.Nodes, InboxPrefix: inbox}
	if c.File != "" {
		cl, err := loadConfigFile(g, c.File)
		if err != nil {
			return err
		}
		found := false
		for _, p := range cl.Packages {
			if p.Guest.Name != c.Guest {
				continue
			}
			found = true
			guest.Packages = append(guest.Packages, p.Name)
			guest.Nodes = append(guest.Nodes, p.Nodes...)
		}
		if !found {
			return fmt.Errorf("%w: --guest: no package of %s runs in guest %q", errUsage, c.File, c.Guest)
		}
	}
	perms, err := guestauth.For(guest)
	if err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	user := c.User
	if user == "" {
		user = c.Guest
	}
	if strings.ContainsAny(user, " \t\r\n") || user == "" {
		return fmt.Errorf("%w: --user: %q, want a name without white space", errUsage, user)
	}
	password := rand.Text()
	if c.PasswordEnv != "" {
		password = os.Getenv(c.PasswordEnv)
		if password == "" {
			return fmt.Errorf("%w: --password-env: $%s is empty or not set", errUsage, c.PasswordEnv)
		}
	}
	fmt.Fprint(g.Stdout, guestauth.Render(guestauth.User{
		Name: user, Password: password, Permissions: &perms,
		Comment: permComment(guest, user),
	}, ""))
	return nil
}

// permComment says what the entry is for and how the agent uses it.
func permComment(gs guestauth.Guest, user string) string {
	pkgs := slices.Compact(slices.Sorted(slices.Values(gs.Packages)))
	nodes := slices.Compact(slices.Sorted(slices.Values(gs.Nodes)))
	var b strings.Builder
	fmt.Fprintf(&b, "vmguard guest %s: process events of package %s", gs.Name, strings.Join(pkgs, ", "))
	if len(nodes) > 0 {
		fmt.Fprintf(&b, "; lease watch of node %s", strings.Join(nodes, ", "))
	} else {
		b.WriteString("; no lease watch (run the agent without --node)")
	}
	b.WriteString(".\nPaste into `authorization { users = [ ... ] }` of the nats-server config\n")
	b.WriteString("(`vmguard server -c FILE`); see docs/security.md. The agent connects as this user:\n")
	node := ""
	if len(nodes) > 0 {
		node = " --node <node>"
	}
	fmt.Fprintf(&b, "  NATS_URL=nats://%s:<password>@<server>:4222 vmguard agent --guest %s%s\n", user, gs.Name, node)
	return b.String()
}
