package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
)

// connWatch counts what the embedded server and the benchmark's own NATS
// connections report (slow consumers, closed connections, disconnects),
// so that a part cut off from the server is explained rather than
// guessed. The server's warnings and errors also go, one a line, to a
// file.
type connWatch struct {
	mu     sync.Mutex
	file   *os.File
	w      *bufio.Writer
	server map[string]int // server warnings and errors by kind
	client map[string]int // "<connection>: <error>" of the benchmark's connections
}

// newConnWatch writes the server's log to path.
func newConnWatch(path string) (*connWatch, error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("create server log: %w", err)
	}
	return &connWatch{file: f, w: bufio.NewWriter(f), server: map[string]int{}, client: map[string]int{}}, nil
}

// clientPrefix is how nats-server names a connection in front of its
// messages ("127.0.0.1:56458 - cid:4783 - "); digits vary by connection.
var (
	clientPrefix = regexp.MustCompile(`^[^ ]+ - [a-z]+:\d+( - "[^"]*")? - `)
	apiName      = regexp.MustCompile(`(\$JS\.API\.[A-Z.]+\.VMGUARD\.)[A-Za-z0-9]+|(_R_\.)[A-Za-z0-9]+\.[A-Za-z0-9]+`)
	digits       = regexp.MustCompile(`\d+`)
)

// kind is a server message with what varies from one connection to the
// next taken out, cut to fit a summary line.
func kind(msg string) string {
	k := clientPrefix.ReplaceAllString(msg, "")
	k = digits.ReplaceAllString(apiName.ReplaceAllString(k, "${1}${2}*"), "N")
	if len(k) > 140 {
		k = k[:140] + "..."
	}
	return k
}

func (cw *connWatch) line(level, format string, v ...any) {
	msg := fmt.Sprintf(format, v...)
	cw.mu.Lock()
	defer cw.mu.Unlock()
	fmt.Fprintf(cw.w, "%s [%s] %s\n", time.Now().Format("15:04:05.000"), level, msg)
	_ = cw.w.Flush() // the file is read while the benchmark runs
	if level != "INF" {
		cw.server[level+" "+kind(msg)]++
	}
}

// The server.Logger methods: notices go to the file, warnings and errors
// are counted too.
func (cw *connWatch) Noticef(format string, v ...any) { cw.line("INF", format, v...) }
func (cw *connWatch) Warnf(format string, v ...any)   { cw.line("WRN", format, v...) }
func (cw *connWatch) Errorf(format string, v ...any)  { cw.line("ERR", format, v...) }
func (cw *connWatch) Fatalf(format string, v ...any)  { cw.line("FTL", format, v...) }
func (cw *connWatch) Debugf(string, ...any)           {}
func (cw *connWatch) Tracef(string, ...any)           {}

// watch counts nc's asynchronous errors (a slow consumer on the client's
// side drops messages) and disconnects under name.
func (cw *connWatch) watch(nc *nats.Conn, name string) {
	count := func(what string) {
		cw.mu.Lock()
		cw.client[name+": "+kind(what)]++
		cw.mu.Unlock()
	}
	nc.SetErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { count(err.Error()) })
	nc.SetDisconnectErrHandler(func(_ *nats.Conn, err error) {
		if err != nil {
			count("disconnected: " + err.Error())
		}
	})
}

// summary writes what was counted, most frequent first, and closes the
// file.
func (cw *connWatch) summary(out io.Writer, path string) {
	cw.mu.Lock()
	defer cw.mu.Unlock()
	_ = cw.w.Flush()
	_ = cw.file.Close()
	n := 0
	for _, v := range cw.server {
		n += v
	}
	m := 0
	for _, v := range cw.client {
		m += v
	}
	fmt.Fprintf(out, "NATS: the embedded server logged %d warnings and errors (its log: %s); the benchmark's connections reported %d errors and disconnects\n", n, path, m)
	for _, counts := range []map[string]int{cw.server, cw.client} {
		keys := make([]string, 0, len(counts))
		for k := range counts {
			keys = append(keys, k)
		}
		sort.Slice(keys, func(i, j int) bool {
			return counts[keys[i]] > counts[keys[j]] || counts[keys[i]] == counts[keys[j]] && keys[i] < keys[j]
		})
		for i, k := range keys {
			if i == 10 {
				fmt.Fprintf(out, "   ... %d more kinds\n", len(keys)-10)
				break
			}
			fmt.Fprintf(out, "  %6d  %s\n", counts[k], k)
		}
	}
}

// controllerProc is the failover controller run as its own OS process
// (`vmguard failover`), so that its memory is measured alone.
type controllerProc struct {
	cmd  *exec.Cmd
	done chan error
}

// startController runs bin as `vmguard failover` against url, its log in
// logPath, until stop.
func startController(bin, url, logPath string) (*controllerProc, error) {
	f, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("create controller log: %w", err)
	}
	cmd := exec.Command(bin, "failover", "--nats", url, "--id", "bench")
	cmd.Stdout, cmd.Stderr = f, f
	// The controller reconnects forever: it must not outlive a benchmark
	// that is killed (a test run's timeout) and keep retrying.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("start controller %s: %w", bin, err)
	}
	p := &controllerProc{cmd: cmd, done: make(chan error, 1)}
	go func() { p.done <- cmd.Wait(); f.Close() }()
	return p, nil
}

// stop ends the controller cleanly (SIGTERM: it writes its snapshot and
// steps down), killing it after 10 s.
func (p *controllerProc) stop() {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// exited reports whether the controller has ended, and how.
func (p *controllerProc) exited() (bool, error) {
	select {
	case err := <-p.done:
		p.done <- err
		return true, err
	default:
		return false, nil
	}
}

// procMem returns the resident set size and its peak (VmRSS, VmHWM) in
// bytes of the process pid ("self" for this one); 0 where unknown.
func procMem(pid string) (rss, hwm int64) {
	b, err := os.ReadFile("/proc/" + pid + "/status")
	if err != nil {
		return 0, 0
	}
	field := func(line, name string) (int64, bool) {
		v, ok := strings.CutPrefix(line, name+":")
		if !ok {
			return 0, false
		}
		kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
		return kb << 10, true
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := field(line, "VmRSS"); ok {
			rss = v
		}
		if v, ok := field(line, "VmHWM"); ok {
			hwm = v
		}
	}
	return rss, hwm
}

// connect opens a connection to url named name whose errors cw counts.
func (cw *connWatch) connect(url, name string) (*nats.Conn, error) {
	nc, err := nats.Connect(url, nats.Name(name), nats.MaxReconnects(-1), nats.ReconnectWait(250*time.Millisecond))
	if err != nil {
		return nil, fmt.Errorf("connect %s: %w", name, err)
	}
	cw.watch(nc, name)
	return nc, nil
}
