package sgimport

import (
	"fmt"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/vmguard/vmguard/events"
)

// Options are what a package file does not say and the cluster needs.
type Options struct {
	// Cluster names the cluster (default "imported").
	Cluster string
	// Nodes lists the cluster's nodes; node_name * stands for them. Empty:
	// the nodes the packages name, in the order first named.
	Nodes []string
	// Driver is the guest driver: "process" (default: a local vmguard
	// agent, runs anywhere) or "virsh" (libvirt domains named after the
	// guest, as examples/virsh.yaml).
	Driver string
	// NodeTimeout and GuestTimeout are written as the cluster's
	// node_timeout and guest_timeout (defaults 20s and 10s, the README's
	// advice for a cluster; Serviceguard's MEMBER_TIMEOUT is in the
	// cluster file, which import does not read).
	NodeTimeout, GuestTimeout time.Duration
}

// Drivers that Map can write.
const (
	DriverProcess = "process"
	DriverVirsh   = "virsh"
)

// Note is one thing Map could not carry over, or carried over in a
// different form, and why.
type Note struct {
	File  string
	Line  int
	Param string
	Msg   string
}

func (n Note) String() string { return fmt.Sprintf("%s:%d: %s: %s", n.File, n.Line, n.Param, n.Msg) }

// Result is the mapped cluster and the report.
type Result struct {
	Cluster Cluster
	Notes   []Note
}

// Map turns parsed package files into one vmguard cluster. A file without a
// package_name, or a package type vmguard does not run, is left out with a
// note; an error means nothing could be mapped.
func Map(files []*File, opt Options) (*Result, error) {
	if opt.Cluster == "" {
		opt.Cluster = "imported"
	}
	if opt.Driver == "" {
		opt.Driver = DriverProcess
	}
	if opt.Driver != DriverProcess && opt.Driver != DriverVirsh {
		return nil, fmt.Errorf("driver %q: want %s or %s", opt.Driver, DriverProcess, DriverVirsh)
	}
	if opt.NodeTimeout == 0 {
		opt.NodeTimeout = 20 * time.Second
	}
	if opt.GuestTimeout == 0 {
		opt.GuestTimeout = 10 * time.Second
	}
	r := &Result{Cluster: Cluster{
		Cluster:      opt.Cluster,
		NodeTimeout:  opt.NodeTimeout.String(),
		GuestTimeout: opt.GuestTimeout.String(),
	}}
	seen := map[string]string{} // package name -> file
	var stars []int             // packages whose node_name is *
	for _, f := range files {
		m := &mapper{file: f.Name, opt: opt}
		p, ok := m.pkg(f)
		r.Notes = append(r.Notes, m.notes...)
		if !ok {
			continue
		}
		if other, dup := seen[p.Name]; dup {
			r.Notes = append(r.Notes, Note{f.Name, 1, "package_name", fmt.Sprintf("%q is also in %s: left out (names are unique in a cluster)", p.Name, other)})
			continue
		}
		seen[p.Name] = f.Name
		if m.star {
			stars = append(stars, len(r.Cluster.Packages))
		}
		r.Cluster.Packages = append(r.Cluster.Packages, p)
	}
	if len(r.Cluster.Packages) == 0 {
		return r, fmt.Errorf("no package could be imported (%d files)", len(files))
	}
	nodes := opt.Nodes
	if len(nodes) == 0 {
		for _, p := range r.Cluster.Packages {
			for _, n := range p.Nodes {
				if !slices.Contains(nodes, n) {
					nodes = append(nodes, n)
				}
			}
		}
	} else {
		for _, p := range r.Cluster.Packages {
			for _, n := range p.Nodes {
				if !slices.Contains(nodes, n) {
					r.Notes = append(r.Notes, Note{seen[p.Name], 1, "node_name", fmt.Sprintf("%s names node %q, which is not in --nodes: add it there or remove it from the package", p.Name, n)})
				}
			}
		}
	}
	for _, i := range stars {
		p := &r.Cluster.Packages[i]
		p.Nodes = slices.Clone(nodes)
	}
	if len(nodes) == 0 {
		return r, fmt.Errorf("no node is named: every package has node_name * and --nodes is empty")
	}
	r.Cluster.Nodes = nodes
	return r, nil
}

// mapper maps one file, collecting its notes.
type mapper struct {
	file  string
	opt   Options
	notes []Note
	star  bool
}

func (m *mapper) note(a Attr, format string, args ...any) {
	m.notes = append(m.notes, Note{m.file, a.Line, a.Name, fmt.Sprintf(format, args...)})
}

// pkg maps the parameters of one file.
//
// Longer than 80 lines: one switch over a Serviceguard file's parameters, a
// short case each, in file order (a service's parameters follow its name).
func (m *mapper) pkg(f *File) (Package, bool) {
	var p Package
	var guestFrom string // where the guest's name came from
	var svc *Service     // the service whose parameters follow
	var typeAttr Attr    // package_type multi_node
	set := map[string]Attr{}
	for _, a := range f.Attrs {
		set[a.Name] = a
		switch a.Name {
		case "package_name":
			if p.Name != "" {
				m.note(a, "a second package_name in one file: left out (one package per file)")
				continue
			}
			p.Name = m.name(a)
		case "package_type":
			switch strings.ToLower(a.Value) {
			case "failover", "":
			case "multi_node":
				p.Type, typeAttr = "multi_node", a
			case "system_multi_node":
				m.note(a, "%s: vmguard runs failover and multi_node packages; a system multi-node package (Serviceguard's own, e.g. for CFS) is left out", a.Value)
				return p, false
			default:
				m.note(a, "%q is not a package type; the package is left out", clip(a.Value))
				return p, false
			}
		case "node_name":
			if a.Value == "*" {
				m.star = true
				continue
			}
			if n := m.name(a); n != "" && !slices.Contains(p.Nodes, n) {
				p.Nodes = append(p.Nodes, n)
			}
		case "auto_run":
			if b, ok := m.yesNo(a); ok {
				p.AutoRun = &b
			}
		case "failover_policy":
			if v, ok := m.choice(a, "vmguard has configured_node and min_package_node; configured_node is used", "configured_node", "min_package_node"); ok {
				p.FailoverPolicy = v
			}
		case "failback_policy":
			if v, ok := m.choice(a, "want manual or automatic; manual is used", "manual", "automatic"); ok {
				p.FailbackPolicy = v
			}
		case "node_fail_fast_enabled":
			if b, ok := m.yesNo(a); ok {
				p.NodeFailFast = b
			}
		case "run_script_timeout":
			if d, ok := m.seconds(a, "vmguard bounds every start (DESIGN §8): the default start_timeout (30s) is used"); ok {
				p.Guest.StartTimeout = d
			}
		case "generic_resource_name":
			if n := m.name(a); n != "" {
				p.Resources = append(p.Resources, Resource{Name: n})
			}
		case "generic_resource_evaluation_type", "generic_resource_up_criteria":
			if len(p.Resources) == 0 {
				m.note(a, "comes before any generic_resource_name: left out")
				continue
			}
			r := &p.Resources[len(p.Resources)-1]
			if a.Name == "generic_resource_up_criteria" {
				r.Up = strings.TrimSpace(a.Value)
				continue
			}
			if v, ok := m.choice(a, "want during_package_start or before_package_start; during_package_start is used", "during_package_start", "before_package_start"); ok {
				r.Evaluation = v
			}
		case "priority":
			m.priority(&p, a)
		case "successor_halt_timeout":
			m.successorHalt(&p, a)
		case "dependency_name":
			p.Dependencies = append(p.Dependencies, Dependency{})
		case "dependency_condition", "dependency_location":
			if len(p.Dependencies) == 0 {
				m.note(a, "comes before any dependency_name: left out")
				continue
			}
			m.dependency(&p.Dependencies[len(p.Dependencies)-1], a)
		case "service_name":
			p.Services = append(p.Services, Service{Name: m.name(a), Restart: "none"})
			svc = &p.Services[len(p.Services)-1]
		case "service_cmd", "service_restart", "service_fail_fast_enabled", "service_halt_timeout":
			if svc == nil {
				m.note(a, "comes before any service_name: left out")
				continue
			}
			m.service(svc, a, &p.Guest.Name, &guestFrom)
		default:
			m.other(a)
		}
	}
	if p.Name == "" {
		m.notes = append(m.notes, Note{m.file, 1, "package_name", "missing: the file is left out"})
		return p, false
	}
	if len(p.Nodes) == 0 && !m.star {
		m.notes = append(m.notes, Note{m.file, 1, "node_name", "missing: the package is left out (list its nodes, or * for all)"})
		return p, false
	}
	p.Dependencies = slices.DeleteFunc(p.Dependencies, func(d Dependency) bool {
		if d.Name == "" || d.Condition == "" {
			m.notes = append(m.notes, Note{m.file, 1, "dependency_condition", "a dependency_name without a usable dependency_condition: left out"})
			return true
		}
		return false
	})
	if p.Type == "multi_node" {
		m.multiNode(&p, typeAttr, set)
	}
	// The guest monitor service and empty services are not services in
	// vmguard: the host manager watches the guest itself.
	p.Services = slices.DeleteFunc(p.Services, func(s Service) bool { return s.Name == "" || s.drop })
	m.guest(&p)
	return p, true
}

// multiNode leaves out of multi-node package p what does not apply to one
// (Serviceguard: failover_policy, failback_policy, priority; vmguard: its
// own dependencies), each with a note at its line (set: the last attribute
// of each name).
func (m *mapper) multiNode(p *Package, typ Attr, set map[string]Attr) {
	drop := func(name, why string) {
		a, ok := set[name]
		if !ok {
			a = typ
		}
		m.note(a, "does not apply to a multi_node package (%s): left out", why)
	}
	if p.FailoverPolicy != "" {
		drop("failover_policy", "it runs on every eligible node at once")
		p.FailoverPolicy = ""
	}
	if p.FailbackPolicy != "" {
		drop("failback_policy", "it runs on every eligible node at once")
		p.FailbackPolicy = ""
	}
	if p.Priority != 0 {
		drop("priority", "as in Serviceguard")
		p.Priority = 0
	}
	if len(p.Dependencies) > 0 {
		drop("dependency_name", "vmguard gives a multi-node package no dependencies; failover packages may depend on it")
		p.Dependencies = nil
	}
}

// service maps one parameter of the service s.
func (m *mapper) service(s *Service, a Attr, guest, guestFrom *string) {
	switch a.Name {
	case "service_cmd":
		words := strings.Fields(a.Value)
		if len(words) == 0 {
			m.note(a, "an empty command: the service is left out")
			s.drop = true
			return
		}
		var argv []string
		switch path.Base(words[0]) {
		case "hpvmsg_mon", "hpvmsg_mon.sh":
			// The VM guest package's own service: it watches the guest.
			if n := len(words); n > 1 && events.ValidName(words[n-1]) && *guest == "" {
				*guest, *guestFrom = words[n-1], "hpvmsg_mon"
			}
			m.note(a, "%s watches the guest: vmguard's host manager does that itself (guest_timeout), so service %s is left out", path.Base(words[0]), s.Name)
			s.drop = true
			return
		case "cmappmgr":
			app, g, err := unwrapCmappmgr(words)
			if err != nil {
				m.note(a, "%v: the service is left out", err)
				s.drop = true
				return
			}
			if g != "" {
				switch {
				case *guest == "" || *guestFrom == "hpvmsg_mon":
					*guest, *guestFrom = g, "cmappmgr"
				case *guest != g:
					m.note(a, "cmappmgr -node %s differs from the guest %s named before: vmguard runs one guest per package, %s is kept", g, *guest, *guest)
				}
			}
			argv = app
		default:
			argv = splitCmd(a.Value)
		}
		s.Cmd = argv
	case "service_restart":
		switch v := strings.ToLower(a.Value); {
		case v == "none" || v == "unlimited":
			s.Restart = v
		default:
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 {
				m.note(a, "%q: want none, unlimited or a number; none is used", clip(a.Value))
				return
			}
			s.Restart = strconv.Itoa(n)
		}
	case "service_fail_fast_enabled":
		if b, ok := m.yesNo(a); ok {
			s.FailFast = b
		}
	case "service_halt_timeout":
		n, err := strconv.Atoi(a.Value)
		switch {
		case err != nil || n < 0:
			m.note(a, "%q: want whole seconds; the default (10s) is used", clip(a.Value))
		case n == 0:
			s.HaltTimeout = "1s"
			m.note(a, "0 (SIGKILL at once): vmguard always sends SIGTERM first; 1s is the shortest halt_timeout")
		default:
			s.HaltTimeout = fmt.Sprintf("%ds", n)
		}
	}
}

// guest fills in the package's guest: its name (from cmappmgr -node or
// hpvmsg_mon, else the package's name) and driver.
func (m *mapper) guest(p *Package) {
	g := &p.Guest
	if g.Name == "" {
		g.Name = p.Name
	}
	switch m.opt.Driver {
	case DriverVirsh:
		g.Driver = "exec"
		g.Exec = &Exec{
			Start:  []string{"virsh", "--connect", "qemu:///system", "start", "{{.Guest}}"},
			Stop:   []string{"virsh", "--connect", "qemu:///system", "shutdown", "{{.Guest}}", "--mode", "acpi"},
			Status: []string{"sh", "-c", "virsh --connect qemu:///system domstate {{.Guest}} | grep -qx running"},
		}
	default:
		g.Driver = DriverProcess
	}
	for i := range p.Services {
		if len(p.Services[i].Cmd) == 0 {
			m.notes = append(m.notes, Note{m.file, 1, "service_cmd", fmt.Sprintf("service %s has no service_cmd: left out", p.Services[i].Name)})
		}
	}
	p.Services = slices.DeleteFunc(p.Services, func(s Service) bool { return len(s.Cmd) == 0 })
}

// other notes a parameter that is not mapped, saying why.
func (m *mapper) other(a Attr) {
	why := func(format string, args ...any) { m.note(a, format, args...) }
	switch n := a.Name; {
	case n == "module_name" || n == "module_version" || n == "package_description" ||
		n == "script_log_file" || n == "operation_sequence" || n == "log_level" || n == "verbose" ||
		n == "vmguard" || strings.HasPrefix(n, "pev_"):
		// Bookkeeping of Serviceguard's own scripts: nothing to carry over.
	case n == "halt_script_timeout":
		why("%s: vmguard bounds a halt by each service's halt_timeout and the guest's stop ladder; not carried over", clip(a.Value))
	case strings.HasPrefix(n, "ip_") || strings.HasPrefix(n, "monitored_subnet") || n == "vg" || n == "vxvm_dg" ||
		n == "cvm_dg" || strings.HasPrefix(n, "fs_") || strings.HasPrefix(n, "concurrent_") ||
		strings.HasPrefix(n, "vxvol_") || strings.HasPrefix(n, "enable_threaded") || n == "kill_processes_accessing_raw_devices":
		why("%s: the guest's addresses and storage move with the VM; vmguard does not manage them on the host", clip(a.Value))
	case n == "external_script" || n == "external_pre_script" || n == "run_script" || n == "halt_script":
		why("%s: vmguard runs no package scripts; put what it does in a service or the guest's exec commands", clip(a.Value))
	case n == "user_name" || n == "user_host" || n == "user_role":
		why("%s: access in vmguard is by NATS credentials per role (vmguard init, docs/security.md)", clip(a.Value))
	case n == "local_lan_failover_allowed" || n == "resource_name" || strings.HasPrefix(n, "resource_"):
		why("%s: not applicable to vmguard", clip(a.Value))
	default:
		why("%s: not a parameter vmguard knows; not carried over", clip(a.Value))
	}
}

// name maps a Serviceguard name (letters, digits, '.', '-', '_') to a
// vmguard name ('.' becomes '-'), noting the change.
func (m *mapper) name(a Attr) string {
	v := strings.ReplaceAll(a.Value, ".", "-")
	if len(v) > 64 {
		m.note(a, "%q is longer than 64 characters: left out", clip(a.Value))
		return ""
	}
	if !events.ValidName(v) {
		m.note(a, "%q is not a valid name (letters, digits, '-', '_', '.'): left out", clip(a.Value))
		return ""
	}
	if v != a.Value {
		m.note(a, "%q written as %q (vmguard names have no '.')", a.Value, v)
	}
	return v
}

func (m *mapper) yesNo(a Attr) (bool, bool) {
	v, ok := m.choice(a, "want yes or no; left out", "yes", "no")
	return v == "yes", ok
}

// choice returns a's value in lower case where it is one of choices; else
// it notes the value with otherwise (what vmguard wants, what it uses
// instead) and returns false.
func (m *mapper) choice(a Attr, otherwise string, choices ...string) (string, bool) {
	if v := strings.ToLower(a.Value); slices.Contains(choices, v) {
		return v, true
	}
	m.note(a, "%q: %s", clip(a.Value), otherwise)
	return "", false
}

// seconds maps a whole number of seconds or no_timeout.
func (m *mapper) seconds(a Attr, noTimeout string) (string, bool) {
	if strings.EqualFold(a.Value, "no_timeout") {
		m.note(a, "no_timeout: %s", noTimeout)
		return "", false
	}
	n, err := strconv.Atoi(a.Value)
	if err != nil || n <= 0 {
		m.note(a, "%q: want whole seconds more than 0 or no_timeout; left out", clip(a.Value))
		return "", false
	}
	return fmt.Sprintf("%ds", n), true
}

// priority maps priority: 1 to 3000, or no_priority (left out).
func (m *mapper) priority(p *Package, a Attr) {
	if strings.EqualFold(a.Value, "no_priority") {
		return
	}
	n, err := strconv.Atoi(a.Value)
	if err != nil || n < 1 || n > 3000 {
		m.note(a, "%q: want 1 to 3000 or no_priority; left out (no priority)", clip(a.Value))
		return
	}
	p.Priority = n
}

// successorHalt maps successor_halt_timeout: whole seconds up to an hour;
// no_timeout (wait forever) is not carried over, since every action ends in
// vmguard.
func (m *mapper) successorHalt(p *Package, a Attr) {
	if strings.EqualFold(a.Value, "no_timeout") {
		m.note(a, "no_timeout: vmguard bounds every wait (DESIGN §8): the default successor_halt_timeout (5m) is used")
		return
	}
	n, err := strconv.Atoi(a.Value)
	switch {
	case err != nil || n < 0:
		m.note(a, "%q: want whole seconds or no_timeout; the default (5m) is used", clip(a.Value))
	case n > 3600:
		p.SuccessorHaltTimeout = "1h"
		m.note(a, "%d: vmguard waits at most an hour for successors; 1h is used", n)
	default:
		p.SuccessorHaltTimeout = fmt.Sprintf("%ds", n)
	}
}

// dependency maps dependency_condition ("pkg = UP" or "pkg = DOWN") and
// dependency_location into d. vmguard names a dependency by its package,
// so dependency_name's own identifier is not kept.
func (m *mapper) dependency(d *Dependency, a Attr) {
	if a.Name == "dependency_location" {
		if v, ok := m.choice(a, "want same_node, any_node, different_node or all_nodes; same_node is used", "same_node", "any_node", "different_node", "all_nodes"); ok {
			d.Location = v
		}
		return
	}
	pkg, cond, ok := strings.Cut(a.Value, "=")
	cond = strings.ToLower(strings.TrimSpace(cond))
	if !ok || (cond != "up" && cond != "down") {
		m.note(a, "%q: want PACKAGE = UP or PACKAGE = DOWN; the dependency is left out", clip(a.Value))
		return
	}
	d.Name = m.name(Attr{Name: a.Name, Value: strings.TrimSpace(pkg), Line: a.Line})
	d.Condition = cond
}
