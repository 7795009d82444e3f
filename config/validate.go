package config

import (
	"fmt"
	"regexp"
	"strings"
	"text/template"
	"time"

	"github.com/vmguard/vmguard/events"
)

// Defaults of fields a file leaves out. auto_run defaults to true,
// max_relocate to unlimited, restart to none and a guest's name to its
// package's name.
const (
	DefaultNodeTimeout    = 5 * time.Second
	DefaultGuestTimeout   = 5 * time.Second
	DefaultStartTimeout   = 30 * time.Second
	DefaultHaltTimeout    = 10 * time.Second
	DefaultExecTimeout    = 30 * time.Second
	DefaultMigrateTimeout = 5 * time.Minute
	// DefaultProcessMigrateTimeout bounds a process-driver migration (a
	// hand-over of the agent's pid file: it takes milliseconds).
	DefaultProcessMigrateTimeout = 10 * time.Second
	DefaultBackoffFactor         = 2.0
	DefaultBackoffMax            = 5 * time.Minute
	DefaultFailoverPolicy        = ConfiguredNode
	DefaultFailbackPolicy        = FailbackManual
	DefaultGuestDriver           = DriverProcess
)

// HeartbeatInterval is how often a guest agent sends a heartbeat (the event
// protocol fixes it); guest_timeout must leave room for a missed one.
const HeartbeatInterval = time.Second

// Lower bounds of the timeouts: a guest timeout shorter than two heartbeats
// would report healthy guests lost, and node leases are renewed every
// node_timeout/4.
const (
	MinGuestTimeout = 2 * HeartbeatInterval
	MinNodeTimeout  = time.Second
)

// Validate checks a configuration that did not come from a file (for
// example one decoded from a cluster.config_applied event). It does not fill
// in defaults. Problems are returned as Errors without file and line.
func (c *Cluster) Validate() error {
	d := &decoder{lines: map[string]int{}, set: map[string]bool{}, bad: map[string]bool{}}
	validate(c, d)
	if len(d.errs) > 0 {
		return d.errs
	}
	return nil
}

// defaults fills in every field the file did not set.
func (d *decoder) defaults(c *Cluster) {
	dur := func(path string, v *Duration, def time.Duration) {
		if !d.set[path] {
			*v = Duration(def)
		}
	}
	str := func(path string, v *string, def string) {
		if !d.set[path] {
			*v = def
		}
	}
	dur("node_timeout", &c.NodeTimeout, DefaultNodeTimeout)
	dur("guest_timeout", &c.GuestTimeout, DefaultGuestTimeout)
	for i := range c.Packages {
		p := &c.Packages[i]
		pp := fmt.Sprintf("packages[%d]", i)
		str(pp+".failover_policy", &p.FailoverPolicy, DefaultFailoverPolicy)
		str(pp+".failback_policy", &p.FailbackPolicy, DefaultFailbackPolicy)
		if p.AutoRun == nil {
			t := true
			p.AutoRun = &t
		}
		if !d.set[pp+".max_relocate"] {
			p.MaxRelocate = Unlimited
		}
		g := &p.Guest
		gp := pp + ".guest"
		str(gp+".name", &g.Name, p.Name)
		str(gp+".driver", &g.Driver, DefaultGuestDriver)
		dur(gp+".start_timeout", &g.StartTimeout, DefaultStartTimeout)
		if g.Exec != nil {
			dur(gp+".exec.timeout", &g.Exec.Timeout, DefaultExecTimeout)
			if len(g.Exec.Migrate) > 0 {
				dur(gp+".exec.migrate_timeout", &g.Exec.MigrateTimeout, DefaultMigrateTimeout)
			}
		}
		for j := range p.Services {
			s := &p.Services[j]
			sp := fmt.Sprintf("%s.services[%d]", pp, j)
			dur(sp+".halt_timeout", &s.HaltTimeout, DefaultHaltTimeout)
			if b := s.Backoff; b != nil {
				if !d.set[sp+".backoff.factor"] {
					b.Factor = DefaultBackoffFactor
				}
				if !d.set[sp+".backoff.max"] {
					b.Max = Duration(max(DefaultBackoffMax, b.Delay.D()))
				}
			}
		}
	}
}

// validate checks every rule and reports each broken one through d.
func validate(c *Cluster, d *decoder) {
	name := func(path, s string) bool {
		if err := events.CheckName(path, s); err != nil {
			d.fieldErrorf(path, "%s", strings.TrimPrefix(err.Error(), path+": "))
			return false
		}
		return true
	}
	positive := func(path string, v Duration) {
		if v <= 0 {
			d.fieldErrorf(path, "%s: must be more than 0", v)
		}
	}
	name("cluster", c.Cluster)
	validateTimeouts(c, d)
	nodes := validateNodes(c, d, name)
	pkgs := map[string]bool{}
	guests := map[string]string{}
	for i := range c.Packages {
		pk := &c.Packages[i]
		pp := fmt.Sprintf("packages[%d]", i)
		uniquePkg := false
		if name(pp+".name", pk.Name) {
			if pkgs[pk.Name] {
				d.fieldErrorf(pp+".name", "%q: another package has this name", pk.Name)
			} else {
				uniquePkg = true
			}
			pkgs[pk.Name] = true
		}
		if len(pk.Nodes) == 0 {
			d.fieldErrorf(pp+".nodes", "missing: list at least one node the package may run on")
		}
		seen := map[string]bool{}
		for j, n := range pk.Nodes {
			np := fmt.Sprintf("%s.nodes[%d]", pp, j)
			if !name(np, n) {
				continue
			}
			switch {
			case !nodes[n]:
				d.fieldErrorf(np, "%q is not one of the cluster's nodes (%s)", n, strings.Join(c.Nodes, ", "))
			case seen[n]:
				d.fieldErrorf(np, "%q is listed twice", n)
			}
			seen[n] = true
		}
		switch pk.FailoverPolicy {
		case ConfiguredNode, MinPackageNode:
		default:
			d.fieldErrorf(pp+".failover_policy", "%q: want %s or %s", pk.FailoverPolicy, ConfiguredNode, MinPackageNode)
		}
		switch pk.FailbackPolicy {
		case FailbackManual, FailbackAutomatic:
		default:
			d.fieldErrorf(pp+".failback_policy", "%q: want %s or %s", pk.FailbackPolicy, FailbackManual, FailbackAutomatic)
		}
		validateGuest(&pk.Guest, pp+".guest", d, name, positive)
		validateType(pk, pp, d)
		if events.ValidName(pk.Guest.Name) && uniquePkg {
			for _, g := range guestNames(pk) {
				if !events.ValidName(g) {
					d.fieldErrorf(pp+".guest.name", "%q: the guest's name on each node (<guest>-<node>) of a multi-node package must be a valid name of at most %d characters", g, events.MaxNameLen)
					continue
				}
				if other, dup := guests[g]; dup {
					d.fieldErrorf(pp+".guest.name", "%q is also the guest of package %s: each package has its own guest", g, other)
				}
				guests[g] = pk.Name
			}
		}
		validateResources(pk.Resources, pp, d, name)
		validateServices(pk, pp, d, name, positive)
	}
	validateDependencies(c, d)
}

// guestNames returns the names of pk's guests: its guest, or one per node
// for a multi-node package (Package.GuestOn).
func guestNames(pk *Package) []string {
	if !pk.MultiNode() {
		return []string{pk.Guest.Name}
	}
	out := make([]string, 0, len(pk.Nodes))
	for _, n := range pk.Nodes {
		out = append(out, pk.GuestOn(n))
	}
	return out
}

// validateType checks package_type and, for a multi-node package, that
// nothing that applies to failover packages only is set: as in
// Serviceguard, failover_policy, failback_policy and priority do not apply
// (nor max_relocate or a live migration: an instance never moves), and
// vmguard gives a multi-node package no dependencies of its own.
func validateType(pk *Package, pp string, d *decoder) {
	switch pk.Type {
	case "", TypeFailover:
		return
	case TypeMultiNode:
	default:
		d.fieldErrorf(pp+".package_type", "%q: want %s or %s", pk.Type, TypeFailover, TypeMultiNode)
		return
	}
	for _, f := range []string{"failover_policy", "failback_policy", "max_relocate"} {
		if d.set[pp+"."+f] {
			d.fieldErrorf(pp+"."+f, "does not apply to a multi-node package (it runs on every eligible node at once): leave it out")
		}
	}
	if pk.Priority != 0 {
		d.fieldErrorf(pp+".priority", "does not apply to a multi-node package: leave it out")
	}
	if pk.Guest.Migrate {
		d.fieldErrorf(pp+".guest.migrate", "a multi-node package's instances never move: leave it out")
	}
	if len(pk.Dependencies) > 0 {
		d.fieldErrorf(pp+".dependencies", "a multi-node package has no dependencies in vmguard (failover packages may depend on it: up, same_node or any_node)")
	}
}

// validateTimeouts checks the cluster's node and guest timeouts and the
// fencing timeline they make with the node guard's bound and stop time.
func validateTimeouts(c *Cluster, d *decoder) {
	if c.NodeTimeout < Duration(MinNodeTimeout) {
		d.fieldErrorf("node_timeout", "%s: must be at least %s", c.NodeTimeout, MinNodeTimeout)
	}
	for _, k := range []struct {
		path string
		v    Duration
	}{{"guard_bound", c.GuardBound}, {"guard_stop_time", c.GuardStopTime}} {
		if d.set[k.path] && k.v <= 0 {
			d.fieldErrorf(k.path, "%s: must be more than 0 (leave it out for the default)", k.v)
		}
	}
	if c.NodeTimeout >= Duration(MinNodeTimeout) {
		// The fencing timeline: "node lost" must imply "its guests are
		// stopped" (DESIGN §10). The defaults always hold.
		for _, p := range c.Timeline().Problems() {
			field := "node_timeout"
			switch {
			case d.set["guard_stop_time"] && !d.set["guard_bound"]:
				field = "guard_stop_time"
			case d.set["guard_bound"]:
				field = "guard_bound"
			}
			d.fieldErrorf(field, "fencing timeline: %s", p)
		}
	}
	if c.GuestTimeout < Duration(MinGuestTimeout) {
		d.fieldErrorf("guest_timeout", "%s: must be at least %s (guest agents send a heartbeat every %s)", c.GuestTimeout, MinGuestTimeout, HeartbeatInterval)
	}
}

// validateNodes checks the cluster's node list and returns its valid
// names.
func validateNodes(c *Cluster, d *decoder, name func(string, string) bool) map[string]bool {
	if len(c.Nodes) == 0 {
		d.fieldErrorf("nodes", "missing: list at least one node")
	}
	nodes := map[string]bool{}
	for i, n := range c.Nodes {
		p := fmt.Sprintf("nodes[%d]", i)
		if name(p, n) {
			if nodes[n] {
				d.fieldErrorf(p, "%q is listed twice", n)
			}
			nodes[n] = true
		}
	}
	return nodes
}

// validateServices checks the services of the package pk at path pp: at
// least one, unique names, each service's rules.
func validateServices(pk *Package, pp string, d *decoder, name func(string, string) bool, positive func(string, Duration)) {
	if len(pk.Services) == 0 {
		d.fieldErrorf(pp+".services", "missing: list at least one service")
	}
	svcs := map[string]bool{}
	for j := range pk.Services {
		s := &pk.Services[j]
		sp := fmt.Sprintf("%s.services[%d]", pp, j)
		if name(sp+".name", s.Name) {
			if svcs[s.Name] {
				d.fieldErrorf(sp+".name", "%q: another service of this package has this name", s.Name)
			}
			svcs[s.Name] = true
		}
		validateService(s, sp, d, positive)
	}
}

func validateGuest(g *Guest, gp string, d *decoder, name func(string, string) bool, positive func(string, Duration)) {
	name(gp+".name", g.Name)
	positive(gp+".start_timeout", g.StartTimeout)
	switch g.Driver {
	case DriverProcess:
		if g.Exec != nil {
			d.fieldErrorf(gp+".exec", "only for driver: %s (this guest uses driver: %s)", DriverExec, DriverProcess)
		}
	case DriverExec:
		if g.Exec == nil {
			d.fieldErrorf(gp+".exec", "missing: driver exec needs start, stop and status commands")
			return
		}
		ep := gp + ".exec"
		argv(ep+".start", g.Exec.Start, d)
		argv(ep+".stop", g.Exec.Stop, d)
		argv(ep+".status", g.Exec.Status, d)
		positive(ep+".timeout", g.Exec.Timeout)
		if len(g.Exec.Migrate) > 0 {
			migrateArgv(ep+".migrate", g.Exec.Migrate, d)
			positive(ep+".migrate_timeout", g.Exec.MigrateTimeout)
		} else if g.Migrate {
			d.fieldErrorf(gp+".migrate", "driver exec migrates with a command: give exec.migrate, e.g. [virsh, migrate, --live, \"{{.Guest}}\", \"qemu+ssh://{{.Target}}/system\"]")
		}
	default:
		d.fieldErrorf(gp+".driver", "%q: want %s or %s", g.Driver, DriverProcess, DriverExec)
	}
}

// MigrateTemplateData is what the exec driver's migrate template can use:
// TemplateData's fields and Target, the node the guest goes to.
type MigrateTemplateData struct {
	TemplateData
	Target string
}

// migrateArgv checks the exec driver's migrate command, as argv; len(args)
// is more than 0.
func migrateArgv(path string, args []string, d *decoder) {
	templates(path, args, d, MigrateTemplateData{TemplateData{Guest: "g", Node: "n", Package: "p"}, "t"}, ".Guest, .Node, .Package, .Target")
}

// TemplateData is what the exec driver's command templates can use.
type TemplateData struct {
	Guest   string
	Node    string
	Package string
}

// argv checks an exec driver command: a non-empty argv whose elements are
// templates that run with TemplateData.
func argv(path string, args []string, d *decoder) {
	if len(args) == 0 {
		d.fieldErrorf(path, "missing: want a command as a list, e.g. [virsh, start, \"{{.Guest}}\"]")
		return
	}
	templates(path, args, d, TemplateData{Guest: "g", Node: "n", Package: "p"}, ".Guest, .Node, .Package")
}

// templates checks a non-empty argv: a command name, and elements that
// parse as templates and run with data (whose fields are named in fields).
func templates(path string, args []string, d *decoder, data any, fields string) {
	if strings.TrimSpace(args[0]) == "" {
		d.fieldErrorf(path+"[0]", "empty command name")
	}
	for i, a := range args {
		ap := fmt.Sprintf("%s[%d]", path, i)
		t, err := template.New(ap).Option("missingkey=error").Parse(a)
		if err != nil {
			d.fieldErrorf(ap, "%q: %s", a, templateMsg(err, ap))
			continue
		}
		if err := t.Execute(discard{}, data); err != nil {
			d.fieldErrorf(ap, "%q: %s (fields: %s)", a, templateMsg(err, ap), fields)
		}
	}
}

// templateMsg drops text/template's "template: name:line:col: " prefix and
// its "executing ... at <...>: " part, leaving what is wrong.
func templateMsg(err error, name string) string {
	msg := strings.TrimPrefix(err.Error(), "template: "+name+":")
	msg = templatePos.ReplaceAllString(msg, "")
	if i := strings.Index(msg, ">: "); strings.HasPrefix(msg, "executing ") && i > 0 {
		msg = msg[i+3:]
	}
	return msg
}

var templatePos = regexp.MustCompile(`^\d+(:\d+)?: `)

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

func validateService(s *Service, sp string, d *decoder, positive func(string, Duration)) {
	if len(s.Cmd) == 0 {
		d.fieldErrorf(sp+".cmd", "missing: want the command as a list, e.g. [/usr/sbin/httpd, -DFOREGROUND]")
	} else if strings.TrimSpace(s.Cmd[0]) == "" {
		d.fieldErrorf(sp+".cmd[0]", "empty command name")
	}
	for k := range s.Env {
		if k == "" || strings.ContainsAny(k, "=\x00") {
			d.fieldErrorf(sp+".env", "%q: not a usable environment variable name", k)
		}
	}
	if b := s.Backoff; b != nil {
		bp := sp + ".backoff"
		positive(bp+".delay", b.Delay)
		if b.Factor < 1 {
			d.fieldErrorf(bp+".factor", "%g: must be 1 or more", b.Factor)
		}
		if b.Max < b.Delay {
			d.fieldErrorf(bp+".max", "%s: must be at least the delay (%s)", b.Max, b.Delay)
		}
	}
}
