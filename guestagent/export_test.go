package guestagent

import "time"

// Processes returns every process the agent knows, exited ones included,
// without going through NATS (tests use it while NATS is down).
func (a *Agent) Processes() []ProcessInfo { return a.list(ListRequest{Exited: true}).Processes }

// Undelivered counts spooled events the log has not acknowledged.
func (a *Agent) Undelivered() int { return a.journal.pending() }

// SetOnDelivered sets a function called, before Run, after the log
// acknowledged each spooled event with its kind (started, exited) and time.
func (a *Agent) SetOnDelivered(f func(kind string, eventTime time.Time)) { a.onDelivered = f }

// SetSpoolSync sets, before Run, a function called instead of the spool's
// fdatasync of exits (and of start records once the deliverer is idle).
func (a *Agent) SetSpoolSync(f func(fd int) error) { a.syncSpool = f }
