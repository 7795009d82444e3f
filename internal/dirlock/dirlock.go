// Package dirlock gives a directory one owner at a time. A store or state
// directory that two processes write at once is corrupted silently (two
// JetStream servers on one store, two host managers on one node's files),
// so every vmguard command that owns a directory takes its lock first and
// refuses to start while another process holds it, naming that process.
//
// The lock is an exclusive flock(2) on <dir>/.vmguard.lock: the kernel drops
// it when its holder exits, even by kill -9, so a stale lock never needs
// clearing by hand. The file holds who took it (what, host, pid, since) for
// the message a refused newcomer prints; that text is informative only.
// It must not be used for anything but exclusion: it does not fence a
// process on another machine.
package dirlock

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// FileName is the lock file inside a locked directory.
const FileName = ".vmguard.lock"

// ErrHeld is matched (errors.Is) by the error of a lock held elsewhere.
var ErrHeld = errors.New("directory in use")

// Holder says who holds a lock.
type Holder struct {
	What  string    `json:"what"` // the command, e.g. "vmguard up"
	Host  string    `json:"host"`
	PID   int       `json:"pid"`
	Since time.Time `json:"since"`
}

// String names the holder for an operator.
func (h Holder) String() string {
	if h.PID == 0 {
		return "another process (it left no name)"
	}
	return fmt.Sprintf("%s (pid %d on %s, since %s)", h.What, h.PID, h.Host, h.Since.Local().Format(time.DateTime))
}

// HeldError is the error of a lock another process holds.
type HeldError struct {
	Dir    string
	Holder Holder
}

func (e *HeldError) Error() string {
	return fmt.Sprintf("%s is in use by %s; stop it first, or use another directory", e.Dir, e.Holder)
}

// Unwrap makes a HeldError match ErrHeld.
func (e *HeldError) Unwrap() error { return ErrHeld }

// Lock is a held directory lock.
type Lock struct {
	f *os.File
}

// Acquire creates dir if needed and locks it for what (a command name shown
// to whoever is refused). It does not wait: a lock held by another process,
// or by another Acquire in this one, is a *HeldError.
func Acquire(dir, what string) (*Lock, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("create %s: %w", dir, err)
	}
	path := filepath.Join(dir, FileName)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open lock %s: %w", path, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, &HeldError{Dir: dir, Holder: read(path)}
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	host, _ := os.Hostname()
	b, _ := json.Marshal(Holder{What: what, Host: host, PID: os.Getpid(), Since: time.Now().UTC().Truncate(time.Second)})
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt(append(b, '\n'), 0)
	}
	return &Lock{f: f}, nil
}

// Release unlocks the directory. The holder's name stays in the file; it is
// only read while the lock is held.
func (l *Lock) Release() {
	if l == nil || l.f == nil {
		return
	}
	_ = syscall.Flock(int(l.f.Fd()), syscall.LOCK_UN)
	_ = l.f.Close()
	l.f = nil
}

// read returns the holder named in a lock file, or the zero Holder.
func read(path string) Holder {
	var h Holder
	b, err := os.ReadFile(path)
	if err != nil || len(b) > 4096 {
		return Holder{}
	}
	if json.Unmarshal(b, &h) != nil {
		return Holder{}
	}
	return h
}
