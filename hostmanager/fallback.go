package hostmanager

import "github.com/vmguard/vmguard/events"

// FallbackReason replaces the reason of an event this node built that the
// log refused as invalid (a bug: text is cut to the schema's limits where
// it is built). The decision keeps its meaning; only the text is lost.
const FallbackReason = "reason not recorded: the event as built was invalid (a bug; see the host manager's log)"

// Fallback returns the event to append instead of e, which the log refused
// as invalid: the same type, cause and subject, with a new id and a fixed
// reason, so the decision (a halt, a failure, a stopped guest) is still
// recorded and the same invalid event is never retried. It returns false
// for an event that has no reason to replace; such an event is dropped and
// logged, and the package is processed again only when the log changes.
func Fallback(e events.Event) (events.Event, bool) {
	fb := e
	fb.ID, fb.Seq = "", 0
	switch d := e.Data.(type) {
	case events.GuestStopped:
		d.Reason = FallbackReason
		fb.Data = d
	case events.ServiceFailed:
		d.Reason = FallbackReason
		fb.Data = d
	case events.PackageFailed:
		d.Reason = FallbackReason
		fb.Data = d
	case events.PackageHalted:
		d.Reason = FallbackReason
		fb.Data = d
	case events.PackageHalting:
		d.Reason, d.By = FallbackReason, events.Clip(d.By, events.MaxBy)
		fb.Data = d
	case events.NodeFenced:
		d.Reason = FallbackReason
		fb.Data = d
	default:
		return events.Event{}, false
	}
	return fb, true
}
