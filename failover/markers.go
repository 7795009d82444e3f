package failover

import "github.com/vmguard/vmguard/events"

// isMarker reports whether e is a marker stored with a placement
// (package.checked, placement.noted): it changes no state, and the
// placement stored after it is what Decide answers.
func isMarker(e events.Event) bool {
	switch e.Data.(type) {
	case events.PackageChecked, events.PlacementNoted:
		return true
	}
	return false
}
