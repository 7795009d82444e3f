package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vmguard/vmguard/events"
	"github.com/vmguard/vmguard/failover"
)

// liveView follows the log and shows the cluster as it changes: on a
// terminal, the status and the latest events redrawn every second; otherwise
// one line per event, as `vmguard events -f` prints them.
type liveView struct {
	out      io.Writer
	terminal bool
	recent   int
	banner   []string // kept at the top of every redraw

	mu    sync.Mutex
	state *failover.State
	lines []string
}

// isTerminal reports whether w is a character device (a terminal).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

func newLiveView(out io.Writer, banner []string) *liveView {
	return &liveView{out: out, terminal: isTerminal(out), recent: 12, banner: banner, state: &failover.State{}}
}

// termRows returns the height of the terminal w is, 0 if unknown.
func termRows(w io.Writer) int {
	f, ok := w.(*os.File)
	if !ok {
		return 0
	}
	ws, err := unix.IoctlGetWinsize(int(f.Fd()), unix.TIOCGWINSZ)
	if err != nil {
		return 0
	}
	return int(ws.Row)
}

// Run follows the log until ctx ends.
func (v *liveView) Run(ctx context.Context, l *events.Log) error {
	done := make(chan error, 1)
	go func() {
		done <- l.Follow(ctx, events.ReadOptions{OnSkip: v.skip}, v.apply)
	}()
	if !v.terminal {
		return <-done
	}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case err := <-done:
			return err
		case <-tick.C:
			v.draw()
		}
	}
}

func (v *liveView) skip(seq uint64, subject string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.state.Skip(seq, subject)
}

func (v *liveView) apply(e events.Event) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.state.Apply(e)
	line := formatEvent(e)
	if !v.terminal {
		_, err := fmt.Fprintln(v.out, line)
		return err
	}
	v.lines = append(v.lines, line)
	if len(v.lines) > v.recent {
		v.lines = v.lines[len(v.lines)-v.recent:]
	}
	return nil
}

// draw clears the terminal and prints the screen.
func (v *liveView) draw() {
	v.mu.Lock()
	screen := v.render(termRows(v.out), time.Now())
	v.mu.Unlock()
	_, _ = v.out.Write(append([]byte("\033[H\033[2J"), screen...))
}

// render lays out one screen of at most rows lines (0: no limit): the
// banner, the status (verbose if it fits, else the short one, else cut with
// a note), and as many of the latest events as fit below it.
func (v *liveView) render(rows int, now time.Time) []byte {
	head := append(slices.Clone(v.banner), fmt.Sprintf("%s — Ctrl-C to stop", now.Format("15:04:05")), "")
	status := func(verbose bool) []string {
		var b bytes.Buffer
		_ = failover.BuildView(v.state).WriteText(&b, verbose)
		return strings.Split(strings.TrimRight(b.String(), "\n"), "\n")
	}
	const minEvents = 3 // the title line and the two latest events
	body := status(true)
	if rows > 0 && len(head)+len(body)+1+minEvents > rows {
		body = status(false)
	}
	if rows > 0 {
		if room := rows - len(head) - 1 - minEvents; len(body) > room {
			cut := max(room-1, 0)
			body = append(body[:cut], fmt.Sprintf("... %d more lines: vmguard status -v", len(body)-cut))
		}
	}
	lines := append(head, body...)
	lines = append(lines, "", "Latest events (vmguard events -f for all):")
	evs := v.lines
	if rows > 0 {
		if room := rows - len(lines); len(evs) > room {
			evs = evs[len(evs)-max(room, 0):]
		}
	}
	lines = append(lines, evs...)
	if rows > 0 && len(lines) > rows {
		lines = lines[:rows]
	}
	// No newline after the last line: on a full screen it would scroll the
	// banner away.
	return []byte(strings.Join(lines, "\n"))
}
