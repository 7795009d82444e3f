package guestagent

import (
	"context"
	"errors"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/vmguard/vmguard/events"
)

// Delivery retry bounds.
const (
	appendTimeout = 5 * time.Second
	minBackoff    = 10 * time.Millisecond
	maxBackoff    = time.Second
	ackEvery      = 256 // persist the delivered offset at least this often
	// idleWait is how long the deliverer, caught up, waits for the next
	// record before its housekeeping: the fdatasync of start records
	// written without one, the ack file's write and fdatasync, a
	// compaction. Done at once, they sat in front of the next record: a
	// restart's exit waited for two fdatasyncs after its start was
	// delivered, and the replacement's start for one after the exit
	// (issue 12 item 5). An exit's own fdatasync covers the start records
	// before it in the spool; the ack is saved every ackEvery records
	// anyway, and a record delivered twice after a crash is stored once.
	idleWait = 20 * time.Millisecond
)

// fallback returns what to append instead of e, which the log refused as
// invalid: a process.exited without its output and with its reason cut,
// under an id derived from e's (so a retry is stored once), or false.
func fallback(e events.Event) (events.Event, bool) {
	x, ok := e.Data.(events.ProcessExited)
	if !ok {
		return events.Event{}, false
	}
	x.Output, x.Reason = nil, events.Clip(x.Reason, events.MaxReason)
	e.Data, e.ID = x, e.ID+"-fallback"
	return e, true
}

// deliver sends the spool to the log, oldest first, one acknowledged append
// at a time so the log holds them in spool order. A failed append is
// retried, with the same event id, until it succeeds: the log's duplicate
// window stores a retried event once. A record counts as delivered (the
// ack offset passes it) once the log has it and its spool write is done;
// the next ones are appended meanwhile, so that a restart's start does not
// wait for its predecessor's exit to be fdatasynced (issue 12 item 5). It
// returns when ctx ends.
//
// Longer than 80 lines: one loop whose state (the log, the backoff,
// failing, the unsaved count) every step shares; each step is a few lines.
func (a *Agent) deliver(ctx context.Context) {
	status := a.cfg.Conn.StatusChanged(nats.CONNECTED)
	defer a.cfg.Conn.RemoveStatusListener(status)
	var (
		log     *events.Log
		backoff = minBackoff
		failing bool
		unsaved int
		// sent: appended, in order, and waiting for their spool write.
		sent  []queued
		fails uint64 // the journal's failed syncs, as last seen
	)
	settle := func() {
		for len(sent) > 0 {
			done, ok := sent[0].settled()
			if !done {
				return
			}
			q := sent[0]
			sent = sent[1:]
			if !ok {
				continue // its sync failed: its writer writes it again
			}
			a.journal.delivered(q)
			if a.onDelivered != nil {
				a.onDelivered(q.rec.Kind, q.rec.Time)
			}
			if unsaved++; unsaved >= ackEvery {
				if err := a.journal.saveAck(); err != nil {
					a.log.Error("save spool ack", "err", err)
				}
				unsaved = 0
			}
		}
	}
	pause := func() bool {
		t := time.NewTimer(backoff)
		defer t.Stop()
		backoff = min(2*backoff, maxBackoff)
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
		case <-status:
			backoff = minBackoff
		}
		return true
	}
	for {
		settle()
		var off int64
		if len(sent) > 0 {
			off = sent[len(sent)-1].end
		}
		q, f, ok := a.journal.next(off)
		if f != fails {
			// A sync failed: its records left the queue and come again
			// later; start from the oldest (a repeat is stored once).
			fails, sent = f, nil
			continue
		}
		if !ok && len(sent) > 0 {
			select {
			case <-ctx.Done():
				return
			case <-sent[0].b.done:
			case <-a.journal.kick:
			}
			continue
		}
		if !ok {
			a.noteDeliver(nil) // nothing waits
			t := time.NewTimer(idleWait)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-a.journal.kick:
				t.Stop()
				continue // the next record first
			case <-t.C:
			}
			if err := a.journal.syncDirty(); err != nil {
				a.log.Error("sync spool", "err", err)
			}
			if unsaved > 0 {
				if err := a.journal.saveAck(); err != nil {
					a.log.Error("save spool ack", "err", err)
				}
				unsaved = 0
			}
			if err := a.journal.maybeCompact(); err != nil {
				a.log.Error("compact spool", "err", err)
			}
			select {
			case <-ctx.Done():
				return
			case <-a.journal.kick:
			}
			continue
		}
		if log == nil {
			octx, cancel := context.WithTimeout(ctx, appendTimeout)
			l, err := events.Open(octx, a.cfg.Conn, events.WithoutCreate(), events.WithLogger(a.log))
			cancel()
			if err != nil {
				a.noteDeliver(err)
				if !failing {
					a.log.Warn("event log unreachable; events stay in the spool", "err", err)
					failing = true
				}
				if !pause() {
					return
				}
				continue
			}
			log = l
		}
		actx, cancel := context.WithTimeout(ctx, appendTimeout)
		_, err := log.Append(actx, q.rec.event())
		cancel()
		if errors.Is(err, events.ErrInvalid) {
			// A bug: the agent built it. It can never be stored, and keeping
			// it would stop every later one; its fallback keeps what happened
			// (a process started or exited) without the text.
			fb, ok := fallback(q.rec.event())
			a.log.Error("spooled event refused as invalid; appending a fallback", "id", q.rec.ID, "fallback", ok, "err", err)
			if ok {
				actx, cancel := context.WithTimeout(ctx, appendTimeout)
				_, err = log.Append(actx, fb)
				cancel()
			}
			if !ok || errors.Is(err, events.ErrInvalid) {
				a.log.Error("drop spooled event the log refuses", "id", q.rec.ID, "err", err)
				err = nil
			}
		}
		if err != nil {
			a.noteDeliver(err)
			if !failing {
				a.log.Warn("append to event log failed; events stay in the spool and are retried", "err", err)
				failing = true
			}
			if !pause() {
				return
			}
			continue
		}
		if failing {
			a.log.Info("event log reachable again; delivering the spool", "pending", a.journal.pending())
			failing = false
		}
		backoff = minBackoff
		a.noteDeliver(nil)
		sent = append(sent, q)
	}
}
