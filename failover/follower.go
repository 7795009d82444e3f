package failover

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/vmguard/vmguard/events"
)

// logReader is what the follower reads the log with: events.Log, or a
// simulated log.
type logReader interface {
	Replay(ctx context.Context, ro events.ReadOptions, fn events.Handler) (uint64, error)
	Follow(ctx context.Context, ro events.ReadOptions, fn events.Handler) error
}

// item is one message of the log handed from the follower to the main loop.
type item struct {
	e       events.Event
	skipped bool   // malformed: e holds only Seq
	subject string // of a skipped message
}

// catchUpWait bounds how long catchUp retries reads that fail.
const catchUpWait = 2 * time.Minute

// followRetry is the pause before the follower reads again after an error.
const followRetry = time.Second

// follower is the runner's part that reads the log for the loop: catchUp
// replays it up to its current end before the loop starts (applying, not
// deciding), and Run then hands every later message to the loop over a
// channel, resuming after an error from the last message it handed over.
// It never touches the State: the loop owns it.
type follower struct {
	log    logReader
	logger *slog.Logger
	warn   warner
}

func newFollower(log logReader, logger *slog.Logger) *follower {
	return &follower{log: log, logger: logger, warn: newWarner(logger)}
}

// catchUp reads the log from next() to its current end into apply and skip
// (a malformed message), on the caller's goroutine. Replay decodes on every
// core, which makes it faster than Follow for a long log. A read that fails
// (a cluster still forming or electing, this controller's server cut off)
// is resumed at next() — after the last message handed over — with a
// growing pause, for up to catchUpWait: a controller started with the
// servers exited on the first one ("replay: nats: no heartbeat received",
// docs/bench/partitions.md).
func (f *follower) catchUp(ctx context.Context, next func() uint64, apply events.Handler, skip func(seq uint64, subject string)) error {
	deadline := time.Now().Add(catchUpWait)
	pause := 500 * time.Millisecond
	for {
		_, err := f.log.Replay(ctx, events.ReadOptions{StartSeq: next(), OnSkip: skip}, apply)
		if err == nil {
			f.warn.recovered("catch up")
			return nil
		}
		if ctx.Err() != nil || time.Now().After(deadline) {
			return fmt.Errorf("catch up with the log: %w", err)
		}
		f.warn.once("catch up", "catch up with the log; resuming", "after_seq", next()-1, "err", err)
		select {
		case <-ctx.Done():
			return fmt.Errorf("catch up with the log: %w", ctx.Err())
		case <-time.After(pause):
		}
		pause = min(2*pause, 4*time.Second)
	}
}

// Run hands every message from sequence from on to out, in stream order
// (a malformed one as a skipped item), until ctx ends; it returns nil then.
func (f *follower) Run(ctx context.Context, from uint64, out chan<- item) error {
	next := from
	send := func(it item) error {
		select {
		case out <- it:
			next = it.e.Seq + 1
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	for {
		ro := events.ReadOptions{StartSeq: next, OnSkip: func(seq uint64, subject string) {
			_ = send(item{e: events.Event{Seq: seq}, skipped: true, subject: subject})
		}}
		err := f.log.Follow(ctx, ro, func(e events.Event) error { return send(item{e: e}) })
		if ctx.Err() != nil {
			return nil
		}
		if err == nil {
			err = errors.New("follow ended")
		}
		f.logger.Warn("follow the log; resuming", "from", next, "err", err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(followRetry):
		}
	}
}

// warner logs a warning about a condition once until it is over: a
// condition that lasts (a server away) is reported when it starts, not on
// every tick. Each part has its own; it is used on one goroutine.
type warner struct {
	logger *slog.Logger
	warned map[string]bool
}

func newWarner(logger *slog.Logger) warner {
	return warner{logger: logger, warned: map[string]bool{}}
}

// once logs a warning about key once until recovered(key).
func (w warner) once(key, msg string, args ...any) {
	if w.warned[key] {
		return
	}
	w.warned[key] = true
	w.logger.Warn(msg, args...)
}

// recovered notes that the condition warned about under key is over.
func (w warner) recovered(key string) {
	if w.warned[key] {
		delete(w.warned, key)
		w.logger.Info("recovered", "what", key)
	}
}
