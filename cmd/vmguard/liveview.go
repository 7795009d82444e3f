package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

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

func newLiveView(out io.Writer) *liveView {
	return &liveView{out: out, terminal: isTerminal(out), recent: 12, state: &failover.State{}}
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

// draw clears the terminal and prints the status and the latest events.
func (v *liveView) draw() {
	v.mu.Lock()
	defer v.mu.Unlock()
	var b bytes.Buffer
	b.WriteString("\033[H\033[2J")
	fmt.Fprintf(&b, "vmguard up — %s — Ctrl-C to stop\n\n", time.Now().Format("15:04:05"))
	_ = failover.BuildView(v.state).WriteText(&b, true)
	b.WriteString("\nLatest events (vmguard events -f for all):\n")
	for _, l := range v.lines {
		b.WriteString(l)
		b.WriteByte('\n')
	}
	_, _ = v.out.Write(b.Bytes())
}
