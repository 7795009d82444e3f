package events_test

import (
	"testing"

	"github.com/vmguard/vmguard/events"
)

// TestNamesOfSubjects: the package and node a subject names, and "" for
// subjects of another scope or without a verb after the name.
func TestNamesOfSubjects(t *testing.T) {
	for _, c := range []struct {
		subj, pkg, node string
	}{
		{events.PackageSubject("web", "process", "exited"), "web", ""},
		{events.NodeSubject("node1", "joined"), "", "node1"},
		{events.ClusterSubject("config_applied"), "", ""},
		{"vmguard.events.node.node1", "", ""},
		{"vmguard.events.pkg.", "", ""},
		{"other.events.node.node1.joined", "", ""},
	} {
		if got := events.PackageOfSubject(c.subj); got != c.pkg {
			t.Errorf("PackageOfSubject(%q) = %q, want %q", c.subj, got, c.pkg)
		}
		if got := events.NodeOfSubject(c.subj); got != c.node {
			t.Errorf("NodeOfSubject(%q) = %q, want %q", c.subj, got, c.node)
		}
	}
}
