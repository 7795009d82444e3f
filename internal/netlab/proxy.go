package netlab

import (
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Proxy passes TCP connections from a listener to a target, holding each
// chunk of data back by its delay (the kernel here has no netem). Order is
// kept; throughput is not limited.
type Proxy struct {
	host   *Host // whose Delay it follows; nil for a Forward
	ln     net.Listener
	target string
	dialNS string // namespace to dial the target in
	delay  atomic.Int64

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
	wg     sync.WaitGroup
}

// Proxy listens on listen ("addr:port") inside h's namespace and passes
// each connection to target, dialled inside h's namespace too. Lab.Delay(h)
// slows it down; Close or the lab's Close ends it.
func (l *Lab) Proxy(h *Host, listen, target string) (*Proxy, error) {
	var ln net.Listener
	err := inNamespace(h.NS, func() error {
		var err error
		ln, err = net.Listen("tcp", listen)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("proxy on %s %s: %w", h.Name, listen, err)
	}
	return l.serve(&Proxy{host: h, ln: ln, target: target, dialNS: h.NS}), nil
}

// Forward listens on a free loopback port of the calling process's own
// namespace and passes each connection to target inside h's namespace: how
// a test process outside the lab reaches a host's server. No fault of the
// lab applies to it.
func (l *Lab) Forward(h *Host, target string) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("forward to %s %s: %w", h.Name, target, err)
	}
	return l.serve(&Proxy{ln: ln, target: target, dialNS: h.NS}), nil
}

func (l *Lab) serve(p *Proxy) *Proxy {
	p.conns = map[net.Conn]struct{}{}
	l.mu.Lock()
	l.proxies = append(l.proxies, p)
	l.mu.Unlock()
	p.wg.Add(1)
	go p.accept()
	return p
}

// Addr is the address the proxy listens on.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// SetDelay sets how long each chunk is held back, each way.
func (p *Proxy) SetDelay(d time.Duration) { p.delay.Store(int64(d)) }

// Close stops listening and ends every connection.
func (p *Proxy) Close() {
	p.mu.Lock()
	p.closed = true
	_ = p.ln.Close()
	for c := range p.conns {
		_ = c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			p.handle(c)
		}()
	}
}

// track adds c to the open connections, or closes it if the proxy is closed.
func (p *Proxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		_ = c.Close()
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *Proxy) untrack(cs ...net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range cs {
		_ = c.Close()
		delete(p.conns, c)
	}
}

func (p *Proxy) handle(in net.Conn) {
	if !p.track(in) {
		return
	}
	var out net.Conn
	err := inNamespace(p.dialNS, func() error {
		var err error
		out, err = net.DialTimeout("tcp", p.target, 2*time.Second)
		return err
	})
	if err != nil || !p.track(out) {
		p.untrack(in)
		return
	}
	var once sync.Once
	end := func() { once.Do(func() { p.untrack(in, out) }) }
	done := make(chan struct{})
	go func() {
		defer close(done)
		p.pipe(out, in)
		end()
	}()
	p.pipe(in, out)
	end()
	<-done
}

// pipe copies src to dst, each chunk held back by the delay in force when
// it was read.
func (p *Proxy) pipe(dst, src net.Conn) {
	type chunk struct {
		b   []byte
		due time.Time
	}
	ch := make(chan chunk, 512)
	go func() {
		defer close(ch)
		buf := make([]byte, 32*1024)
		for {
			n, err := src.Read(buf)
			if n > 0 {
				ch <- chunk{append([]byte(nil), buf[:n]...), time.Now().Add(time.Duration(p.delay.Load()))}
			}
			if err != nil {
				return
			}
		}
	}()
	for c := range ch {
		if d := time.Until(c.due); d > 0 {
			time.Sleep(d) // the injected latency itself
		}
		if _, err := dst.Write(c.b); err != nil {
			_ = src.Close()
			for range ch { // let the reader end
			}
			return
		}
	}
}

// inNamespace runs fn on an OS thread switched into network namespace ns
// (by name, as ip netns knows it): sockets it opens belong there for good.
// The thread is switched back after, or ends with its goroutine if that
// fails.
func inNamespace(ns string, fn func() error) error {
	runtime.LockOSThread()
	orig, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", syscall.Gettid()))
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("open own namespace: %w", err)
	}
	defer orig.Close()
	target, err := os.Open("/run/netns/" + ns)
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("open namespace %s: %w", ns, err)
	}
	defer target.Close()
	if err := setns(target.Fd()); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("enter namespace %s: %w", ns, err)
	}
	ferr := fn()
	if err := setns(orig.Fd()); err != nil {
		// Stay locked: the runtime ends this thread with the goroutine
		// rather than hand it to another one in the wrong namespace.
		return errors.Join(ferr, fmt.Errorf("leave namespace %s: %w", ns, err))
	}
	runtime.UnlockOSThread()
	return ferr
}

func setns(fd uintptr) error { return unix.Setns(int(fd), unix.CLONE_NEWNET) }
