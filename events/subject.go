package events

import (
	"fmt"
	"strings"
)

// Subject roots of the VMGUARD stream.
const (
	// SubjectAll matches every event.
	SubjectAll = "vmguard.events.>"
	// StreamName is the JetStream stream holding the log.
	StreamName = "VMGUARD"
)

// MaxNameLen bounds names used as subject tokens.
const MaxNameLen = 64

// ValidName reports whether s can be used as a package, node, guest or
// service name: 1 to 64 letters, digits, '-' or '_', so that it is exactly one
// NATS subject token and safe in file names.
func ValidName(s string) bool {
	if len(s) == 0 || len(s) > MaxNameLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-', c == '_':
		default:
			return false
		}
	}
	return true
}

// CheckName returns an error naming what as the field when s is not a valid name.
func CheckName(field, s string) error {
	if s == "" {
		return fmt.Errorf("%s: missing", field)
	}
	if !ValidName(s) {
		return fmt.Errorf("%s: %q is not a valid name: use 1-%d letters, digits, '-' or '_'", field, s, MaxNameLen)
	}
	return nil
}

// PackageSubject is the subject of an event about package pkg:
// vmguard.events.pkg.<pkg>.<entity>.<verb>.
func PackageSubject(pkg, entity, verb string) string {
	return "vmguard.events.pkg." + pkg + "." + entity + "." + verb
}

// PackageFilter matches every event about package pkg.
func PackageFilter(pkg string) string { return "vmguard.events.pkg." + pkg + ".>" }

// NodeSubject is the subject of an event about node: vmguard.events.node.<node>.<verb>.
func NodeSubject(node, verb string) string { return "vmguard.events.node." + node + "." + verb }

// NodeFilter matches every event about node.
func NodeFilter(node string) string { return "vmguard.events.node." + node + ".>" }

// ClusterSubject is the subject of a cluster-wide event: vmguard.events.cluster.<verb>.
func ClusterSubject(verb string) string { return "vmguard.events.cluster." + verb }

// ClusterFilter matches every cluster-wide event.
const ClusterFilter = "vmguard.events.cluster.>"

// PlacementSubject is the subject of the marker of a placement on node:
// vmguard.events.placement.<node>.noted.
func PlacementSubject(node string) string { return "vmguard.events.placement." + node + ".noted" }

// PlacementFilter matches every placement marker of node.
func PlacementFilter(node string) string { return "vmguard.events.placement." + node + ".>" }

// SubjectOf returns the NATS subject an event is stored under.
func SubjectOf(e Event) (string, error) {
	typ := e.Type()
	entity, verb, _, err := ParseType(typ)
	if err != nil {
		return "", err
	}
	scope, err := ScopeOf(typ)
	if err != nil {
		return "", err
	}
	switch scope {
	case ScopeCluster:
		return ClusterSubject(verb), nil
	case ScopeNode:
		return NodeSubject(e.Subject, verb), nil
	case ScopePlacement:
		return "vmguard.events.placement." + e.Subject + "." + verb, nil
	default:
		return PackageSubject(e.Subject, entity, verb), nil
	}
}

// PackageOfSubject returns the package named by a vmguard.events.pkg.* subject,
// or "" for any other subject.
func PackageOfSubject(subj string) string { return nameAfter(subj, "vmguard.events.pkg.") }

// NodeOfSubject returns the node named by a vmguard.events.node.* subject, or
// "" for any other subject. Deciders use it and PackageOfSubject rather than
// parsing subjects themselves.
func NodeOfSubject(subj string) string { return nameAfter(subj, "vmguard.events.node.") }

// nameAfter returns the token after prefix in subj, if another follows it.
func nameAfter(subj, prefix string) string {
	if !strings.HasPrefix(subj, prefix) {
		return ""
	}
	rest := subj[len(prefix):]
	if i := strings.IndexByte(rest, '.'); i > 0 {
		return rest[:i]
	}
	return ""
}
