package guestagent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vmguard/vmguard/events"
)

func startedRec(id string) record {
	return record{Kind: recStarted, ID: "s-" + id, Source: Source("g"), Subject: "web", Time: time.Unix(1, 0).UTC(), Cause: id,
		Started: &events.ProcessStarted{Guest: "g", Service: "svc", PID: 42, RequestID: id, Epoch: 1},
		Proc:    &procStamp{Argv: []string{"sleep", "1"}, StartTicks: 7, BootID: "b"}}
}

func exitedRec(id string) record {
	return record{Kind: recExited, ID: "x-" + id, Source: Source("g"), Subject: "web", Time: time.Unix(2, 0).UTC(), Cause: id,
		Exited: &events.ProcessExited{Guest: "g", Service: "svc", PID: 42, ExitCode: 3, RuntimeMS: 1000, RequestID: id, Epoch: 1}}
}

func ids(recs []record) string {
	var s []string
	for _, r := range recs {
		s = append(s, r.ID)
	}
	return strings.Join(s, " ")
}

func queueIDs(j *journal) string {
	j.mu.Lock()
	defer j.mu.Unlock()
	var s []string
	for _, q := range j.queue {
		s = append(s, q.rec.ID)
	}
	return strings.Join(s, " ")
}

func mustOpen(t *testing.T, dir string) (*journal, []record) {
	t.Helper()
	j, recs, err := openJournal(dir)
	if err != nil {
		t.Fatal(err)
	}
	return j, recs
}

func TestJournalSurvivesReopen(t *testing.T) {
	dir := t.TempDir()
	j, recs := mustOpen(t, dir)
	if len(recs) != 0 {
		t.Fatalf("fresh journal has %d records", len(recs))
	}
	if err := j.append(startedRec("a"), startedRec("b")); err != nil {
		t.Fatal(err)
	}
	if err := j.append(exitedRec("a")); err != nil {
		t.Fatal(err)
	}
	q, _ := j.head()
	j.delivered(q)
	if err := j.saveAck(); err != nil {
		t.Fatal(err)
	}
	j.close()

	j, recs = mustOpen(t, dir)
	defer j.close()
	if got := ids(recs); got != "s-a s-b x-a" {
		t.Errorf("records %q", got)
	}
	if got := queueIDs(j); got != "s-b x-a" {
		t.Errorf("undelivered %q, want s-b x-a", got)
	}
	if ev := recs[2].event(); ev.CauseID != "a" || ev.Type() != events.TypeProcessExited || ev.ID != "x-a" {
		t.Errorf("event %+v", ev)
	}
}

func TestJournalDropsTornTail(t *testing.T) {
	dir := t.TempDir()
	j, _ := mustOpen(t, dir)
	if err := j.append(startedRec("a"), exitedRec("a")); err != nil {
		t.Fatal(err)
	}
	path := j.path(j.gen)
	j.close()
	b, _ := os.ReadFile(path)
	good := len(b)
	// A torn write: half of a record, no newline.
	line, _ := encodeRecord(startedRec("b"))
	if err := os.WriteFile(path, append(b, line[:len(line)/2]...), 0o600); err != nil {
		t.Fatal(err)
	}
	j, recs := mustOpen(t, dir)
	if got := ids(recs); got != "s-a x-a" {
		t.Errorf("records %q", got)
	}
	if st, _ := os.Stat(path); st.Size() != int64(good) {
		t.Errorf("size %d, want the torn tail cut to %d", st.Size(), good)
	}
	if err := j.append(startedRec("c")); err != nil {
		t.Fatal(err)
	}
	j.close()
	j, recs = mustOpen(t, dir)
	defer j.close()
	if got := ids(recs); got != "s-a x-a s-c" {
		t.Errorf("records after append %q", got)
	}
}

func TestJournalSkipsCorruptRecord(t *testing.T) {
	dir := t.TempDir()
	j, _ := mustOpen(t, dir)
	if err := j.append(startedRec("a"), startedRec("b"), startedRec("c")); err != nil {
		t.Fatal(err)
	}
	path := j.path(j.gen)
	j.close()
	b, _ := os.ReadFile(path)
	i := strings.Index(string(b), `"s-b"`)
	b[i+2] = 'X' // checksum mismatch
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	j, recs := mustOpen(t, dir)
	defer j.close()
	if got := ids(recs); got != "s-a s-c" || j.badLines != 1 {
		t.Errorf("records %q, bad %d", got, j.badLines)
	}
}

func TestJournalCompaction(t *testing.T) {
	dir := t.TempDir()
	j, _ := mustOpen(t, dir)
	j.compactAt = 1
	for _, r := range []record{startedRec("a"), startedRec("b"), exitedRec("a"), startedRec("c")} {
		if err := j.append(r); err != nil {
			t.Fatal(err)
		}
	}
	if err := j.maybeCompact(); err != nil {
		t.Fatal(err)
	}
	if j.gen != 1 {
		t.Fatalf("compacted with undelivered records")
	}
	for q, ok := j.head(); ok; q, ok = j.head() {
		j.delivered(q)
	}
	if err := j.maybeCompact(); err != nil {
		t.Fatal(err)
	}
	if j.gen != 2 {
		t.Fatalf("gen %d after compaction, want 2", j.gen)
	}
	// Appends go to the new journal.
	if err := j.append(exitedRec("b")); err != nil {
		t.Fatal(err)
	}
	j.close()
	files, _ := filepath.Glob(filepath.Join(dir, "journal.*"))
	if len(files) != 1 || filepath.Base(files[0]) != "journal.2" {
		t.Errorf("files %v", files)
	}
	j, recs := mustOpen(t, dir)
	defer j.close()
	// Live starts and remembered exits are kept; a's start is gone.
	if got := ids(recs); got != "s-b x-a s-c x-b" {
		t.Errorf("records %q", got)
	}
	if got := queueIDs(j); got != "x-b" {
		t.Errorf("undelivered %q, want x-b", got)
	}
}

func TestJournalGroupCommit(t *testing.T) {
	dir := t.TempDir()
	j, _ := mustOpen(t, dir)
	var wg sync.WaitGroup
	for i := range 200 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := j.append(startedRec(fmt.Sprint(i))); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	queued := queueIDs(j)
	j.close()
	j, recs := mustOpen(t, dir)
	defer j.close()
	if len(recs) != 200 || ids(recs) != queued {
		t.Errorf("%d records; file order and delivery order differ", len(recs))
	}
}

func TestTailOf(t *testing.T) {
	cases := []struct {
		in   string
		cut  bool
		want []string
	}{
		{"", false, nil},
		{"a\nb\n", false, []string{"a", "b"}},
		{"a\r\nb", false, []string{"a", "b"}},
		{"partial\nb\n", true, []string{"b"}},
		{"only\n", true, []string{"only"}},
		{"\xff\n", false, []string{"\uFFFD"}},
	}
	for _, tc := range cases {
		if got := tailOf([]byte(tc.in), tc.cut); strings.Join(got, "|") != strings.Join(tc.want, "|") {
			t.Errorf("tailOf(%q, %v) = %q, want %q", tc.in, tc.cut, got, tc.want)
		}
	}
	var b strings.Builder
	for i := range 30 {
		fmt.Fprintf(&b, "%d\n", i)
	}
	if got := tailOf([]byte(b.String()), false); len(got) != 20 || got[0] != "10" || got[19] != "29" {
		t.Errorf("30 lines: %q", got)
	}
}

func TestCauseOf(t *testing.T) {
	for _, tc := range []struct{ id, svc, cause, want string }{
		{"0190abc/httpd", "httpd", "", "0190abc"},
		{"0190abc", "httpd", "", "0190abc"},
		{"/httpd", "httpd", "", "/httpd"},
		{"x/httpd", "httpd", "explicit", "explicit"},
	} {
		if got := causeOf(RunRequest{RequestID: tc.id, Service: tc.svc, CauseID: tc.cause}); got != tc.want {
			t.Errorf("causeOf(%q, %q, %q) = %q, want %q", tc.id, tc.svc, tc.cause, got, tc.want)
		}
	}
}

// heldSyncs stands in for a journal's fdatasync: each sync says it began
// (entered) and waits for the test's answer (release).
type heldSyncs struct {
	entered chan struct{}
	release chan error
}

func holdSyncs(j *journal) heldSyncs {
	h := heldSyncs{entered: make(chan struct{}), release: make(chan error)}
	j.mu.Lock()
	j.datasync = func(int) error {
		h.entered <- struct{}{}
		return <-h.release
	}
	j.mu.Unlock()
	return h
}

// appendSynced appends r, lets its sync succeed, and checks that the queue
// is then want.
func (h heldSyncs) appendSynced(t *testing.T, j *journal, r record, want string) {
	t.Helper()
	appended := make(chan error, 1)
	go func() { appended <- j.append(r) }()
	<-h.entered
	h.release <- nil
	if err := <-appended; err != nil {
		t.Fatal(err)
	}
	if got := queueIDs(j); got != want {
		t.Fatalf("queue after appending %s %q, want %q", r.ID, got, want)
	}
}

// An exit is queued for delivery as soon as it is written, while its
// fdatasync runs (its append overlaps the sync), but counts as written only
// once the sync is done; a failed sync takes it out of the queue again, and
// the writer's retry queues it once.
func TestJournalExitQueuedDuringSync(t *testing.T) {
	j, _ := mustOpen(t, t.TempDir())
	defer j.close()
	h := holdSyncs(j)
	entered, release := h.entered, h.release
	appended := make(chan error, 1)
	go func() { appended <- j.append(exitedRec("a")) }()
	<-entered
	q, ok := j.head()
	if !ok || q.rec.ID != "x-a" {
		t.Fatalf("exit not queued during its sync: head %q %v", q.rec.ID, ok)
	}
	select {
	case <-q.b.done:
		t.Fatal("exit counted as written before its sync returned")
	default:
	}
	release <- nil
	if err := <-appended; err != nil {
		t.Fatal(err)
	}
	if !q.written(context.Background()) {
		t.Fatal("exit not written after its sync")
	}
	j.delivered(q)

	// A failed sync: the record leaves the queue, the retry is queued once.
	go func() { appended <- j.append(exitedRec("b")) }()
	<-entered
	if got := queueIDs(j); got != "x-b" {
		t.Fatalf("queue during the sync %q", got)
	}
	q, _ = j.head()
	release <- errors.New("disk gone")
	if err := <-appended; err == nil {
		t.Fatal("a failed sync returned no error")
	}
	if q.written(context.Background()) {
		t.Fatal("a record whose sync failed counts as written")
	}
	if got := queueIDs(j); got != "" {
		t.Fatalf("queue after a failed sync %q", got)
	}
	h.appendSynced(t, j, exitedRec("b"), "x-b")
}

// A start appended while an exit's fdatasync runs is written and queued at
// once, after the exit (a restart's start does not wait for the sync), and
// the written callback of the exit runs before its sync. If that sync then
// fails, the exit leaves the queue, the start stays, the journal counts the
// failure (the deliverer starts again from the oldest record), the file
// keeps both, and the exit's retry is queued after the start; reopened, the
// spool reads the exit twice and the start once, in write order.
func TestJournalStartWrittenDuringExitSync(t *testing.T) {
	dir := t.TempDir()
	j, _ := mustOpen(t, dir)
	h := holdSyncs(j)
	entered, release := h.entered, h.release
	wrote := make(chan struct{})
	appended := make(chan error, 1)
	go func() { appended <- j.appendWritten(func() { close(wrote) }, exitedRec("a")) }()
	<-entered
	select {
	case <-wrote:
	default:
		t.Fatal("the exit's written callback did not run before its sync")
	}
	done := make(chan error, 1)
	go func() { done <- j.append(startedRec("b")) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a start waited for the exit's sync")
	}
	if got := queueIDs(j); got != "x-a s-b" {
		t.Fatalf("queue during the sync %q, want the exit then the start", got)
	}
	q, fails, ok := j.next(0)
	if !ok || q.rec.ID != "x-a" || fails != 0 {
		t.Fatalf("next(0) = %q %d %v", q.rec.ID, fails, ok)
	}
	if q2, _, ok := j.next(q.end); !ok || q2.rec.ID != "s-b" {
		t.Fatalf("next past the exit = %q %v, want the start", q2.rec.ID, ok)
	}

	release <- errors.New("disk gone")
	if err := <-appended; err == nil {
		t.Fatal("a failed sync returned no error")
	}
	if got := queueIDs(j); got != "s-b" {
		t.Fatalf("queue after the failed sync %q, want the start alone", got)
	}
	if _, fails, _ := j.next(0); fails != 1 {
		t.Fatalf("failed syncs counted %d, want 1", fails)
	}
	h.appendSynced(t, j, exitedRec("a"), "s-b x-a")
	j.close()
	j2, recs := mustOpen(t, dir)
	defer j2.close()
	if got := ids(recs); got != "x-a s-b x-a" {
		t.Fatalf("reopened spool %q", got)
	}
}
