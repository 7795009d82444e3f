package guestagent

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Output bounds of ExitInfo.Output and the process.exited event.
const (
	tailLines = 20
	tailBytes = 4 << 10
)

// drainTimeout bounds how long an exit report waits for the output pipe to
// close after the process group is gone (a descendant that left the group may
// hold it open).
const drainTimeout = 100 * time.Millisecond

// readBufSize is the size of the pooled buffers output is read into.
const readBufSize = 16 << 10

// svcKey names a service.
type svcKey struct{ pkg, svc string }

// proc is one process the agent started (or, after a restart, remembers).
// Fields below mu are guarded by Agent.mu.
type proc struct {
	req         RunRequest // Env cleared after start
	cause       string
	haltTimeout time.Duration
	startedID   string
	ready       chan struct{} // closed once started or failed
	done        chan struct{} // closed once the exit is spooled
	freed       chan struct{} // closed once the exit is written (Agent.release); nil for a remembered exit
	startErr    error         // set before ready is closed

	// Set before ready is closed, read-only after.
	pid        int
	startTicks uint64
	started    time.Time
	pidfd      *os.File // nil when the kernel has no pidfd
	out        *output

	// Guarded by Agent.mu.
	state      string
	reaped     bool
	exiting    bool // reaped, exit being spooled
	stopReason string
	exit       *ExitInfo
	killTimer  *time.Timer
}

// signal sends sig to the process group and to the process itself. The
// caller holds Agent.mu and has checked !reaped, so the pid (and so the
// group id) still names our process: an unreaped child's pid is not reused.
func (p *proc) signal(sig syscall.Signal) {
	_ = syscall.Kill(-p.pid, sig)
	_ = syscall.Kill(p.pid, sig)
}

// siginfoChild is the SIGCHLD part of siginfo_t, as filled by waitid.
// (MIPS swaps errno and code; vmguard does not build for it.)
type siginfoChild struct {
	Signo  int32
	Errno  int32
	Code   int32
	_      [is64bit]int32
	Pid    int32
	UID    uint32
	Status int32
	_      [128 - (6+is64bit)*4]byte
}

const is64bit = ^uint(0) >> 63

// si_code values of SIGCHLD.
const (
	cldExited = 1
	cldKilled = 2
	cldDumped = 3
)

// outcome returns the exit code and the name of the terminating signal.
func (s *siginfoChild) outcome() (code int, sig string) {
	switch s.Code {
	case cldKilled, cldDumped:
		return -1, unix.SignalName(syscall.Signal(s.Status))
	}
	return int(s.Status), ""
}

func waitid(idtype, id int, info *siginfoChild, options int) error {
	for {
		_, _, e := syscall.Syscall6(syscall.SYS_WAITID, uintptr(idtype), uintptr(id),
			uintptr(unsafe.Pointer(info)), uintptr(options), 0, 0)
		if e == syscall.EINTR {
			continue
		}
		if e != 0 {
			return e
		}
		return nil
	}
}

// waitExited blocks until the process has exited, without reaping it (so
// its pid and process group id stay ours), and returns how it ended. With a
// pidfd it parks in the netpoller instead of holding an OS thread.
func (p *proc) waitExited() (siginfoChild, error) {
	var info siginfoChild
	if p.pidfd == nil {
		err := waitid(unix.P_PID, p.pid, &info, unix.WEXITED|unix.WNOWAIT)
		return info, err
	}
	rc, err := p.pidfd.SyscallConn()
	if err != nil {
		return info, fmt.Errorf("pidfd: %w", err)
	}
	var werr error
	err = rc.Read(func(fd uintptr) bool {
		info = siginfoChild{}
		werr = waitid(unix.P_PIDFD, int(fd), &info, unix.WEXITED|unix.WNOHANG|unix.WNOWAIT)
		if errors.Is(werr, syscall.EAGAIN) {
			werr = nil
			return false
		}
		return werr != nil || info.Pid != 0
	})
	if err != nil {
		return info, fmt.Errorf("wait pidfd: %w", err)
	}
	return info, werr
}

// reap collects the exited process. The caller holds Agent.mu.
func (p *proc) reap() {
	var info siginfoChild
	if p.pidfd != nil {
		rc, err := p.pidfd.SyscallConn()
		if err == nil {
			_ = rc.Control(func(fd uintptr) {
				_ = waitid(unix.P_PIDFD, int(fd), &info, unix.WEXITED)
			})
		}
	} else {
		_ = waitid(unix.P_PID, p.pid, &info, unix.WEXITED)
	}
	p.reaped = true
}

// strayKiller kills, after processes the agent started have ended, the
// processes that carry their markers: one background scan of /proc at a
// time for every marker queued meanwhile, so that a thousand stops cost a
// few scans, not a thousand, and no exit report waits for one. The zero
// value is ready to use.
type strayKiller struct {
	mu      sync.Mutex
	pending map[string]bool
	running bool
	// scans counts the scans done (tests read it).
	scans int
}

// kill queues marker for the next scan and starts one unless one runs.
func (k *strayKiller) kill(marker string) {
	if marker == "" {
		return
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.pending == nil {
		k.pending = map[string]bool{}
	}
	k.pending[marker] = true
	if !k.running {
		k.running = true
		go k.run()
	}
}

// strayDelay is how long a scan waits before it starts: the exit that
// queued the marker is spooled and published, and a restart's replacement
// forked, before the scan takes a core (in a restart loop, one scan then
// serves several exits).
const strayDelay = 10 * time.Millisecond

func (k *strayKiller) run() {
	for {
		time.Sleep(strayDelay)
		k.mu.Lock()
		batch := k.pending
		k.pending = nil
		if len(batch) == 0 {
			k.running = false
			k.mu.Unlock()
			return
		}
		k.scans++
		k.mu.Unlock()
		killMarked(batch)
	}
}

// killMarked kills, with SIGKILL, every process whose environment carries
// markerEnv=<one of markers>: what is left of processes the agent started
// once they have ended, wherever their descendants went (another process
// group, another session, reparented to init). Each candidate is opened as
// a pidfd before its environment is read and is signalled through it, so a
// pid reused in between is never signalled; without pidfds (old kernels)
// it signals by pid. It returns how many processes it signalled.
func killMarked(markers map[string]bool) int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return 0
	}
	self := os.Getpid()
	prefix := []byte(markerEnv + "=")
	killed := 0
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid <= 1 || pid == self {
			continue
		}
		fd, err := unix.PidfdOpen(pid, 0)
		opened := err == nil
		if !opened && !errors.Is(err, syscall.ENOSYS) {
			continue // gone already
		}
		if m, ok := envValueOf(pid, prefix); ok && markers[m] {
			if opened {
				err = unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0)
			} else {
				err = syscall.Kill(pid, syscall.SIGKILL)
			}
			if err == nil {
				killed++
			}
		}
		if opened {
			unix.Close(fd)
		}
	}
	return killed
}

// envValueOf returns the value of the first item of pid's initial
// environment that starts with prefix (NAME=).
func envValueOf(pid int, prefix []byte) (string, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/environ")
	if err != nil {
		return "", false
	}
	for len(b) > 0 {
		item := b
		if i := bytes.IndexByte(b, 0); i >= 0 {
			item, b = b[:i], b[i+1:]
		} else {
			b = nil
		}
		if bytes.HasPrefix(item, prefix) {
			return string(item[len(prefix):]), true
		}
	}
	return "", false
}

// spawnSpec is what spawn needs beyond the request.
type spawnSpec struct {
	env    []string
	stdin  uintptr
	pool   *sync.Pool
	log    *serviceLog
	header string
}

// spawn starts the process in a new process group with SIGKILL as its
// parent-death signal, stdout and stderr into one pipe.
//
// The parent-death signal fires when the OS thread that forked exits, not
// only the agent: nothing in the agent may call runtime.LockOSThread
// without unlocking, or Go would end such a thread.
func spawn(req RunRequest, s spawnSpec) (pid int, pidfd *os.File, out *output, err error) {
	path, err := lookPath(req.Argv[0], envValue(s.env, "PATH"))
	if err != nil {
		return 0, nil, nil, err
	}
	var fds [2]int
	if err := unix.Pipe2(fds[:], unix.O_CLOEXEC); err != nil {
		return 0, nil, nil, fmt.Errorf("create output pipe: %w", err)
	}
	if err := unix.SetNonblock(fds[0], true); err != nil {
		unix.Close(fds[0])
		unix.Close(fds[1])
		return 0, nil, nil, fmt.Errorf("create output pipe: %w", err)
	}
	pfd := -1
	attr := &syscall.ProcAttr{
		Dir:   req.Dir,
		Env:   s.env,
		Files: []uintptr{s.stdin, uintptr(fds[1]), uintptr(fds[1])},
		Sys: &syscall.SysProcAttr{
			Setpgid:   true,
			Pdeathsig: syscall.SIGKILL,
			PidFD:     &pfd,
		},
	}
	pid, err = syscall.ForkExec(path, req.Argv, attr)
	unix.Close(fds[1])
	if err != nil {
		unix.Close(fds[0])
		return 0, nil, nil, fmt.Errorf("exec %s: %w", req.Argv[0], err)
	}
	if pfd >= 0 {
		if err := unix.SetNonblock(pfd, true); err == nil {
			pidfd = os.NewFile(uintptr(pfd), "pidfd")
		} else {
			unix.Close(pfd)
		}
	}
	out = &output{
		f:      os.NewFile(uintptr(fds[0]), "output"),
		pool:   s.pool,
		log:    s.log,
		header: s.header,
		done:   make(chan struct{}),
	}
	return pid, pidfd, out, nil
}

// lookPath resolves a command without a '/' in pathEnv; others are left to
// execve (relative ones resolve against the working directory).
func lookPath(file, pathEnv string) (string, error) {
	if strings.Contains(file, "/") {
		return file, nil
	}
	for _, dir := range filepath.SplitList(pathEnv) {
		if dir == "" {
			dir = "."
		}
		if p, err := exec.LookPath(filepath.Join(dir, file)); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("exec %s: executable file not found in PATH %q", file, pathEnv)
}

func envValue(env []string, name string) string {
	for i := len(env) - 1; i >= 0; i-- {
		if v, ok := strings.CutPrefix(env[i], name+"="); ok {
			return v
		}
	}
	return ""
}

// output reads a process's stdout and stderr: into its service log file
// and a bounded tail for the exit report. Reads park in the netpoller and
// borrow a pooled buffer only while data is ready, so idle processes cost no
// buffer.
type output struct {
	f      *os.File
	pool   *sync.Pool
	log    *serviceLog
	header string
	done   chan struct{} // closed when the reader returns

	mu      sync.Mutex
	tail    []byte
	wrapped bool
	opened  bool
}

// run reads until EOF or until f is closed.
func (o *output) run() {
	defer close(o.done)
	rc, err := o.f.SyscallConn()
	if err != nil {
		return
	}
	for {
		var (
			buf  *[]byte
			n    int
			rerr error
		)
		err := rc.Read(func(fd uintptr) bool {
			b := o.pool.Get().(*[]byte)
			for {
				n, rerr = unix.Read(int(fd), *b)
				if rerr != syscall.EINTR {
					break
				}
			}
			if rerr == syscall.EAGAIN {
				o.pool.Put(b)
				return false
			}
			buf = b
			return true
		})
		if err != nil || rerr != nil || n <= 0 {
			if buf != nil {
				o.pool.Put(buf)
			}
			return
		}
		o.consume((*buf)[:n])
		o.pool.Put(buf)
	}
}

func (o *output) consume(p []byte) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.log != nil {
		if !o.opened {
			o.opened = true
			o.log.write([]byte(o.header))
		}
		o.log.write(p)
	}
	o.tail = append(o.tail, p...)
	if len(o.tail) > 2*tailBytes {
		n := copy(o.tail, o.tail[len(o.tail)-tailBytes:])
		o.tail = o.tail[:n]
		o.wrapped = true
	}
}

// finish waits for the reader (closing the pipe after drainTimeout), writes
// the footer and returns the last lines.
func (o *output) finish(footer string) []string {
	t := time.NewTimer(drainTimeout)
	select {
	case <-o.done:
		t.Stop()
	case <-t.C:
		o.f.Close()
		<-o.done
	}
	o.f.Close()
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.log != nil && o.opened {
		o.log.write([]byte(footer))
		o.log.close()
	}
	return tailOf(o.tail, o.wrapped || len(o.tail) > tailBytes)
}

// tailOf returns the last tailLines lines of b, at most tailBytes in all,
// dropping a first line cut by the bound.
func tailOf(b []byte, cut bool) []string {
	if len(b) > tailBytes {
		b = b[len(b)-tailBytes:]
		cut = true
	}
	b = bytes.TrimRight(b, "\n")
	if len(b) == 0 {
		return nil
	}
	lines := strings.Split(string(b), "\n")
	if cut && len(lines) > 1 {
		lines = lines[1:]
	}
	if len(lines) > tailLines {
		lines = lines[len(lines)-tailLines:]
	}
	for i, l := range lines {
		lines[i] = strings.ToValidUTF8(strings.TrimSuffix(l, "\r"), "\uFFFD")
	}
	return lines
}

// serviceLog is a per-service output file with a size cap: past it the file
// is renamed to <name>.1 (replacing an older one) and a new one begun.
type serviceLog struct {
	path string
	max  int64
	f    *os.File
	size int64
	err  bool // stop trying after an error; the tail still works
}

func (l *serviceLog) write(p []byte) {
	if l.err {
		return
	}
	if l.f == nil {
		if err := os.MkdirAll(filepath.Dir(l.path), 0o700); err != nil {
			l.err = true
			return
		}
		f, err := os.OpenFile(l.path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
		if err != nil {
			l.err = true
			return
		}
		st, err := f.Stat()
		if err != nil {
			f.Close()
			l.err = true
			return
		}
		l.f, l.size = f, st.Size()
	}
	for len(p) > 0 {
		room := l.max - l.size
		if room <= 0 {
			l.f.Close()
			l.f = nil
			if err := os.Rename(l.path, l.path+".1"); err != nil {
				l.err = true
				return
			}
			l.write(p)
			return
		}
		chunk := p[:min(int64(len(p)), room)]
		n, err := l.f.Write(chunk)
		l.size += int64(n)
		if err != nil {
			l.err = true
			return
		}
		p = p[len(chunk):]
	}
}

func (l *serviceLog) close() {
	if l.f != nil {
		l.f.Close()
		l.f = nil
	}
}

// procStartTicks returns field 22 of /proc/<pid>/stat: the start time in
// clock ticks since boot, which with the boot id tells a pid's incarnation.
func procStartTicks(pid int) (uint64, error) {
	st, err := readProcStat(pid)
	if err != nil {
		return 0, err
	}
	return st.startTicks, nil
}

// procStat holds the fields of /proc/<pid>/stat the agent uses.
type procStat struct {
	pgrp       int
	startTicks uint64
}

func readProcStat(pid int) (procStat, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return procStat{}, err
	}
	// The command name (field 2) is in parentheses and may hold spaces.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return procStat{}, fmt.Errorf("parse /proc/%d/stat", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state); pgrp is field 5, starttime field 22.
	if len(f) < 20 {
		return procStat{}, fmt.Errorf("parse /proc/%d/stat", pid)
	}
	pgrp, err := strconv.Atoi(f[2])
	if err != nil {
		return procStat{}, fmt.Errorf("parse /proc/%d/stat: %w", pid, err)
	}
	start, err := strconv.ParseUint(f[19], 10, 64)
	if err != nil {
		return procStat{}, fmt.Errorf("parse /proc/%d/stat: %w", pid, err)
	}
	return procStat{pgrp: pgrp, startTicks: start}, nil
}

func readBootID() string {
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}
