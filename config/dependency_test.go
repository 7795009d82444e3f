package config

import (
	"strings"
	"testing"
)

// depConfig is a cluster of packages a, b and c; extra is YAML put under
// each (by name) before its services.
func depConfig(extra map[string]string) string {
	var b strings.Builder
	b.WriteString("cluster: c\nnodes: [n1, n2]\npackages:\n")
	for _, name := range []string{"a", "b", "c"} {
		b.WriteString("  - name: " + name + "\n    nodes: [n1, n2]\n")
		b.WriteString(extra[name])
		b.WriteString("    services:\n      - name: s\n        cmd: [sleep, \"1\"]\n")
	}
	return b.String()
}

func dep(name, cond, loc string) string {
	s := "      - name: " + name + "\n        condition: " + cond + "\n"
	if loc != "" {
		s += "        location: " + loc + "\n"
	}
	return s
}

// TestDependencyValidation: `vmguard check` refuses configs that break
// Serviceguard's rules for dependencies and priorities, naming the field.
func TestDependencyValidation(t *testing.T) {
	deps := func(ds ...string) string { return "    dependencies:\n" + strings.Join(ds, "") }
	for _, tc := range []struct {
		name  string
		extra map[string]string
		want  string
	}{
		{"up same_node", map[string]string{"a": deps(dep("b", "up", ""))}, ""},
		{"up any and different", map[string]string{"a": deps(dep("b", "up", "any_node"), dep("c", "up", "different_node"))}, ""},
		{"mutual exclusion with a priority", map[string]string{
			"a": "    priority: 10\n" + deps(dep("b", "down", "same_node")),
			"b": deps(dep("a", "down", "same_node"))}, ""},
		{"exclusion all_nodes, both priorities", map[string]string{
			"a": "    priority: 10\n" + deps(dep("b", "down", "all_nodes")),
			"b": "    priority: 3000\n" + deps(dep("a", "down", "all_nodes"))}, ""},
		{"unknown package", map[string]string{"a": deps(dep("zz", "up", ""))},
			`packages[0].dependencies[0].name: "zz" is not a configured package (a, b, c)`},
		{"itself", map[string]string{"a": deps(dep("a", "up", ""))},
			`packages[0].dependencies[0].name: "a": a package cannot depend on itself`},
		{"twice", map[string]string{"a": deps(dep("b", "up", ""), dep("b", "up", "any_node"))},
			`packages[0].dependencies[1].name: "b" is listed twice`},
		{"bad condition", map[string]string{"a": deps(dep("b", "running", ""))},
			`packages[0].dependencies[0].condition: "running": want up or down`},
		{"all_nodes for up", map[string]string{"a": deps(dep("b", "up", "all_nodes"))},
			`packages[0].dependencies[0].location: "all_nodes": an up dependency wants same_node, any_node or different_node`},
		{"any_node for down", map[string]string{"a": "    priority: 1\n" + deps(dep("b", "down", "any_node")), "b": deps(dep("a", "down", "any_node"))},
			`packages[0].dependencies[0].location: "any_node": a down dependency (an exclusion) wants same_node or all_nodes`},
		{"exclusion not mutual", map[string]string{"a": "    priority: 1\n" + deps(dep("b", "down", ""))},
			`packages[0].dependencies[0].condition: down: an exclusion must be mutual: package b must also list a with condition down and location same_node`},
		{"exclusion locations differ", map[string]string{"a": "    priority: 1\n" + deps(dep("b", "down", "all_nodes")), "b": deps(dep("a", "down", "same_node"))},
			`packages[0].dependencies[0].location: all_nodes: package b excludes a with location same_node`},
		{"exclusion without priority", map[string]string{"a": deps(dep("b", "down", "")), "b": deps(dep("a", "down", ""))},
			`packages[0].priority: missing: package a and b exclude each other, so at least one needs a priority`},
		{"exclusion with min_package_node", map[string]string{
			"a": "    priority: 1\n    failover_policy: min_package_node\n" + deps(dep("b", "down", "")), "b": deps(dep("a", "down", ""))},
			`packages[0].failover_policy: min_package_node: package a excludes b, and packages in an exclusion use configured_node`},
		{"up cycle", map[string]string{"a": deps(dep("b", "up", "any_node")), "b": deps(dep("c", "up", "")), "c": deps(dep("a", "up", "different_node"))},
			`packages[0].dependencies: up dependencies form a cycle (a -> b -> c -> a)`},
		{"priority 0", map[string]string{"a": "    priority: 0\n"}, `packages[0].priority: 0: want 1 to 3000`},
		{"priority 3001", map[string]string{"a": "    priority: 3001\n"}, `packages[0].priority: 3001: want 1 to 3000`},
		{"priority not unique", map[string]string{"a": "    priority: 20\n", "c": "    priority: 20\n"},
			`packages[2].priority: 20 is also package a's priority: priorities are unique`},
		{"successor_halt_timeout too long", map[string]string{"b": "    successor_halt_timeout: 2h\n"},
			`packages[1].successor_halt_timeout: 2h0m0s: want 0 (do not wait) to 1h0m0s`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wantParse(t, tc.extra, tc.want)
		})
	}
}

// wantParse parses depConfig(extra) and fails t unless it is valid where
// want is empty, else refused with an error holding want.
func wantParse(t *testing.T, extra map[string]string, want string) {
	t.Helper()
	_, err := Parse("c.yaml", []byte(depConfig(extra)))
	switch {
	case want == "" && err != nil:
		t.Errorf("%v", err)
	case want != "" && (err == nil || !strings.Contains(err.Error(), want)):
		t.Errorf("err %v\nwant %q", err, want)
	}
}

// TestDependencyDefaults: location same_node, no priority, and the
// successor_halt_timeout default (0 is kept: do not wait); a config without
// any of them records the same JSON as before they existed.
func TestDependencyDefaults(t *testing.T) {
	c, err := Parse("c.yaml", []byte(depConfig(map[string]string{
		"a": "    dependencies:\n" + dep("b", "up", ""),
		"b": "    successor_halt_timeout: 0s\n",
	})))
	if err != nil {
		t.Fatal(err)
	}
	a, _ := c.Package("a")
	b, _ := c.Package("b")
	cc, _ := c.Package("c")
	if d := a.Dependencies[0]; d.Where() != SameNode || d.String() != "b up same_node" {
		t.Errorf("dependency %+v: want same_node by default", d)
	}
	if a.SuccessorHalt() != DefaultSuccessorHaltTimeout || b.SuccessorHalt() != 0 {
		t.Errorf("successor halts %s %s", a.SuccessorHalt(), b.SuccessorHalt())
	}
	if got := c.Successors("b"); len(got) != 1 || got[0] != "a" {
		t.Errorf("Successors(b) = %v", got)
	}
	if a.PriorityString() != "no_priority" {
		t.Errorf("priority %q", a.PriorityString())
	}
	js, _ := c.JSON()
	if strings.Contains(string(js), "priority") {
		t.Errorf("JSON names priority though no package sets it: %s", js)
	}
	cj, _ := packageJSON(cc)
	if strings.Contains(cj, "dependencies") || strings.Contains(cj, "successor") {
		t.Errorf("a package without dependencies records them: %s", cj)
	}
	back, err := FromJSON(js)
	if err != nil {
		t.Fatal(err)
	}
	if bb, _ := back.Package("b"); bb.SuccessorHalt() != 0 {
		t.Errorf("successor_halt_timeout 0 lost in JSON: %s", bb.SuccessorHalt())
	}
}

func TestOutranks(t *testing.T) {
	p := func(n int) Package { return Package{Priority: n} }
	for _, tc := range []struct {
		a, b int
		want bool
	}{{10, 20, true}, {20, 10, false}, {10, 0, true}, {0, 10, false}, {0, 0, false}} {
		if got := Outranks(p(tc.a), p(tc.b)); got != tc.want {
			t.Errorf("Outranks(%d, %d) = %v", tc.a, tc.b, got)
		}
	}
}

func packageJSON(p Package) (string, error) {
	c := Cluster{Packages: []Package{p}}
	b, err := c.JSON()
	return string(b), err
}
