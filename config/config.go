// Package config owns the cluster configuration: its Go types, YAML
// decoding with file:line errors, defaults and validation. It does no I/O
// beyond reading the file it is given; `vmguard apply` records the result in
// the log as a cluster.config_applied event, and every component reads the
// config in force from there.
//
// DESIGN §7 has no config/ folder; the types live here because the host
// manager, the failover controller and the CLI all need them.
package config

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	"github.com/vmguard/vmguard/internal/duration"
	"github.com/vmguard/vmguard/internal/timeline"
)

// Cluster is one cluster configuration (DESIGN §5).
type Cluster struct {
	Cluster      string   `yaml:"cluster" json:"cluster"`
	NodeTimeout  Duration `yaml:"node_timeout" json:"node_timeout"`
	GuestTimeout Duration `yaml:"guest_timeout" json:"guest_timeout"`
	// GuardBound and GuardStopTime are the node guard's part of the fencing
	// timeline (internal/timeline): it stops a node's guests when its host
	// manager has not petted it for one renewal interval plus GuardBound,
	// and escalates if that takes longer than GuardStopTime. Defaults:
	// 0.4 and 0.25 of node_timeout. They stay 0 when left out (0 means the
	// default, which follows node_timeout), so configs recorded before they
	// existed keep their hash.
	GuardBound    Duration  `yaml:"guard_bound,omitempty" json:"guard_bound,omitempty"`
	GuardStopTime Duration  `yaml:"guard_stop_time,omitempty" json:"guard_stop_time,omitempty"`
	Nodes         []string  `yaml:"nodes" json:"nodes"`
	Packages      []Package `yaml:"packages" json:"packages"`
}

// Timeline returns the node fencing timeline of c, defaults for what c
// leaves at 0.
func (c *Cluster) Timeline() timeline.Timeline {
	t := timeline.Default(c.NodeTimeout.D())
	if c.GuardBound > 0 {
		t.GuardBound = c.GuardBound.D()
	}
	if c.GuardStopTime > 0 {
		t.GuestStop = c.GuardStopTime.D()
	}
	return t
}

// Failover policies.
const (
	ConfiguredNode = "configured_node"
	MinPackageNode = "min_package_node"
)

// Failback policies.
const (
	FailbackManual    = "manual"
	FailbackAutomatic = "automatic"
)

// Package types (Serviceguard's package_type). "" is failover.
const (
	TypeFailover  = "failover"
	TypeMultiNode = "multi_node"
)

// Guest drivers.
const (
	DriverProcess = "process"
	DriverExec    = "exec"
)

// Package is a guest plus the services monitored inside it; it runs on one
// node of Nodes at a time, the first being the primary.
type Package struct {
	Name string `yaml:"name" json:"name"`
	// Type is failover ("" is failover: one node at a time) or multi_node:
	// an instance on every eligible node of Nodes at once, each with its
	// own guest (GuestOn) and restart counters; a node lost loses its
	// instance only (no failover). Left out of the JSON when "", so that
	// configs recorded before it existed keep their hash.
	Type           string    `yaml:"package_type,omitempty" json:"package_type,omitempty"`
	Nodes          []string  `yaml:"nodes" json:"nodes"`
	FailoverPolicy string    `yaml:"failover_policy" json:"failover_policy"`
	FailbackPolicy string    `yaml:"failback_policy" json:"failback_policy"`
	AutoRun        *bool     `yaml:"auto_run" json:"auto_run"`
	MaxRelocate    Limit     `yaml:"max_relocate" json:"max_relocate"`
	Guest          Guest     `yaml:"guest" json:"guest"`
	Services       []Service `yaml:"services" json:"services"`
	// NodeFailFast (Serviceguard's node_fail_fast_enabled) fences the node
	// the package runs on when the package fails there: every guest of the
	// node is stopped and node.fenced recorded, so all of its packages move.
	NodeFailFast bool `yaml:"node_fail_fast,omitempty" json:"node_fail_fast,omitempty"`
	// Resources are the generic resources the package needs on its node
	// (Serviceguard's generic_resource_*): a node is eligible only while
	// each is up there by its criterion.
	Resources []Resource `yaml:"resources,omitempty" json:"resources,omitempty"`
	// Priority (Serviceguard's priority) is 1 to 3000, a lower number a
	// higher priority; 0 (left out) is none, lower than any number. It
	// decides which of two packages that exclude each other runs when both
	// could: the higher one displaces the lower (README, Dependencies).
	Priority int `yaml:"priority,omitempty" json:"priority,omitempty"`
	// Dependencies are the other packages this one needs up, or down
	// (Serviceguard's dependency_*): see Dependency.
	Dependencies []Dependency `yaml:"dependencies,omitempty" json:"dependencies,omitempty"`
	// SuccessorHaltTimeout bounds how long a halt or move of this package
	// ordered by the controller or `pkg halt` waits for the packages that
	// depend on it to halt first; nil: DefaultSuccessorHaltTimeout, 0: no
	// wait (they halt alongside).
	SuccessorHaltTimeout *Duration `yaml:"successor_halt_timeout,omitempty" json:"successor_halt_timeout,omitempty"`
}

// MultiNode reports whether the package is a multi-node package
// (package_type: multi_node).
func (p Package) MultiNode() bool { return p.Type == TypeMultiNode }

// GuestOn returns the name of the package's guest on node: the guest's
// name for a failover package, "<guest>-<node>" for a multi-node package,
// whose instances run at once and so each need their own guest (agent
// subjects and pid files are per guest name).
func (p Package) GuestOn(node string) string {
	if !p.MultiNode() {
		return p.Guest.Name
	}
	return p.Guest.Name + "-" + node
}

// AutoRunEnabled reports the package's auto_run setting (default true).
func (p Package) AutoRunEnabled() bool { return p.AutoRun == nil || *p.AutoRun }

// Service returns the named service and whether it exists.
func (p Package) Service(name string) (Service, bool) {
	for _, s := range p.Services {
		if s.Name == name {
			return s, true
		}
	}
	return Service{}, false
}

// Guest is the package's VM and how to start it.
type Guest struct {
	Name         string      `yaml:"name" json:"name"`
	Driver       string      `yaml:"driver" json:"driver"`
	Restart      Limit       `yaml:"restart" json:"restart"`
	StartTimeout Duration    `yaml:"start_timeout" json:"start_timeout"`
	Exec         *ExecDriver `yaml:"exec,omitempty" json:"exec,omitempty"`
	// Migrate asks for live migration when the package moves (`pkg move`,
	// a drain): the guest keeps running and goes to the new node instead of
	// halting here and starting there. The process driver migrates with it
	// set; the exec driver when exec.migrate is given (which sets it).
	Migrate bool `yaml:"migrate,omitempty" json:"migrate,omitempty"`
}

// CanMigrate reports whether the guest's driver is configured to migrate
// it live.
func (g Guest) CanMigrate() bool {
	switch g.Driver {
	case DriverProcess:
		return g.Migrate
	case DriverExec:
		return g.Exec != nil && len(g.Exec.Migrate) > 0
	}
	return false
}

// ExecDriver holds command templates for the exec guest driver. Each is an
// argv whose elements are Go templates with .Guest, .Node and .Package.
type ExecDriver struct {
	Start  []string `yaml:"start" json:"start"`
	Stop   []string `yaml:"stop" json:"stop"`
	Status []string `yaml:"status" json:"status"`
	// Migrate, if given, migrates the running guest live to another node:
	// an argv template that also sees .Target, the node it goes to, e.g.
	// [virsh, migrate, --live, "{{.Guest}}", "qemu+ssh://{{.Target}}/system"].
	// It runs on the node the guest leaves, bounded by MigrateTimeout.
	Migrate []string `yaml:"migrate,omitempty" json:"migrate,omitempty"`
	// MigrateTimeout bounds the migrate command (default 5m: a live
	// migration copies the guest's memory).
	MigrateTimeout Duration `yaml:"migrate_timeout,omitempty" json:"migrate_timeout,omitempty"`
	Timeout        Duration `yaml:"timeout" json:"timeout"`
}

// Service is one monitored application inside the guest.
type Service struct {
	Name          string            `yaml:"name" json:"name"`
	Cmd           []string          `yaml:"cmd" json:"cmd"`
	Env           map[string]string `yaml:"env,omitempty" json:"env,omitempty"`
	Dir           string            `yaml:"dir,omitempty" json:"dir,omitempty"`
	Restart       Limit             `yaml:"restart" json:"restart"`
	RestartWindow Duration          `yaml:"restart_window,omitempty" json:"restart_window,omitempty"`
	Backoff       *Backoff          `yaml:"backoff,omitempty" json:"backoff,omitempty"`
	HaltTimeout   Duration          `yaml:"halt_timeout" json:"halt_timeout"`
	// FailFast (Serviceguard's service_fail_fast_enabled) fences the node
	// when the service fails after its restarts, at once, without the
	// package's halt first.
	FailFast bool `yaml:"fail_fast,omitempty" json:"fail_fast,omitempty"`
}

// Backoff delays restarts: Delay, then times Factor each further attempt, at
// most Max.
type Backoff struct {
	Delay  Duration `yaml:"delay" json:"delay"`
	Factor float64  `yaml:"factor" json:"factor"`
	Max    Duration `yaml:"max" json:"max"`
}

// Duration is a time.Duration written as "5s", "10m" (internal/duration,
// shared with the guest agent's API).
type Duration = duration.Duration

// ParseDuration parses "5s"-style durations; a negative one is an error.
func ParseDuration(s string) (Duration, error) { return duration.Parse(s) }

// Limit is a restart or relocation count: none (0), N, or unlimited.
type Limit struct {
	N         int
	Unlimited bool
}

// Unlimited is the unlimited Limit.
var Unlimited = Limit{Unlimited: true}

// String formats l as none, N or unlimited.
func (l Limit) String() string {
	switch {
	case l.Unlimited:
		return "unlimited"
	case l.N == 0:
		return "none"
	}
	return strconv.Itoa(l.N)
}

// Allows reports whether `used` attempts so far leave room for one more.
func (l Limit) Allows(used int) bool { return l.Unlimited || used < l.N }

// Left returns how many attempts remain after used, -1 if unlimited.
func (l Limit) Left(used int) int {
	if l.Unlimited {
		return -1
	}
	if used >= l.N {
		return 0
	}
	return l.N - used
}

// ParseLimit parses none, a whole number 0 or more, or unlimited.
func ParseLimit(s string) (Limit, error) {
	switch strings.TrimSpace(s) {
	case "none", "":
		return Limit{}, nil
	case "unlimited":
		return Unlimited, nil
	}
	n, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil || n < 0 {
		return Limit{}, fmt.Errorf("%q: want none, unlimited or a whole number 0 or more", s)
	}
	return Limit{N: n}, nil
}

// UnmarshalText implements encoding.TextUnmarshaler.
func (l *Limit) UnmarshalText(b []byte) error {
	v, err := ParseLimit(string(b))
	if err != nil {
		return err
	}
	*l = v
	return nil
}

// MarshalText implements encoding.TextMarshaler.
func (l Limit) MarshalText() ([]byte, error) { return []byte(l.String()), nil }

// UnmarshalJSON accepts "none", "unlimited", "3" or 3.
func (l *Limit) UnmarshalJSON(b []byte) error {
	var n int
	if err := json.Unmarshal(b, &n); err == nil {
		return l.UnmarshalText([]byte(strconv.Itoa(n)))
	}
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("limit: want none, unlimited or a number, got %s", b)
	}
	return l.UnmarshalText([]byte(s))
}

// Package returns the named package and whether it exists.
func (c *Cluster) Package(name string) (Package, bool) {
	for _, p := range c.Packages {
		if p.Name == name {
			return p, true
		}
	}
	return Package{}, false
}

// HasNode reports whether node is one of the cluster's nodes.
func (c *Cluster) HasNode(node string) bool {
	for _, n := range c.Nodes {
		if n == node {
			return true
		}
	}
	return false
}

// FromJSON decodes a configuration recorded in a cluster.config_applied event.
func FromJSON(b []byte) (*Cluster, error) {
	var c Cluster
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, fmt.Errorf("decode config: %w", err)
	}
	return &c, nil
}
