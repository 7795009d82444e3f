package events

// GuestPhase is what the log says about a package's guest on its
// placement: the fold of guest.started, guest.lost and guest.stopped. Both
// deciders (hostmanager and failover) use this one type, so that a phase is
// never a bare string in one of them.
type GuestPhase string

// Guest phases.
const (
	// GuestPhaseStarting: a start is wanted and not yet confirmed; the guest may
	// or may not be running, so it is not known to be down (the host
	// manager's view; the controller does not track starts).
	GuestPhaseStarting GuestPhase = "starting"
	// GuestPhaseUp: guest.started (or guest.migrated to the placement).
	GuestPhaseUp GuestPhase = "up"
	// GuestPhaseLost: guest.lost; its heartbeats stopped, it must be forced off.
	GuestPhaseLost GuestPhase = "lost"
	// GuestPhaseDown: guest.stopped.
	GuestPhaseDown GuestPhase = "down"
)
