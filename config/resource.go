package config

import (
	"fmt"
	"strconv"
	"strings"
)

// Resource evaluation types (Serviceguard's generic_resource_evaluation_type).
const (
	// DuringPackageStart: checked before the package starts on a node and
	// while it runs there; going down fails the package on that node.
	DuringPackageStart = "during_package_start"
	// BeforePackageStart: checked only before the package starts on a
	// node; going down later leaves the running package alone.
	BeforePackageStart = "before_package_start"
)

// Resource is a generic resource a package needs on its node (Serviceguard's
// generic_resource_name, _up_criteria, _evaluation_type). Monitors set its
// status per node with `vmguard resource set NODE NAME up|down|VALUE`; a
// resource never set is down.
type Resource struct {
	Name string `yaml:"name" json:"name"`
	// Up is the up criterion: "up" (the default: the status must be up),
	// or for an extended resource a comparison of its value with a whole
	// number: "< 50", "<= 50", "> 10", ">= 10", "= 3", "!= 0".
	Up string `yaml:"up,omitempty" json:"up,omitempty"`
	// Evaluation is during_package_start (the default) or
	// before_package_start.
	Evaluation string `yaml:"evaluation,omitempty" json:"evaluation,omitempty"`
}

// During reports whether the resource is watched while the package runs.
func (r Resource) During() bool { return r.Evaluation != BeforePackageStart }

// criterion splits the up criterion into its operator and number; op is ""
// for the plain "up".
func (r Resource) criterion() (op string, n int64, err error) {
	c := strings.TrimSpace(r.Up)
	if c == "" || c == "up" {
		return "", 0, nil
	}
	for _, o := range []string{"<=", ">=", "!=", "==", "<", ">", "="} {
		if rest, ok := strings.CutPrefix(c, o); ok {
			n, err := strconv.ParseInt(strings.TrimSpace(rest), 10, 64)
			if err != nil {
				return "", 0, fmt.Errorf("%q: the value after %s must be a whole number", r.Up, o)
			}
			return o, n, nil
		}
	}
	return "", 0, fmt.Errorf("%q: want up, or <, <=, >, >=, =, != and a whole number (e.g. \">= 10\")", r.Up)
}

// Met reports whether a resource whose status and value (as
// events.NodeResourceSet records them; "" and "" when never set) meets the
// up criterion. A down resource never does; an extended criterion needs a
// value.
func (r Resource) Met(status, value string) bool {
	if status != "up" {
		return false
	}
	op, want, err := r.criterion()
	if err != nil {
		return false
	}
	if op == "" {
		return true
	}
	v, err := strconv.ParseInt(value, 10, 64)
	if err != nil {
		return false
	}
	switch op {
	case "<":
		return v < want
	case "<=":
		return v <= want
	case ">":
		return v > want
	case ">=":
		return v >= want
	case "!=":
		return v != want
	}
	return v == want
}

// validateResources checks a package's resources.
func validateResources(rs []Resource, pp string, d *decoder, name func(string, string) bool) {
	seen := map[string]bool{}
	for i, r := range rs {
		rp := fmt.Sprintf("%s.resources[%d]", pp, i)
		if name(rp+".name", r.Name) {
			if seen[r.Name] {
				d.fieldErrorf(rp+".name", "%q is listed twice", r.Name)
			}
			seen[r.Name] = true
		}
		if _, _, err := r.criterion(); err != nil {
			d.fieldErrorf(rp+".up", "%v", err)
		}
		switch r.Evaluation {
		case "", DuringPackageStart, BeforePackageStart:
		default:
			d.fieldErrorf(rp+".evaluation", "%q: want %s or %s", r.Evaluation, DuringPackageStart, BeforePackageStart)
		}
	}
}
