// Package eventstest gives tests events that readers accept: a reader
// skips an event whose source names a role that does not write its type
// (events.SourceFits), so a test log needs a fitting source on each event.
// It is for tests only.
package eventstest

import (
	"reflect"

	"github.com/vmguard/vmguard/events"
)

// Source returns a source that writes events of type typ about subject:
// the first role of events.Writers(typ), named after subject for a host's
// node event, node1's host for a host's package event, guest webvm for a
// process event and operator "test" for an operator's.
func Source(typ, subject string) string { return source(typ, subject, "node1") }

// SourceOf is Source for data, whose Node field (if it has one) names the
// host of a host's package event.
func SourceOf(data events.Payload, subject string) string {
	node := "node1"
	if v := reflect.Indirect(reflect.ValueOf(data)); v.Kind() == reflect.Struct {
		if f := v.FieldByName("Node"); f.IsValid() && f.Kind() == reflect.String && events.ValidName(f.String()) {
			node = f.String()
		}
	}
	return source(data.EventType(), subject, node)
}

func source(typ, subject, node string) string {
	ws := events.Writers(typ)
	if len(ws) == 0 {
		return events.OperatorSource("test")
	}
	switch ws[0] {
	case events.RoleGuest:
		return events.GuestSource("webvm")
	case events.RoleHost:
		if sc, _ := events.ScopeOf(typ); sc == events.ScopeNode {
			return events.HostSource(subject)
		}
		return events.HostSource(node)
	case events.RoleController:
		return events.ControllerSource
	}
	return events.OperatorSource("test")
}

// New is events.New with SourceOf(data, subject) as its source.
func New(subject string, data events.Payload) events.Event {
	return events.New(SourceOf(data, subject), subject, data)
}
