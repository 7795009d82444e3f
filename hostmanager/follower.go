package hostmanager

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/vmguard/vmguard/config"
	"github.com/vmguard/vmguard/events"
)

// DefaultReplayWait bounds the start's replay when Config.ReplayWait is 0.
const DefaultReplayWait = 2 * time.Minute

// item is one message from the follower: an event, a skipped message, or
// packages a catch-up folded (concern.go).
type item struct {
	e       events.Event
	skipSeq uint64
	skipSub string
	install map[string]*PackageState
}

// follower reads the log for the loop: at start the replay, which the loop
// folds as it comes, then, in Run, what follows it, handed to the loop as
// items. Unless it reads the whole log, it reads what concerns this node
// (concern.go): the index of placements beside the main read, and a
// catch-up for each package placed here for the first time.
type follower struct {
	node      string
	log       logReader
	logger    *slog.Logger
	now       func() time.Time
	wholeLog  bool          // Config.ReadWholeLog
	replayFor time.Duration // Config.ReplayWait
	configs   *ConfigCache  // Config.Configs

	// mainReads counts the messages the main read received (replay and
	// follow), reads those of the index and the catch-ups.
	mainReads, reads events.ReadCount
	// concern is the set of packages placed on this node at least once
	// (concern.go): built by the replay, then owned by the main read.
	concern map[string]bool
	// mainSeq and indexSeq are the last sequences the replay's main read
	// and index read received; indexDone is set once the index was read to
	// its end, oldDone once the placements from before the log's first
	// marker were (oldPlacements).
	mainSeq, indexSeq uint64
	indexDone         bool
	oldDone           bool
	// downs are the node.lost, node.fenced and node.joined the main read
	// delivered, in stream order: a catch-up starts at its packages'
	// first placement and takes what it needs of the nodes before it
	// from here (catchUpPackages). Owned by the main read.
	downs []nodeMark
}

// logReader is what the follower needs of the log (events.Log): a replay
// to the end and a follow, both with a read's filter and position, and
// where a subject's first message is.
type logReader interface {
	Replay(ctx context.Context, ro events.ReadOptions, fn events.Handler) (uint64, error)
	Follow(ctx context.Context, ro events.ReadOptions, fn events.Handler) error
	First(ctx context.Context, subject string, from uint64) (uint64, bool, error)
	Next(ctx context.Context, subject string, from uint64) (events.Event, bool, error)
}

func newFollower(cfg Config, logger *slog.Logger) *follower {
	return &follower{node: cfg.Node, log: cfg.Log, logger: logger, now: cfg.Now, wholeLog: cfg.ReadWholeLog,
		replayFor: cfg.ReplayWait, configs: cfg.Configs, concern: map[string]bool{}}
}

// stats returns what all reads received and the consumers they asked for.
func (f *follower) stats() ReadStats {
	return ReadStats{
		Messages: f.reads.Messages.Load() + f.mainReads.Messages.Load(),
		Bytes:    f.reads.Bytes.Load() + f.mainReads.Bytes.Load(),
		Creates:  f.reads.Creates.Load() + f.mainReads.Creates.Load(),
		Kept:     f.reads.Kept.Load() + f.mainReads.Kept.Load(),
		Late:     f.reads.Late.Load() + f.mainReads.Late.Load(),
	}
}

// replay reads the log to its end, handing each event to fold and each
// malformed message to skip, and returns the last sequence read. A read
// that fails (its consumer's server stopped, a cluster still electing,
// this host cut off from the majority) is resumed after the last event
// read, with a growing pause, until Config.ReplayWait has passed since the
// first attempt: folds ignore what they have seen. (Six attempts, ~12 s,
// were too few: a host manager restarted on a host cut off from the
// majority exited with "JetStream system temporarily unavailable" and its
// node never joined again; docs/bench/partitions.md.)
func (f *follower) replay(ctx context.Context, fold func(events.Event), skip func(uint64, string)) (uint64, error) {
	wait := f.replayFor
	if wait <= 0 {
		wait = DefaultReplayWait
	}
	deadline := f.now().Add(wait)
	pause := 500 * time.Millisecond
	for attempt := 1; ; attempt++ {
		err := f.replayOnce(ctx, fold, skip)
		if err == nil || ctx.Err() != nil || f.now().After(deadline) {
			return f.mainSeq, err
		}
		f.logger.Warn("replay log; resuming", "attempt", attempt, "after_seq", f.mainSeq, "err", err, "gives_up_in", deadline.Sub(f.now()).Round(time.Second))
		select {
		case <-ctx.Done():
			return f.mainSeq, ctx.Err()
		case <-time.After(pause):
		}
		pause = min(2*pause, 4*time.Second)
	}
}

// replayOnce reads the index to its end (once: markers appended after it
// are the live index's, concern.go), then the main read from after the
// last sequence it received.
func (f *follower) replayOnce(ctx context.Context, fold func(events.Event), skip func(uint64, string)) error {
	if !f.wholeLog && !f.oldDone {
		if err := f.readOldPlacements(ctx); err != nil {
			return err
		}
		f.oldDone = true
	}
	if !f.wholeLog && !f.indexDone {
		ro := events.ReadOptions{Subjects: []string{events.PlacementFilter(f.node)}, Count: &f.reads,
			OnSkip: func(seq uint64, _ string) { f.indexSeq = max(f.indexSeq, seq) }}
		if f.indexSeq > 0 {
			ro.StartSeq = f.indexSeq + 1
		}
		last, err := f.log.Replay(ctx, ro, func(e events.Event) error {
			f.indexSeq = max(f.indexSeq, e.Seq)
			if p, ok := placedHere(e, f.node); ok {
				f.concern[p] = true
			}
			return nil
		})
		f.indexSeq = max(f.indexSeq, last)
		if err != nil {
			return fmt.Errorf("read placements: %w", err)
		}
		f.indexDone = true
	}
	ro := events.ReadOptions{OnSkip: skip, Count: &f.mainReads}
	if !f.wholeLog {
		ro.Subjects = mainSubjects(f.concern)
	}
	if f.mainSeq > 0 {
		ro.StartSeq = f.mainSeq + 1
	}
	last, err := f.log.Replay(ctx, ro, func(e events.Event) error {
		f.mainSeq = max(f.mainSeq, e.Seq)
		f.noteNode(e)
		fold(e)
		return nil
	})
	f.mainSeq = max(f.mainSeq, last)
	return err
}

// readOldPlacements adds to the concern set the packages placed on this
// node before the log's first marker (oldPlacements): none in a log
// written since markers exist, of which it reads two messages' sequences
// and nothing else.
func (f *follower) readOldPlacements(ctx context.Context) error {
	from, to, ok, err := oldPlacements(ctx, f.log)
	if err != nil || !ok {
		return err
	}
	_, err = f.log.Replay(ctx, events.ReadOptions{StartSeq: from, Subjects: []string{placedFilter}, Count: &f.reads},
		func(e events.Event) error {
			if to > 0 && e.Seq >= to {
				return errCaughtUp
			}
			if p, ok := placedHere(e, f.node); ok {
				f.concern[p] = true
			}
			return nil
		})
	if err != nil && !errors.Is(err, errCaughtUp) {
		return fmt.Errorf("read placements from before the first marker: %w", err)
	}
	return nil
}

// Run feeds the events from seq on into in, resuming after errors, until
// ctx ends: the main read, and beside it the index read from after the
// replay's (concern.go), unless it reads the whole log. cfg is the
// configuration in force before seq.
func (f *follower) Run(ctx context.Context, seq uint64, cfg *config.Cluster, in chan<- item) {
	if f.wholeLog {
		f.followMain(ctx, &mainRead{next: seq, cfg: cfg, wait: 100 * time.Millisecond}, nil, in)
		return
	}
	adds := &addQueue{}
	known := maps.Clone(f.concern)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		f.followIndex(ctx, f.indexSeq+1, known, adds)
	}()
	f.followMain(ctx, &mainRead{next: seq, cfg: cfg, wait: 100 * time.Millisecond}, adds, in)
	wg.Wait()
}

// followIndex reads this node's placement markers from next on and queues
// on adds each package placed on this node that known does not hold yet.
func (f *follower) followIndex(ctx context.Context, next uint64, known map[string]bool, adds *addQueue) {
	wait := 100 * time.Millisecond
	for {
		err := f.log.Follow(ctx, events.ReadOptions{
			StartSeq: next, Subjects: []string{events.PlacementFilter(f.node)}, Count: &f.reads,
			OnSkip: func(seq uint64, _ string) { next = seq + 1 },
		}, func(e events.Event) error {
			next = e.Seq + 1
			wait = 100 * time.Millisecond
			if p, ok := placedHere(e, f.node); ok && !known[p] {
				known[p] = true
				adds.add(p)
			}
			return nil
		})
		if ctx.Err() != nil {
			return
		}
		f.logger.Warn("following the placements stopped; resuming", "seq", next, "err", err)
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return
		}
		wait = min(2*wait, 5*time.Second)
	}
}

// mainRead is where the main read is: the next sequence to read, the
// configuration in force before it (parsed as it is read, through the
// cache the loop shares: keeping the event until a catch-up needs it kept
// a copy of the configuration's bytes per host manager, ~3.6 MB at 10,000
// packages), and the pause before it resumes.
type mainRead struct {
	next uint64
	cfg  *config.Cluster
	wait time.Duration
}

// backoff pauses before the main read resumes; false if ctx ended.
func (m *mainRead) backoff(ctx context.Context) bool {
	select {
	case <-time.After(m.wait):
	case <-ctx.Done():
		return false
	}
	m.wait = min(2*m.wait, 5*time.Second)
	return true
}

// followMain feeds the main read from m.next on into in. With adds (not
// nil), it takes in the packages queued there: it stops its consumer at
// the next sequence it has not delivered, catches up with their history
// below it, hands the result to the loop and resumes with them in its
// filter (concern.go).
func (f *follower) followMain(ctx context.Context, m *mainRead, adds *addQueue, in chan<- item) {
	for {
		if adds != nil && !f.takeIn(ctx, m, adds, in) {
			return
		}
		fctx, cancel := context.WithCancel(ctx)
		if adds != nil && !adds.arm(cancel) {
			cancel()
			continue
		}
		err := f.readMain(fctx, m, adds != nil, in)
		queued := adds != nil && adds.disarm()
		cancel()
		if ctx.Err() != nil {
			return
		}
		if queued {
			continue // stopped to take packages in
		}
		f.logger.Warn("following the log stopped; resuming", "seq", m.next, "err", err)
		if !m.backoff(ctx) {
			return
		}
	}
}

// takeIn catches up with the packages queued on adds that the main read
// does not read yet, hands their state to the loop and adds them to the
// main read's filter; a catch-up that fails is retried. False if ctx ended.
func (f *follower) takeIn(ctx context.Context, m *mainRead, adds *addQueue, in chan<- item) bool {
	for {
		pkgs := slices.DeleteFunc(adds.take(), func(p string) bool { return f.concern[p] })
		if len(pkgs) == 0 {
			return true
		}
		got, err := f.catchUpPackages(ctx, pkgs, m.next-1, m.cfg)
		if err != nil {
			if ctx.Err() != nil {
				return false
			}
			f.logger.Warn("catch up with packages placed here; retrying", "packages", pkgs, "err", err)
			adds.putBack(pkgs)
			if !m.backoff(ctx) {
				return false
			}
			continue
		}
		select {
		case in <- item{install: got}:
		case <-ctx.Done():
			return false
		}
		for _, p := range pkgs {
			f.concern[p] = true
		}
		f.logger.Debug("reading packages placed here", "packages", pkgs, "from", m.next)
		return true
	}
}

// readMain runs one consumer of the main read from m.next until it fails
// or ctx ends; filtered: it reads the concern set only.
func (f *follower) readMain(ctx context.Context, m *mainRead, filtered bool, in chan<- item) error {
	send := func(it item) error {
		select {
		case in <- it:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	ro := events.ReadOptions{
		StartSeq: m.next, Count: &f.mainReads,
		OnSkip: func(seq uint64, subject string) {
			if send(item{skipSeq: seq, skipSub: subject}) == nil {
				m.next = seq + 1
			}
		},
	}
	if filtered {
		ro.Subjects = mainSubjects(f.concern)
	}
	return f.log.Follow(ctx, ro, func(e events.Event) error {
		if err := send(item{e: e}); err != nil {
			return err
		}
		m.next = e.Seq + 1
		f.noteNode(e)
		if d, ok := e.Data.(events.ConfigApplied); ok {
			if c, err := f.configs.parse(e.ID, d); err == nil {
				m.cfg = c // else the one before stays in force, as in the loop's fold
			}
		}
		m.wait = 100 * time.Millisecond
		return nil
	})
}

// catchUpPackages folds pkgs' history below seq through (see catchUp),
// from their first package.placed on (historyStart), with the nodes'
// losses, fences and joins before it taken from what the main read
// delivered (downs). The packages' events are read by direct gets
// (readFew) and folded in stream order with the nodes' events the main
// read delivered since; a package with a longer history is read with a
// consumer instead, with the nodes' events it reads.
func (f *follower) catchUpPackages(ctx context.Context, pkgs []string, through uint64, cfg *config.Cluster) (map[string]*PackageState, error) {
	c := newCatchUp(f.node, cfg, through)
	if through == 0 {
		return c.packages(pkgs), nil
	}
	from, err := f.historyStart(ctx, pkgs)
	if err != nil {
		return nil, fmt.Errorf("catch up with packages %v: %w", pkgs, err)
	}
	if from > through {
		return c.packages(pkgs), nil // placed after through: the main read reads it all
	}
	c.seed(f.downs, from)
	few, ok, err := f.readFew(ctx, pkgs, from, through)
	if err != nil {
		return nil, fmt.Errorf("catch up with packages %v: %w", pkgs, err)
	}
	if ok {
		c.fold(few, f.downs, from)
		return c.packages(pkgs), nil
	}
	_, err = f.log.Replay(ctx, events.ReadOptions{StartSeq: from, Subjects: catchUpSubjects(pkgs), OnSkip: c.skipped, Count: &f.reads},
		func(e events.Event) error {
			if !c.apply(e) {
				return errCaughtUp
			}
			return nil
		})
	if err != nil && !errors.Is(err, errCaughtUp) {
		return nil, fmt.Errorf("catch up with packages %v: %w", pkgs, err)
	}
	return c.packages(pkgs), nil
}

// catchUpGets bounds the direct gets of a catch-up (readFew): past it a
// consumer reads the packages' history (a package placed here after a
// long life elsewhere).
const catchUpGets = 64

// readFew reads pkgs' events from sequence from through through by direct
// gets, one a message (Log.Next, no consumer), with their malformed
// messages as skips; false if they are more than catchUpGets.
func (f *follower) readFew(ctx context.Context, pkgs []string, from, through uint64) ([]caught, bool, error) {
	var out []caught
	for _, p := range pkgs {
		subject := events.PackageFilter(p)
		for seq := from; seq <= through; {
			if len(out) == catchUpGets {
				return nil, false, nil
			}
			e, ok, err := f.log.Next(ctx, subject, seq)
			switch {
			case errors.Is(err, events.ErrInvalid), errors.Is(err, events.ErrUnknownType):
				if e.Seq <= through {
					out = append(out, caught{seq: e.Seq, skip: subject})
				}
			case err != nil:
				return nil, false, err
			case !ok:
				seq = through + 1
				continue
			case e.Seq <= through:
				out = append(out, caught{seq: e.Seq, e: e})
			}
			f.reads.Messages.Add(1)
			seq = e.Seq + 1
		}
	}
	return out, true, nil
}

// historyStart returns the sequence of the first package.placed of any of
// pkgs (1 if one has none: the whole log is read for it), where a catch-up
// starts. Nothing before a package's first placement changes what a host
// manager folds of it but its last sequence, which the events from the
// placement on set again. A catch-up read from the log's first message
// cost the server a walk of a message block's subjects for each message
// it delivered (nats-server's LoadNextMsgMulti): at 200 host managers and
// 10,000 packages, half the CPU of a cold start. Finding a literal
// subject's first message is an index lookup (a direct get).
func (f *follower) historyStart(ctx context.Context, pkgs []string) (uint64, error) {
	from := uint64(0)
	for _, p := range pkgs {
		seq, ok, err := f.log.First(ctx, events.PackageSubject(p, "package", "placed"), 1)
		if err != nil {
			return 0, err
		}
		if !ok {
			return 1, nil
		}
		if from == 0 || seq < from {
			from = seq
		}
	}
	return max(from, 1), nil
}

// nodeMark is a node.lost, node.fenced or node.joined the main read
// delivered: what a catch-up folds of it (its sequence, ID, node and type).
type nodeMark struct {
	seq  uint64
	id   string
	node string
	data events.Payload // events.NodeLost{}, NodeFenced{} or NodeJoined{}
}

// event is the mark as an event for a catch-up's fold.
func (d nodeMark) event() events.Event {
	return events.Event{ID: d.id, Seq: d.seq, Subject: d.node, Data: d.data}
}

// noteNode records e in downs if it is a node's loss, fence or join.
func (f *follower) noteNode(e events.Event) {
	var data events.Payload
	switch e.Data.(type) {
	case events.NodeLost:
		data = events.NodeLost{}
	case events.NodeFenced:
		data = events.NodeFenced{}
	case events.NodeJoined:
		data = events.NodeJoined{}
	default:
		return
	}
	f.downs = append(f.downs, nodeMark{seq: e.Seq, id: e.ID, node: e.Subject, data: data})
}
