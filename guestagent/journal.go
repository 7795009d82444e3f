package guestagent

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vmguard/vmguard/events"
)

// The journal is the agent's on-disk spool: an append-only file of records,
// one per process start and exit, each written (an exit also fdatasynced)
// before the event is published. A separate ack file holds how far the log has
// acknowledged them. Undelivered records are sent in file order with their
// stored event ids, so a re-send after a crash is stored once by the log's
// duplicate window. The journal also tells a restarted agent which
// processes its predecessor started and never saw exit (started records
// without an exited record).
//
// Files under <state>/spool: journal.<gen> (lines "<crc32c hex> <json>\n")
// and ack (gen, offset, crc). When everything is delivered and the journal
// is larger than compactBytes, it is rewritten as journal.<gen+1> keeping
// only the started records of processes that still run and the last
// rememberExited exits (for request-id dedup across restarts).

const (
	recStarted = "started"
	recExited  = "exited"

	compactBytes   = 4 << 20
	rememberExited = 1024
)

// record is one journal line.
type record struct {
	Kind    string                 `json:"kind"`
	ID      string                 `json:"id"`
	Source  string                 `json:"source"`
	Subject string                 `json:"subject"`
	Time    time.Time              `json:"time"`
	Cause   string                 `json:"cause,omitempty"`
	Started *events.ProcessStarted `json:"started,omitempty"`
	Exited  *events.ProcessExited  `json:"exited,omitempty"`
	// Proc is set on started records: what a restarted agent needs to
	// find and kill leftovers of the process.
	Proc *procStamp `json:"proc,omitempty"`
}

// procStamp identifies a started process beyond its pid.
type procStamp struct {
	Argv          []string `json:"argv"`
	StartTicks    uint64   `json:"start_ticks"`
	BootID        string   `json:"boot_id"`
	HaltTimeoutMS int64    `json:"halt_timeout_ms"`
}

// requestID returns the run request id the record is about.
func (r record) requestID() string {
	if r.Started != nil {
		return r.Started.RequestID
	}
	if r.Exited != nil {
		return r.Exited.RequestID
	}
	return ""
}

// event returns the event the record publishes.
func (r record) event() events.Event {
	e := events.Event{ID: r.ID, Source: r.Source, Subject: r.Subject, Time: r.Time, CauseID: r.Cause}
	switch {
	case r.Started != nil:
		e.Data = *r.Started
	case r.Exited != nil:
		e.Data = *r.Exited
	}
	return e
}

var crcTable = crc32.MakeTable(crc32.Castagnoli)

func encodeRecord(r record) ([]byte, error) {
	body, err := json.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("encode spool record: %w", err)
	}
	line := make([]byte, 0, len(body)+10)
	line = fmt.Appendf(line, "%08x ", crc32.Checksum(body, crcTable))
	line = append(line, body...)
	return append(line, '\n'), nil
}

// decodeRecord parses one line (without its newline).
func decodeRecord(line []byte) (record, error) {
	var r record
	if len(line) < 10 || line[8] != ' ' {
		return r, errors.New("short line")
	}
	sum, err := strconv.ParseUint(string(line[:8]), 16, 32)
	if err != nil {
		return r, fmt.Errorf("checksum: %w", err)
	}
	body := line[9:]
	if crc32.Checksum(body, crcTable) != uint32(sum) {
		return r, errors.New("checksum mismatch")
	}
	if err := json.Unmarshal(body, &r); err != nil {
		return r, fmt.Errorf("decode: %w", err)
	}
	if (r.Kind == recStarted) != (r.Started != nil) || (r.Kind == recExited) != (r.Exited != nil) || r.ID == "" {
		return r, fmt.Errorf("record kind %q does not match its data", r.Kind)
	}
	return r, nil
}

// queued is an undelivered record and the journal offset just past it.
type queued struct {
	rec record
	end int64
	// b is the batch that wrote it (nil: read when the journal was
	// opened). A record that needs an fdatasync is queued as soon as it
	// is written, so that its append overlaps the sync; it counts as
	// delivered only once b is done, and not at all if b failed (then
	// the batch is out of the queue and its writer tries again).
	b *batch
}

// settled reports, without waiting, whether the batch that wrote q is done
// (its fdatasync, if any) and whether it succeeded.
func (q queued) settled() (done, ok bool) {
	if q.b == nil {
		return true, true
	}
	select {
	case <-q.b.done:
		return true, q.b.err == nil
	default:
		return false, false
	}
}

// written waits until the batch that wrote q is done (its fdatasync, if
// any) and reports whether it succeeded, or false when ctx ends first.
func (q queued) written(ctx context.Context) bool {
	if q.b == nil {
		return true
	}
	select {
	case <-q.b.done:
		return q.b.err == nil
	case <-ctx.Done():
		return false
	}
}

// batch is a group of appends written with one fdatasync.
type batch struct {
	sync  bool // fdatasync before it counts as written
	buf   []byte
	recs  []record
	ends  []int64
	wrote []func() // appendWritten's: called once it is written, before its sync
	done  chan struct{}
	err   error
}

// journal is the spool. Safe for concurrent use.
type journal struct {
	dir string

	mu     sync.Mutex
	f      *os.File
	gen    uint64
	size   int64
	ack    *os.File
	acked  int64 // delivered up to here (in memory)
	saved  int64 // acked as last written to the ack file
	queue  []queued
	cur    *batch // appends waiting for the leader
	leader bool   // a goroutine is writing (or compacting)
	// syncing: the leader waits for an fdatasync (mu released); records
	// that need none may be written meanwhile (writeNowLocked).
	syncing bool
	fails   uint64 // fdatasyncs that failed (next)
	kick    chan struct{}

	datasync  func(fd int) error // unix.Fdatasync; tests stand in for it
	dirty     bool               // written without fdatasync since the last one
	compactAt int64              // compact when delivered and larger (compactBytes)
	badLines  int                // corrupt lines skipped when opened
}

// openJournal opens (or creates) the spool in dir and returns every record
// it holds, in order.
func openJournal(dir string) (*journal, []record, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, nil, fmt.Errorf("create spool dir: %w", err)
	}
	j := &journal{dir: dir, kick: make(chan struct{}, 1), compactAt: compactBytes, datasync: unix.Fdatasync}
	gen, off, ok, err := j.readAck()
	if err != nil {
		return nil, nil, err
	}
	gens, err := j.listGens()
	if err != nil {
		return nil, nil, err
	}
	if !ok {
		gen, off = 1, 0
		if len(gens) > 0 {
			gen = gens[0] // an ack never written: deliver everything again
		}
	}
	f, err := os.OpenFile(j.path(gen), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, nil, fmt.Errorf("open spool: %w", err)
	}
	j.f, j.gen = f, gen
	recs, ends, good, bad, err := scanJournal(f)
	j.badLines = bad
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("stat spool: %w", err)
	}
	if st.Size() != good {
		// A torn last write: the process that made it never got it
		// acknowledged, so it is dropped.
		if err := f.Truncate(good); err != nil {
			f.Close()
			return nil, nil, fmt.Errorf("truncate torn spool tail: %w", err)
		}
	}
	if _, err := f.Seek(good, io.SeekStart); err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("seek spool: %w", err)
	}
	j.size = good
	if off > good {
		off = good
	}
	j.acked, j.saved = off, -1
	for i, r := range recs {
		if ends[i] > off {
			j.queue = append(j.queue, queued{rec: r, end: ends[i]})
		}
	}
	j.ack, err = os.OpenFile(filepath.Join(dir, "ack"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("open spool ack: %w", err)
	}
	if err := j.writeAck(); err != nil {
		j.close()
		return nil, nil, err
	}
	for _, g := range gens {
		if g != gen {
			os.Remove(j.path(g))
		}
	}
	if err := syncDir(dir); err != nil {
		j.close()
		return nil, nil, err
	}
	return j, recs, nil
}

func (j *journal) path(gen uint64) string {
	return filepath.Join(j.dir, fmt.Sprintf("journal.%d", gen))
}

// listGens returns the generations of journal files present, ascending.
func (j *journal) listGens() ([]uint64, error) {
	ents, err := os.ReadDir(j.dir)
	if err != nil {
		return nil, fmt.Errorf("read spool dir: %w", err)
	}
	var gens []uint64
	for _, e := range ents {
		s, ok := strings.CutPrefix(e.Name(), "journal.")
		if !ok {
			continue
		}
		if g, err := strconv.ParseUint(s, 10, 64); err == nil {
			gens = append(gens, g)
		}
	}
	sort.Slice(gens, func(a, b int) bool { return gens[a] < gens[b] })
	return gens, nil
}

// ackSize is the ack file's length: gen, offset, crc32c of both.
const ackSize = 20

func (j *journal) readAck() (gen uint64, off int64, ok bool, err error) {
	b, err := os.ReadFile(filepath.Join(j.dir, "ack"))
	if errors.Is(err, os.ErrNotExist) {
		return 0, 0, false, nil
	}
	if err != nil {
		return 0, 0, false, fmt.Errorf("read spool ack: %w", err)
	}
	if len(b) < ackSize || crc32.Checksum(b[:16], crcTable) != binary.LittleEndian.Uint32(b[16:20]) {
		return 0, 0, false, nil
	}
	return binary.LittleEndian.Uint64(b[0:8]), int64(binary.LittleEndian.Uint64(b[8:16])), true, nil
}

// writeAck persists (gen, acked). Callers hold mu or own the journal alone.
func (j *journal) writeAck() error {
	if j.saved == j.acked {
		return nil
	}
	var b [ackSize]byte
	binary.LittleEndian.PutUint64(b[0:8], j.gen)
	binary.LittleEndian.PutUint64(b[8:16], uint64(j.acked))
	binary.LittleEndian.PutUint32(b[16:20], crc32.Checksum(b[:16], crcTable))
	if _, err := j.ack.WriteAt(b[:], 0); err != nil {
		return fmt.Errorf("write spool ack: %w", err)
	}
	if err := unix.Fdatasync(int(j.ack.Fd())); err != nil {
		return fmt.Errorf("sync spool ack: %w", err)
	}
	j.saved = j.acked
	return nil
}

// scanJournal reads every valid record from the start of f; good is the
// offset after the last valid one. A partial or corrupt last line is a torn
// write; a corrupt line followed by valid ones is skipped (counted in bad).
func scanJournal(f *os.File) (recs []record, ends []int64, good int64, bad int, err error) {
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return nil, nil, 0, 0, fmt.Errorf("seek spool: %w", err)
	}
	br := bufio.NewReaderSize(f, 64<<10)
	var off int64
	for {
		line, err := br.ReadBytes('\n')
		if errors.Is(err, io.EOF) {
			if len(line) > 0 {
				bad++
			}
			return recs, ends, good, bad, nil
		}
		if err != nil {
			return nil, nil, 0, 0, fmt.Errorf("read spool: %w", err)
		}
		off += int64(len(line))
		r, derr := decodeRecord(bytes.TrimSuffix(line, []byte{'\n'}))
		if derr != nil {
			bad++
			continue
		}
		good = off
		recs = append(recs, r)
		ends = append(ends, good)
	}
}

// append writes recs and queues them for delivery, in order. A batch
// holding an exit is fdatasynced (one sync shared by concurrent appends),
// which makes every earlier record durable too; it is queued as soon as it
// is written, so that the deliverer's append of the exit overlaps the sync
// instead of waiting for it (issue 12 item 5), and append returns once the
// sync is done. The deliverer counts it as delivered only then. Start records
// alone are only written: a start must survive an agent crash, which the
// page cache ensures, but not a guest crash, which ends its process anyway
// (and the agent's boot id check knows that). This keeps the sync off the
// run path; the deliverer syncs them once it has caught up (syncDirty).
func (j *journal) append(recs ...record) error { return j.appendWritten(nil, recs...) }

// appendWritten is append, calling written (if not nil) as soon as recs are
// in the file and queued for delivery: before the batch's fdatasync, on the
// goroutine that writes it, or when append returns for a batch without one.
// It is not called if the write fails; a caller that retries may see it
// called on a later attempt, or (a sync that failed after the write) on an
// earlier one too.
func (j *journal) appendWritten(written func(), recs ...record) error {
	if written != nil {
		written = sync.OnceFunc(written)
	}
	err := j.write(written, recs)
	if err == nil && written != nil {
		written()
	}
	return err
}

// write is appendWritten's work.
func (j *journal) write(written func(), recs []record) error {
	lines := make([][]byte, len(recs))
	sync := false
	for i, r := range recs {
		l, err := encodeRecord(r)
		if err != nil {
			return err
		}
		lines[i] = l
		sync = sync || r.Kind != recStarted
	}
	j.mu.Lock()
	if !sync && j.syncing && j.cur == nil {
		// The leader waits for an fdatasync: a start is written now, after
		// what the sync covers, instead of waiting for it (a restart's
		// start waited for its predecessor's exit to be synced).
		err := j.writeNowLocked(recs, lines)
		j.mu.Unlock()
		return err
	}
	b := j.cur
	if b == nil {
		b = &batch{done: make(chan struct{})}
		j.cur = b
	}
	if written != nil {
		b.wrote = append(b.wrote, written)
	}
	for i, l := range lines {
		b.sync = b.sync || recs[i].Kind != recStarted
		b.buf = append(b.buf, l...)
		b.recs = append(b.recs, recs[i])
		b.ends = append(b.ends, int64(len(b.buf)))
	}
	if j.leader {
		j.mu.Unlock()
		<-b.done
		return b.err
	}
	j.leader = true
	j.flushLocked()
	j.leader = false
	j.mu.Unlock()
	return b.err
}

// writeNowLocked writes records that need no fdatasync while the leader
// syncs, holding mu (which keeps other writers out), and queues them.
func (j *journal) writeNowLocked(recs []record, lines [][]byte) error {
	b := &batch{recs: recs, done: make(chan struct{})}
	for _, l := range lines {
		b.buf = append(b.buf, l...)
		b.ends = append(b.ends, int64(len(b.buf)))
	}
	close(b.done)
	base := j.size
	if _, err := j.f.Write(b.buf); err != nil {
		if terr := j.f.Truncate(base); terr == nil {
			_, _ = j.f.Seek(base, io.SeekStart)
		}
		return fmt.Errorf("write spool: %w", err)
	}
	j.size = base + int64(len(b.buf))
	j.dirty = true
	j.queueLocked(b, base)
	return nil
}

// flushLocked writes waiting batches until none is left. The caller holds mu
// and is the leader; mu is released around each write and sync. A batch is
// queued for delivery once written; one that needs it is then fdatasynced,
// and while it is, records that need none are written by their appenders
// (writeNowLocked).
func (j *journal) flushLocked() {
	for j.cur != nil {
		b := j.cur
		j.cur = nil
		base := j.size
		f := j.f
		j.mu.Unlock()
		_, err := f.Write(b.buf)
		j.mu.Lock()
		if err != nil {
			// The file may now hold part of the batch; cut it back so
			// the next write starts on a record boundary.
			if terr := f.Truncate(base); terr == nil {
				_, _ = f.Seek(base, io.SeekStart)
			}
			b.err = fmt.Errorf("write spool: %w", err)
			close(b.done)
			continue
		}
		end := base + int64(len(b.buf))
		j.size = end
		j.queueLocked(b, base)
		if !b.sync {
			j.dirty = true
			close(b.done)
			continue
		}
		j.syncing = true
		j.mu.Unlock()
		for _, f := range b.wrote {
			f()
		}
		err = j.datasync(int(f.Fd()))
		j.mu.Lock()
		j.syncing = false
		if err != nil {
			// Its records leave the queue: the writer tries again (a copy
			// already appended is stored once, under the same id). They
			// are cut from the file unless a start was written after them
			// during the sync; then the retry writes them a second time
			// (a restarted agent reads the exit twice, the same exit).
			if j.size == end {
				if terr := f.Truncate(base); terr == nil {
					_, _ = f.Seek(base, io.SeekStart)
					j.size = base
				}
			}
			j.queue = slices.DeleteFunc(j.queue, func(q queued) bool { return q.b == b })
			j.fails++
			b.err = fmt.Errorf("write spool: %w", err)
		} else {
			// The sync covers what was written before it, not the starts
			// written during it.
			j.dirty = j.size != end
		}
		close(b.done)
	}
}

// queueLocked queues the records of batch b, written at base, for the
// deliverer. The caller holds mu.
func (j *journal) queueLocked(b *batch, base int64) {
	for i, r := range b.recs {
		j.queue = append(j.queue, queued{rec: r, end: base + b.ends[i], b: b})
	}
	select {
	case j.kick <- struct{}{}:
	default:
	}
}

// head returns the oldest undelivered record.
func (j *journal) head() (queued, bool) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if len(j.queue) == 0 {
		return queued{}, false
	}
	return j.queue[0], true
}

// next returns the oldest undelivered record that ends past off (0: the
// oldest), and how many fdatasyncs have failed so far: a failed one takes
// its records out of the queue, to be written again later, so a reader
// that went past them starts again from the oldest.
func (j *journal) next(off int64) (queued, uint64, bool) {
	j.mu.Lock()
	defer j.mu.Unlock()
	// Ends only grow along the queue: a batch is cut from the file only
	// when nothing was written after it, and its records leave the queue.
	i := sort.Search(len(j.queue), func(i int) bool { return j.queue[i].end > off })
	if i == len(j.queue) {
		return queued{}, j.fails, false
	}
	return j.queue[i], j.fails, true
}

// pending counts undelivered records.
func (j *journal) pending() int {
	j.mu.Lock()
	defer j.mu.Unlock()
	return len(j.queue)
}

// delivered marks the head record as acknowledged by the log. The ack file
// is written by saveAck, in batches.
func (j *journal) delivered(q queued) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if len(j.queue) > 0 && j.queue[0].end == q.end {
		j.queue[0] = queued{}
		j.queue = j.queue[1:]
		if len(j.queue) == 0 {
			j.queue = nil
		}
		j.acked = q.end
	}
}

// saveAck persists the delivered offset.
func (j *journal) saveAck() error {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.writeAck()
}

// syncDirty fdatasyncs start records written without a sync, off the run
// path: the deliverer calls it when it has caught up. Only the deliverer
// calls it (it also owns compaction, which swaps the file).
func (j *journal) syncDirty() error {
	j.mu.Lock()
	if !j.dirty {
		j.mu.Unlock()
		return nil
	}
	j.dirty = false
	f := j.f
	j.mu.Unlock()
	if err := unix.Fdatasync(int(f.Fd())); err != nil {
		return fmt.Errorf("sync spool: %w", err)
	}
	return nil
}

// maybeCompact rewrites the journal when everything is delivered and it
// grew past compactBytes.
func (j *journal) maybeCompact() error {
	j.mu.Lock()
	if j.leader || len(j.queue) > 0 || j.size < j.compactAt {
		j.mu.Unlock()
		return nil
	}
	j.leader = true
	f, gen := j.f, j.gen
	j.mu.Unlock()

	nf, size, err := j.rewrite(f, gen+1)

	j.mu.Lock()
	defer j.mu.Unlock()
	if err == nil {
		oldSize, oldAcked := j.size, j.acked
		j.f, j.gen, j.size = nf, gen+1, size
		j.acked, j.saved = size, -1
		if err = j.writeAck(); err != nil {
			// The ack still names the old journal: keep using it.
			j.f, j.gen, j.size = f, gen, oldSize
			j.acked, j.saved = oldAcked, -1
			nf.Close()
			os.Remove(j.path(gen + 1))
		} else {
			f.Close()
			os.Remove(j.path(gen))
			err = syncDir(j.dir)
		}
	}
	if err != nil {
		err = fmt.Errorf("compact spool: %w", err)
	}
	j.flushLocked() // appends that waited for the compaction
	j.leader = false
	return err
}

// rewrite writes journal.<gen> holding what a restarted agent must know:
// started records without an exit, and the last rememberExited exits.
func (j *journal) rewrite(old *os.File, gen uint64) (*os.File, int64, error) {
	recs, _, _, _, err := scanJournal(old)
	if err != nil {
		return nil, 0, err
	}
	if _, err := old.Seek(0, io.SeekEnd); err != nil {
		return nil, 0, fmt.Errorf("seek spool: %w", err)
	}
	exited := make(map[string]bool)
	nExited := 0
	for _, r := range recs {
		if r.Kind == recExited {
			exited[r.requestID()] = true
			nExited++
		}
	}
	var buf []byte
	skipExited := nExited - rememberExited
	for _, r := range recs {
		switch {
		case r.Kind == recStarted && exited[r.requestID()]:
			continue
		case r.Kind == recExited && skipExited > 0:
			skipExited--
			continue
		}
		l, err := encodeRecord(r)
		if err != nil {
			return nil, 0, err
		}
		buf = append(buf, l...)
	}
	tmp := j.path(gen) + ".tmp"
	nf, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, 0, fmt.Errorf("create spool: %w", err)
	}
	if _, err := nf.Write(buf); err != nil {
		nf.Close()
		return nil, 0, fmt.Errorf("write spool: %w", err)
	}
	if err := nf.Sync(); err != nil {
		nf.Close()
		return nil, 0, fmt.Errorf("sync spool: %w", err)
	}
	if err := os.Rename(tmp, j.path(gen)); err != nil {
		nf.Close()
		return nil, 0, fmt.Errorf("rename spool: %w", err)
	}
	if err := syncDir(j.dir); err != nil {
		nf.Close()
		return nil, 0, err
	}
	return nf, int64(len(buf)), nil
}

func (j *journal) close() {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.ack != nil {
		_ = j.writeAck()
		j.ack.Close()
		j.ack = nil
	}
	if j.f != nil {
		j.f.Close()
		j.f = nil
	}
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("open dir %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync dir %s: %w", dir, err)
	}
	return nil
}
