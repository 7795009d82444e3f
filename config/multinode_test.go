package config

import (
	"strings"
	"testing"
)

// TestMultiNodeValidation: package_type multi_node is accepted, and what
// does not apply to a multi-node package (Serviceguard: failover_policy,
// failback_policy, priority; vmguard: max_relocate, migrate, its own
// dependencies, a dependency on it other than up same_node/any_node) is
// refused, naming the field.
func TestMultiNodeValidation(t *testing.T) {
	mn := "    package_type: multi_node\n"
	deps := func(ds ...string) string { return "    dependencies:\n" + strings.Join(ds, "") }
	for _, tc := range []struct {
		name  string
		extra map[string]string
		want  string
	}{
		{"multi_node", map[string]string{"a": mn}, ""},
		{"failover spelled out", map[string]string{"a": "    package_type: failover\n"}, ""},
		{"a failover package needs it on its node", map[string]string{"a": mn, "b": deps(dep("a", "up", "same_node"))}, ""},
		{"any_node", map[string]string{"a": mn, "b": deps(dep("a", "up", "any_node"))}, ""},
		{"unknown type", map[string]string{"a": "    package_type: system_multi_node\n"},
			`packages[0].package_type: "system_multi_node": want failover or multi_node`},
		{"failover_policy", map[string]string{"a": mn + "    failover_policy: min_package_node\n"},
			`packages[0].failover_policy: does not apply to a multi-node package`},
		{"failback_policy", map[string]string{"a": mn + "    failback_policy: automatic\n"},
			`packages[0].failback_policy: does not apply to a multi-node package`},
		{"max_relocate", map[string]string{"a": mn + "    max_relocate: 1\n"},
			`packages[0].max_relocate: does not apply to a multi-node package`},
		{"priority", map[string]string{"a": mn + "    priority: 5\n"},
			`packages[0].priority: does not apply to a multi-node package`},
		{"its own dependencies", map[string]string{"a": mn + deps(dep("b", "up", ""))},
			`packages[0].dependencies: a multi-node package has no dependencies in vmguard`},
		{"different_node on it", map[string]string{"a": mn, "b": deps(dep("a", "up", "different_node"))},
			`packages[1].dependencies[0].condition: package a is a multi-node package: a package may depend on it only with condition up and location same_node or any_node`},
		{"guest name per node taken", map[string]string{"a": mn, "b": "    guest:\n      name: a-n2\n"},
			`packages[1].guest.name: "a-n2" is also the guest of package a`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wantParse(t, tc.extra, tc.want)
		})
	}
}

// TestGuestOn: a multi-node package's guest on a node is <guest>-<node>; a
// failover package's is its guest, wherever it runs.
func TestGuestOn(t *testing.T) {
	p := Package{Name: "mon", Guest: Guest{Name: "monvm"}}
	if got := p.GuestOn("n1"); got != "monvm" {
		t.Errorf("failover: %q", got)
	}
	p.Type = TypeMultiNode
	if got := p.GuestOn("n1"); got != "monvm-n1" {
		t.Errorf("multi_node: %q", got)
	}
}
