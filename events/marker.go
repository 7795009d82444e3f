package events

// PlacementMarker returns the placement.noted marker of placement e (a
// package.placed), and false for any other event. Whoever appends a
// placement (the failover controller, an operator's command) appends its
// marker first in the same atomic batch: the log then holds both or
// neither, and the host manager of the node learns of the placement by
// reading its node's placement subject alone (docs/design-notes.md §10).
// A marker stored without its placement (a stream without atomic batches,
// whose batch is appended one by one, and a placement refused after it)
// only makes the host read a package that has nothing placed on it.
func PlacementMarker(e Event) (Event, bool) {
	d, ok := e.Data.(PackagePlaced)
	if !ok || d.Node == "" {
		return Event{}, false
	}
	return Event{ID: NewID(), Source: e.Source, Subject: d.Node, Time: e.Time, CauseID: e.CauseID,
		Data: PlacementNoted{Package: e.Subject, Epoch: d.Epoch}}, true
}
