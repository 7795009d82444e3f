package failover

import (
	"bufio"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/vmguard/vmguard/config"
	"github.com/vmguard/vmguard/internal/termtext"
)

// View is the cluster status `vmguard status` shows, in the spirit of
// cmviewcl -v; its JSON is what `-o json` prints.
type View struct {
	Cluster string `json:"cluster"`
	// Status is up when any node is up.
	Status string `json:"status"`
	// Seq and Time say which moment of the log the view shows.
	Seq         uint64        `json:"seq"`
	Time        time.Time     `json:"time,omitzero"`
	ConfigError string        `json:"config_error,omitempty"`
	Nodes       []NodeView    `json:"nodes"`
	Packages    []PackageView `json:"packages"`
}

// NodeView is one node: STATUS up/down, STATE running/halted/failed/unknown.
type NodeView struct {
	Name   string `json:"name"`
	Status string `json:"status"`
	State  string `json:"state"`
	// Packages lists the packages on the node, in configuration order.
	Packages []string `json:"packages"`
	// Hold says what holds the node out (maintenance, frozen, a held
	// fail-fast fence), by whom, why and how to end it; "" when nothing.
	Hold string `json:"hold,omitempty"`
	// Resources are the generic resources set on the node, by name.
	Resources []ResourceView `json:"resources,omitempty"`
}

// ResourceView is a generic resource's status on a node (cmgetresource).
type ResourceView struct {
	Name   string `json:"name"`
	Status string `json:"status"`
	Value  string `json:"value,omitempty"`
}

// PackageView is one package: STATUS, STATE, AUTO_RUN and NODE, then what
// -v adds.
type PackageView struct {
	Name    string `json:"name"`
	Status  string `json:"status"`
	State   string `json:"state"`
	AutoRun string `json:"auto_run"`
	// Node is the node the package occupies, "" when unowned (down).
	Node string `json:"node,omitempty"`
	// LastNode is the node of its last placement.
	LastNode string `json:"last_node,omitempty"`
	Epoch    uint64 `json:"epoch"`
	// Reason is the reason of its last placement.
	Reason string `json:"reason,omitempty"`
	// DownReason says why it is down (halted or failed reason), if it is.
	DownReason string `json:"down_reason,omitempty"`
	// Note says what holds a down package back (see State.Note).
	Note           string            `json:"note,omitempty"`
	FailoverPolicy string            `json:"failover_policy,omitempty"`
	FailbackPolicy string            `json:"failback_policy,omitempty"`
	MaxRelocate    string            `json:"max_relocate,omitempty"`
	Relocations    int               `json:"relocations"`
	Guest          *GuestView        `json:"guest,omitempty"`
	Services       []ServiceView     `json:"services"`
	Nodes          []PackageNodeView `json:"nodes"`
	// Priority is the package's priority, 0 for none.
	Priority int `json:"priority,omitempty"`
	// Dependencies are its dependencies and whether each holds.
	Dependencies []DependencyView `json:"dependencies,omitempty"`
	// Type is multi_node for a multi-node package ("" for failover); its
	// Node then lists the nodes its instances occupy, and Instances has
	// each instance with its own guest, services and restart counters.
	Type      string         `json:"package_type,omitempty"`
	Instances []InstanceView `json:"instances,omitempty"`
}

// InstanceView is a multi-node package's instance on one node.
type InstanceView struct {
	Node     string        `json:"node"`
	Status   string        `json:"status"`
	State    string        `json:"state"`
	Epoch    uint64        `json:"epoch"`
	Guest    GuestView     `json:"guest"`
	Services []ServiceView `json:"services"`
	// DownReason says why it is down, if it is.
	DownReason string `json:"down_reason,omitempty"`
}

// DependencyView is one dependency of a package and whether it holds: on
// the package's node while it occupies one, else on some node of its list.
type DependencyView struct {
	Name      string `json:"name"`
	Condition string `json:"condition"`
	Location  string `json:"location"`
	Satisfied bool   `json:"satisfied"`
}

// GuestView is the package's guest.
type GuestView struct {
	Name   string `json:"name"`
	Status string `json:"status"`
}

// ServiceView is one service: its status, RESTARTS and MAX_RESTARTS.
type ServiceView struct {
	Name        string `json:"name"`
	Status      string `json:"status"`
	Restarts    int    `json:"restarts"`
	MaxRestarts string `json:"max_restarts"`
}

// PackageNodeView is one node of a package's list: its role (Primary for the
// first, Alternate for the others), STATUS and SWITCHING.
type PackageNodeView struct {
	Name      string `json:"name"`
	Type      string `json:"type"`
	Status    string `json:"status"`
	Switching string `json:"switching"`
	Current   bool   `json:"current,omitempty"`
	FailedOn  bool   `json:"failed_on,omitempty"`
}

// BuildView returns the status of s: the configured nodes and packages in
// configuration order, then any other node or package the log named (a
// package not in the configuration only while it occupies a node).
func BuildView(s *State) View {
	v := View{Seq: s.Seq, Time: s.Time, ConfigError: s.ConfigErr, Status: "down"}
	var nodes []string
	var pkgs []config.Package
	if c := s.Config; c != nil {
		v.Cluster = c.Cluster
		nodes = slices.Clone(c.Nodes)
		pkgs = c.Packages
	}
	configured := map[string]bool{}
	for _, cp := range pkgs {
		configured[cp.Name] = true
		v.Packages = append(v.Packages, s.packageView(cp, true))
	}
	var extraPkgs []string
	for name, p := range s.Packages {
		if !configured[name] && p.Phase.Owned() {
			extraPkgs = append(extraPkgs, name)
		}
	}
	slices.Sort(extraPkgs)
	for _, name := range extraPkgs {
		pv := s.packageView(config.Package{Name: name}, false)
		pv.Note = "not in the configuration in force"
		v.Packages = append(v.Packages, pv)
	}

	// Nodes the configuration does not name, but events or placements do.
	known := map[string]bool{}
	for _, n := range nodes {
		known[n] = true
	}
	var extraNodes []string
	for name := range s.Nodes {
		if !known[name] {
			known[name] = true
			extraNodes = append(extraNodes, name)
		}
	}
	for _, pv := range v.Packages {
		if pv.Node != "" && !known[pv.Node] {
			known[pv.Node] = true
			extraNodes = append(extraNodes, pv.Node)
		}
	}
	slices.Sort(extraNodes)
	nodes = append(nodes, extraNodes...)

	onNode := map[string][]string{}
	for _, pv := range v.Packages {
		if pv.Node != "" {
			onNode[pv.Node] = append(onNode[pv.Node], pv.Name)
		}
	}
	for _, name := range nodes {
		n := s.Nodes[name]
		nv := NodeView{Name: name, Status: n.Status(), State: n.State(), Packages: onNode[name], Hold: n.Hold()}
		if nv.Packages == nil {
			nv.Packages = []string{}
		}
		if n != nil {
			for _, r := range slices.Sorted(maps.Keys(n.Resources)) {
				st := n.Resources[r]
				nv.Resources = append(nv.Resources, ResourceView{Name: r, Status: st.Status, Value: st.Value})
			}
		}
		if n.Up() {
			v.Status = "up"
		}
		v.Nodes = append(v.Nodes, nv)
	}
	return v
}

func enabled(b bool) string {
	if b {
		return "enabled"
	}
	return "disabled"
}

func (s *State) packageView(cp config.Package, configured bool) PackageView {
	p := s.Packages[cp.Name]
	if p == nil {
		p = &PackageState{Name: cp.Name}
	}
	pv := PackageView{
		Name:     cp.Name,
		Status:   p.Phase.Status(),
		State:    p.Phase.State(),
		AutoRun:  enabled(configured && s.autoRun(cp)),
		LastNode: p.Node,
		Epoch:    p.Epoch,
		Reason:   p.PlacedReason,
		Note:     s.note(cp),
		Services: []ServiceView{},
		Nodes:    []PackageNodeView{},
	}
	if p.Phase.Owned() {
		pv.Node = p.Node
	} else {
		pv.DownReason = p.DownReason
	}
	if !configured {
		return pv
	}
	pv.FailoverPolicy = orDefault(cp.FailoverPolicy, config.ConfiguredNode)
	pv.FailbackPolicy = orDefault(cp.FailbackPolicy, config.FailbackManual)
	pv.MaxRelocate = cp.MaxRelocate.String()
	pv.Relocations = p.Relocations
	if cp.Guest.Name != "" {
		pv.Guest = &GuestView{Name: cp.Guest.Name, Status: orDefault(string(p.Guest), "down")}
		if !p.Phase.Owned() {
			pv.Guest.Status = "down"
		}
	}
	pv.Services = append(pv.Services, serviceViews(cp, p)...)
	if cp.MultiNode() {
		s.multiView(cp, p, &pv)
	}
	pv.Priority = cp.Priority
	for _, d := range cp.Dependencies {
		pv.Dependencies = append(pv.Dependencies, DependencyView{Name: d.Name, Condition: d.Condition, Location: d.Where(),
			Satisfied: s.dependencyHolds(cp, p, d)})
	}
	for i, n := range cp.Nodes {
		nv := PackageNodeView{
			Name:      n,
			Type:      "Alternate",
			Status:    s.Nodes[n].Status(),
			Switching: enabled(p.SwitchingEnabled(n)),
			Current:   p.Phase.Owned() && p.Node == n || p.Instances[n] != nil && p.Instances[n].Phase.Owned(),
			FailedOn:  p.FailedOn(n),
		}
		if i == 0 {
			nv.Type = "Primary"
		}
		pv.Nodes = append(pv.Nodes, nv)
	}
	return pv
}

// serviceViews returns the services of cp as p (a package, or one
// instance of a multi-node package) has them: status and restarts.
func serviceViews(cp config.Package, p *PackageState) []ServiceView {
	out := make([]ServiceView, 0, len(cp.Services))
	for _, sc := range cp.Services {
		sv := ServiceView{Name: sc.Name, Status: "down", MaxRestarts: sc.Restart.String()}
		if st := p.Services[sc.Name]; st != nil {
			sv.Restarts = st.Restarts
			if p.Phase.Owned() || st.Status == ServiceFailed {
				sv.Status = string(st.Status)
			}
		}
		out = append(out, sv)
	}
	return out
}

// multiView fills in what status shows of multi-node package cp: the
// nodes its instances occupy and each instance, with its own guest,
// services and restart counters (per node); the package has no single
// guest or service line.
func (s *State) multiView(cp config.Package, p *PackageState, pv *PackageView) {
	pv.Type, pv.Guest, pv.Services = config.TypeMultiNode, nil, []ServiceView{}
	pv.FailoverPolicy, pv.FailbackPolicy, pv.MaxRelocate, pv.LastNode = "", "", "", ""
	var on []string
	for _, n := range cp.Nodes {
		in := p.Instances[n]
		if in == nil {
			continue
		}
		if in.Phase.Owned() {
			on = append(on, n)
		}
		iv := InstanceView{Node: n, Status: in.Phase.Status(), State: in.Phase.State(), Epoch: in.Epoch,
			Guest: GuestView{Name: cp.GuestOn(n), Status: orDefault(string(in.Guest), "down")}, Services: []ServiceView{}}
		if !in.Phase.Owned() {
			iv.Guest.Status, iv.DownReason = "down", in.DownReason
		}
		iv.Services = append(iv.Services, serviceViews(cp, in)...)
		pv.Instances = append(pv.Instances, iv)
	}
	pv.Node = strings.Join(on, ",")
	if pv.Epoch > 0 && len(on) == 0 {
		pv.DownReason = p.DownReason
	}
}

// row pads each value to its width, keeping at least one space between;
// values are escaped first (termtext.Escape), so that the padding fits what
// is printed.
func row(indent int, widths []int, vals ...string) string {
	var b strings.Builder
	b.WriteString(strings.Repeat(" ", indent))
	for i, v := range vals {
		v = termtext.Escape(v)
		b.WriteString(v)
		if i == len(vals)-1 {
			break
		}
		pad := 1
		if i < len(widths) && widths[i]-len(v) > 1 {
			pad = widths[i] - len(v)
		}
		b.WriteString(strings.Repeat(" ", pad))
	}
	return strings.TrimRight(b.String(), " ")
}

// WriteText writes v as cmviewcl does: the cluster, each node with the
// packages on it, then the unowned packages; verbose adds each package's
// policies, guest, services (RESTARTS, MAX_RESTARTS) and node switching.
// Reasons and notes come from outside: every line is escaped
// (termtext.Escape) so that it holds no control characters.
func (v View) WriteText(w io.Writer, verbose bool) error {
	bw := bufio.NewWriter(w)
	line := func(s string) { bw.WriteString(termtext.Escape(s) + "\n") }
	clusterCols, nodeCols := []int{17}, []int{15, 13}
	line(row(0, clusterCols, "CLUSTER", "STATUS"))
	line(row(0, clusterCols, orDefault(v.Cluster, "(no configuration)"), v.Status))
	if v.ConfigError != "" {
		line("  config error: " + v.ConfigError)
	}
	byName := map[string]PackageView{}
	for _, pv := range v.Packages {
		byName[pv.Name] = pv
	}
	for _, n := range v.Nodes {
		line("")
		line(row(2, nodeCols, "NODE", "STATUS", "STATE"))
		line(row(2, nodeCols, n.Name, n.Status, n.State))
		if n.Hold != "" {
			line("    " + n.Hold)
		}
		if verbose && len(n.Resources) > 0 {
			resCols := []int{19, 9}
			line(row(4, resCols, "GENERIC_RESOURCE", "STATUS", "VALUE"))
			for _, r := range n.Resources {
				line(row(4, resCols, r.Name, r.Status, r.Value))
			}
		}
		writePackages(line, n.Packages, byName, verbose)
	}
	var unowned []string
	for _, pv := range v.Packages {
		if pv.Node == "" {
			unowned = append(unowned, pv.Name)
		}
	}
	if len(unowned) > 0 {
		line("")
		line("UNOWNED_PACKAGES")
		writePackages(line, unowned, byName, verbose)
	}
	return bw.Flush()
}

// writePackages writes a table of packages: one header for all of them, or
// with verbose one per package, followed by its details.
func writePackages(line func(string), names []string, byName map[string]PackageView, verbose bool) {
	pkgCols := []int{15, 13, 13, 13}
	for i, name := range names {
		pv := byName[name]
		if i == 0 || verbose {
			line("")
			line(row(4, pkgCols, "PACKAGE", "STATUS", "STATE", "AUTO_RUN", "NODE"))
		}
		line(row(4, pkgCols, pv.Name, pv.Status, pv.State, pv.AutoRun, orDefault(pv.Node, "unowned")))
		if pv.Note != "" {
			line("      Note: " + pv.Note)
		}
		if verbose {
			writeDetails(line, pv)
		}
	}
}

// writeDetails writes what -v adds about a package.
func writeDetails(line func(string), pv PackageView) {
	policyCols := []int{16}
	serviceCols, switchCols := []int{16, 13, 13}, []int{13, 13, 13, 13}
	if pv.Epoch > 0 && pv.Type == "" {
		line(fmt.Sprintf("      Placement: epoch %d on %s, %s", pv.Epoch, pv.LastNode, pv.Reason))
	}
	if pv.DownReason != "" {
		line("      Down: " + pv.DownReason)
	}
	line("")
	line("      Policy_Parameters:")
	line(row(6, policyCols, "POLICY_NAME", "CONFIGURED_VALUE"))
	if pv.Type != "" {
		line(row(6, policyCols, "Package_Type", pv.Type))
	} else {
		line(row(6, policyCols, "Failover", pv.FailoverPolicy))
		line(row(6, policyCols, "Failback", pv.FailbackPolicy))
		line(row(6, policyCols, "Max_Relocate", pv.MaxRelocate+" (used "+strconv.Itoa(pv.Relocations)+")"))
	}
	if pv.Priority != 0 {
		line(row(6, policyCols, "Priority", strconv.Itoa(pv.Priority)))
	}
	if len(pv.Dependencies) > 0 {
		line("")
		line("      Dependency_Parameters:")
		line(row(6, switchCols, "DEPENDENCY", "CONDITION", "LOCATION", "SATISFIED"))
		for _, d := range pv.Dependencies {
			line(row(6, switchCols, d.Name, d.Condition, d.Location, map[bool]string{true: "yes", false: "no"}[d.Satisfied]))
		}
	}
	if pv.Guest != nil {
		line("")
		line(row(6, serviceCols, "GUEST", "STATUS"))
		line(row(6, serviceCols, pv.Guest.Name, pv.Guest.Status))
	}
	for _, in := range pv.Instances {
		line("")
		line(row(6, serviceCols, "INSTANCE", "STATUS", "STATE", "EPOCH"))
		line(row(6, serviceCols, in.Node, in.Status, in.State, strconv.FormatUint(in.Epoch, 10)))
		if in.DownReason != "" {
			line("        Down: " + in.DownReason)
		}
		line(row(8, []int{14, 13, 13}, "GUEST", "STATUS"))
		line(row(8, []int{14, 13, 13}, in.Guest.Name, in.Guest.Status))
		line(row(8, []int{14, 13, 13}, "SERVICE", "STATUS", "RESTARTS", "MAX_RESTARTS"))
		for _, sv := range in.Services {
			line(row(8, []int{14, 13, 13}, sv.Name, sv.Status, strconv.Itoa(sv.Restarts), sv.MaxRestarts))
		}
	}
	if len(pv.Services) > 0 {
		line("")
		line(row(6, serviceCols, "SERVICE", "STATUS", "RESTARTS", "MAX_RESTARTS"))
		for _, sv := range pv.Services {
			line(row(6, serviceCols, sv.Name, sv.Status, strconv.Itoa(sv.Restarts), sv.MaxRestarts))
		}
	}
	if len(pv.Nodes) > 0 {
		line("")
		line("      Node_Switching_Parameters:")
		line(row(6, switchCols, "NODE_TYPE", "STATUS", "SWITCHING", "NAME"))
		for _, n := range pv.Nodes {
			var marks []string
			if n.Current {
				marks = append(marks, "(current)")
			}
			if n.FailedOn {
				marks = append(marks, "(failed)")
			}
			line(row(6, switchCols, n.Type, n.Status, n.Switching, n.Name, strings.Join(marks, " ")))
		}
	}
}

// Hold describes the node's drain and freeze for status and explain: who,
// why and how to end it; "" when it is in neither.
func (n *NodeState) Hold() string {
	if n == nil {
		return ""
	}
	var out []string
	if n.Frozen() {
		f := n.Freeze
		out = append(out, fmt.Sprintf("Frozen: by %s until %s (%s); guests keep running, nothing is decided about it; `vmguard node thaw %s` ends it",
			orDefault(f.By, "?"), f.Until.UTC().Format(time.RFC3339), orDefault(f.Reason, "no reason given"), n.Name))
	}
	if n.Membership == MemberLost && n.HaltedByOperator() {
		out = append(out, fmt.Sprintf("Lost while halted by %s; it stays out until `vmguard node run %s`", n.HaltedBy, n.Name))
	}
	if n.Membership == MemberFenced && n.FenceHold {
		out = append(out, fmt.Sprintf("Fenced and held (fail-fast): %s; it stays out until `vmguard node run %s`",
			orDefault(n.FenceReason, "no reason given"), n.Name))
	}
	if n.Drained() {
		d := n.Drain
		out = append(out, fmt.Sprintf("Maintenance: drained by %s (%s); its packages move away and none is placed on it; `vmguard node run %s` ends it",
			orDefault(d.By, "?"), orDefault(d.Reason, "no reason given"), n.Name))
	}
	return strings.Join(out, "; ")
}
