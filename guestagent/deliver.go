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
func (a *Agent) deliver(ctx context.Context) {
	status := a.cfg.Conn.StatusChanged(nats.CONNECTED)
	defer a.cfg.Conn.RemoveStatusListener(status)
	d := &deliverer{a: a, status: status, backoff: minBackoff}
	for {
		d.settle()
		var off int64
		if len(d.sent) > 0 {
			off = d.sent[len(d.sent)-1].end
		}
		q, f, ok := a.journal.next(off)
		if f != d.fails {
			// A sync failed: its records left the queue and come again
			// later; start from the oldest (a repeat is stored once).
			d.fails, d.sent = f, nil
			continue
		}
		if !ok {
			if !d.wait(ctx) {
				return
			}
			continue
		}
		if !d.send(ctx, q) {
			return
		}
	}
}

// deliverer is the state deliver's loop keeps from one record to the next.
type deliverer struct {
	a      *Agent
	status chan nats.Status // the connection's reconnects, which end a pause
	log    *events.Log      // nil until it opens

	backoff time.Duration // the next pause after a failure
	failing bool          // a failure was logged and no append has succeeded since
	unsaved int           // records delivered since the ack offset was saved
	// sent: appended, in order, and waiting for their spool write.
	sent  []queued
	fails uint64 // the journal's failed syncs, as last seen
}

// settle counts as delivered the sent records whose spool write is done,
// oldest first, and saves the ack offset every ackEvery of them; a record
// whose sync failed is dropped from sent (its writer writes it again).
func (d *deliverer) settle() {
	for len(d.sent) > 0 {
		done, ok := d.sent[0].settled()
		if !done {
			return
		}
		q := d.sent[0]
		d.sent = d.sent[1:]
		if !ok {
			continue // its sync failed: its writer writes it again
		}
		d.a.journal.delivered(q)
		if d.a.onDelivered != nil {
			d.a.onDelivered(q.rec.Kind, q.rec.Time)
		}
		if d.unsaved++; d.unsaved >= ackEvery {
			d.saveAck()
		}
	}
}

// saveAck saves the ack offset (an error is logged: the offset is saved
// again later, and a record delivered twice is stored once).
func (d *deliverer) saveAck() {
	if err := d.a.journal.saveAck(); err != nil {
		d.a.log.Error("save spool ack", "err", err)
	}
	d.unsaved = 0
}

// wait waits, with no record to append, for the oldest sent record's spool
// write or a new record; or, with nothing sent, does the idle housekeeping.
// It returns false when ctx ends.
func (d *deliverer) wait(ctx context.Context) bool {
	if len(d.sent) == 0 {
		return d.idle(ctx)
	}
	select {
	case <-ctx.Done():
		return false
	case <-d.sent[0].b.done:
	case <-d.a.journal.kick:
	}
	return true
}

// idle, caught up, waits idleWait for the next record, then does the
// housekeeping (the fdatasync of start records written without one, the
// ack, a compaction) and waits for the next record. It returns false when
// ctx ends.
func (d *deliverer) idle(ctx context.Context) bool {
	j := d.a.journal
	d.a.noteDeliver(nil) // nothing waits
	t := time.NewTimer(idleWait)
	select {
	case <-ctx.Done():
		t.Stop()
		return false
	case <-j.kick:
		t.Stop()
		return true // the next record first
	case <-t.C:
	}
	if err := j.syncDirty(); err != nil {
		d.a.log.Error("sync spool", "err", err)
	}
	if d.unsaved > 0 {
		d.saveAck()
	}
	if err := j.maybeCompact(); err != nil {
		d.a.log.Error("compact spool", "err", err)
	}
	select {
	case <-ctx.Done():
		return false
	case <-j.kick:
	}
	return true
}

// send appends q, opening the log first if it is not yet open, and adds q
// to sent; on a failure it pauses instead. It returns false when ctx ends.
func (d *deliverer) send(ctx context.Context, q queued) bool {
	if d.log == nil {
		octx, cancel := context.WithTimeout(ctx, appendTimeout)
		l, err := events.Open(octx, d.a.cfg.Conn, events.WithoutCreate(), events.WithLogger(d.a.log))
		cancel()
		if err != nil {
			return d.failed(ctx, "event log unreachable; events stay in the spool", err)
		}
		d.log = l
	}
	if err := d.append(ctx, q); err != nil {
		return d.failed(ctx, "append to event log failed; events stay in the spool and are retried", err)
	}
	if d.failing {
		d.a.log.Info("event log reachable again; delivering the spool", "pending", d.a.journal.pending())
		d.failing = false
	}
	d.backoff = minBackoff
	d.a.noteDeliver(nil)
	d.sent = append(d.sent, q)
	return true
}

// append appends q's event. One the log refuses as invalid is a bug (the
// agent built it): it can never be stored, and keeping it would stop every
// later one, so its fallback is appended instead, which keeps what happened
// (a process started or exited) without the text; or, refused too, it is
// dropped (nil).
func (d *deliverer) append(ctx context.Context, q queued) error {
	actx, cancel := context.WithTimeout(ctx, appendTimeout)
	_, err := d.log.Append(actx, q.rec.event())
	cancel()
	if !errors.Is(err, events.ErrInvalid) {
		return err
	}
	fb, ok := fallback(q.rec.event())
	d.a.log.Error("spooled event refused as invalid; appending a fallback", "id", q.rec.ID, "fallback", ok, "err", err)
	if ok {
		actx, cancel := context.WithTimeout(ctx, appendTimeout)
		_, err = d.log.Append(actx, fb)
		cancel()
	}
	if !ok || errors.Is(err, events.ErrInvalid) {
		d.a.log.Error("drop spooled event the log refuses", "id", q.rec.ID, "err", err)
		return nil
	}
	return err
}

// failed notes err, logs msg at the first failure of an outage, and pauses.
// It returns false when ctx ends.
func (d *deliverer) failed(ctx context.Context, msg string, err error) bool {
	d.a.noteDeliver(err)
	if !d.failing {
		d.a.log.Warn(msg, "err", err)
		d.failing = true
	}
	return d.pause(ctx)
}

// pause waits the backoff, which doubles up to maxBackoff, or less if the
// connection reconnects (the backoff then starts again at minBackoff). It
// returns false when ctx ends.
func (d *deliverer) pause(ctx context.Context) bool {
	t := time.NewTimer(d.backoff)
	defer t.Stop()
	d.backoff = min(2*d.backoff, maxBackoff)
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
	case <-d.status:
		d.backoff = minBackoff
	}
	return true
}
