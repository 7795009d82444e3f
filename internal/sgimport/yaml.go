package sgimport

import (
	"bytes"
	"fmt"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Cluster is the mapped configuration, in the shape of vmguard's cluster
// file (config.Cluster), holding only what import sets so that the defaults
// vmguard documents stay defaults.
type Cluster struct {
	Cluster      string    `yaml:"cluster"`
	NodeTimeout  string    `yaml:"node_timeout"`
	GuestTimeout string    `yaml:"guest_timeout"`
	Nodes        []string  `yaml:"nodes,flow"`
	Packages     []Package `yaml:"packages"`
}

// Package is one mapped package.
type Package struct {
	Name string `yaml:"name"`
	// Type is package_type: multi_node, "" for failover.
	Type           string   `yaml:"package_type,omitempty"`
	Nodes          []string `yaml:"nodes,flow"`
	FailoverPolicy string   `yaml:"failover_policy,omitempty"`
	FailbackPolicy string   `yaml:"failback_policy,omitempty"`
	AutoRun        *bool    `yaml:"auto_run,omitempty"`
	NodeFailFast   bool     `yaml:"node_fail_fast,omitempty"`
	Priority       int      `yaml:"priority,omitempty"`
	// SuccessorHaltTimeout is successor_halt_timeout, "" for the default.
	SuccessorHaltTimeout string       `yaml:"successor_halt_timeout,omitempty"`
	Dependencies         []Dependency `yaml:"dependencies,omitempty"`
	Resources            []Resource   `yaml:"resources,omitempty"`
	Guest                Guest        `yaml:"guest"`
	Services             []Service    `yaml:"services,omitempty"`
}

// Dependency is a mapped dependency: the package depended on, up or down,
// and where ("" for same_node).
type Dependency struct {
	Name      string `yaml:"name"`
	Condition string `yaml:"condition"`
	Location  string `yaml:"location,omitempty"`
}

// Resource is a mapped generic resource.
type Resource struct {
	Name       string `yaml:"name"`
	Up         string `yaml:"up,omitempty"`
	Evaluation string `yaml:"evaluation,omitempty"`
}

// Guest is a mapped package's guest.
type Guest struct {
	Name         string `yaml:"name"`
	Driver       string `yaml:"driver"`
	StartTimeout string `yaml:"start_timeout,omitempty"`
	Exec         *Exec  `yaml:"exec,omitempty"`
}

// Exec holds the exec driver's command templates.
type Exec struct {
	Start  []string `yaml:"start,flow"`
	Stop   []string `yaml:"stop,flow"`
	Status []string `yaml:"status,flow"`
}

// Service is a mapped service.
type Service struct {
	Name        string   `yaml:"name"`
	Cmd         []string `yaml:"cmd,flow"`
	Restart     string   `yaml:"restart"`
	HaltTimeout string   `yaml:"halt_timeout,omitempty"`
	FailFast    bool     `yaml:"fail_fast,omitempty"`

	drop bool // left out (the guest monitor, or a command that cannot be read)
}

// YAML writes the cluster as a vmguard cluster file, headed by a comment
// that names its sources and lists the report.
func (r *Result) YAML(sources []string) ([]byte, error) {
	var b bytes.Buffer
	fmt.Fprintf(&b, "# Written by `vmguard import` from %s.\n", strings.Join(sources, ", "))
	fmt.Fprintf(&b, "# Check it with `vmguard check -f FILE` and read the notes below before applying it.\n")
	if len(r.Notes) == 0 {
		b.WriteString("# Every parameter was carried over.\n")
	} else {
		fmt.Fprintf(&b, "# Not carried over as it was (%d):\n", len(r.Notes))
		for _, n := range r.Notes {
			fmt.Fprintf(&b, "#   %s\n", strings.ReplaceAll(n.String(), "\n", " "))
		}
	}
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(r.Cluster); err != nil {
		return nil, fmt.Errorf("encode cluster: %w", err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("encode cluster: %w", err)
	}
	return b.Bytes(), nil
}
