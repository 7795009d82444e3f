// Package netlab builds a small network of hosts out of Linux network
// namespaces for partition tests: one namespace per host, joined by veth
// pairs to a bridge that lives in a namespace of its own (the machine's own
// network is never touched), with private addresses 10.231.0.<i>/24 that
// exist only inside the namespaces it made. It runs commands in a host
// (`ip netns exec`), cuts and degrades links with iptables inside the
// hosts (a host isolated, a split, one direction dropped, random loss),
// adds latency with a userspace TCP proxy (the kernels here have no
// netem), and tells in which host a process runs.
//
// It owns namespaces, links, firewall rules and proxies; it knows nothing of
// vmguard. Everything it made is removed by Close, and New first removes
// what an earlier run left behind (its process is gone). It needs root,
// `ip` (iproute2) and `iptables`; Available says what is missing.
package netlab

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Prefix starts the name of every namespace netlab makes:
// "vgl<pid>x<random>-<host>". The pid lets a later run tell an abandoned
// lab (its process gone) from one a parallel run still uses.
const Prefix = "vgl"

// Subnet is the hosts' network; host i (from 1) has address 10.231.0.<i>.
const Subnet = "10.231.0.0/24"

// Lab is a set of hosts in network namespaces joined by a bridge.
type Lab struct {
	// ID is this lab's part of every namespace name ("vgl<pid>x<hex>").
	ID string
	// Hosts are the lab's hosts, h1 .. hN.
	Hosts []*Host

	sw string // the namespace holding the bridge

	mu      sync.Mutex
	proxies []*Proxy
	flaps   []flap
}

// Host is one namespace of a Lab: a machine with one interface, eth0.
type Host struct {
	// Name is the host's name in the lab: h1, h2, ...
	Name string
	// NS is its network namespace's name (ip netns).
	NS string
	// Addr is its address on the lab's network.
	Addr string
}

// Available reports why a lab cannot be made here: not root, no `ip`
// with netns support, no `iptables`. Nil means it can.
func Available() error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("network namespaces need root (running as uid %d)", os.Geteuid())
	}
	for _, bin := range []string{"ip", "iptables"} {
		if _, err := exec.LookPath(bin); err != nil {
			return fmt.Errorf("find %s: %w (install iproute2 and iptables)", bin, err)
		}
	}
	if out, err := exec.Command("ip", "netns", "list").CombinedOutput(); err != nil {
		return fmt.Errorf("ip netns list: %v: %s", err, bytes.TrimSpace(out))
	}
	return nil
}

// New makes a lab of n hosts. It first removes the namespaces of labs whose
// process is gone (Sweep). On an error it removes what it made.
func New(ctx context.Context, n int) (*Lab, error) {
	if n < 1 || n > 250 {
		return nil, fmt.Errorf("new lab: %d hosts: want 1 to 250", n)
	}
	if err := Available(); err != nil {
		return nil, fmt.Errorf("new lab: %w", err)
	}
	Sweep(ctx)
	l := &Lab{ID: fmt.Sprintf("%s%dx%04x", Prefix, os.Getpid(), rand.Uint32()&0xffff)}
	l.sw = l.ID + "-sw"
	if err := l.build(ctx, n); err != nil {
		l.Close()
		return nil, fmt.Errorf("new lab: %w", err)
	}
	return l, nil
}

func (l *Lab) build(ctx context.Context, n int) error {
	if err := run(ctx, "ip", "netns", "add", l.sw); err != nil {
		return err
	}
	steps := [][]string{
		{"ip", "-n", l.sw, "link", "add", "br0", "type", "bridge"},
		{"ip", "-n", l.sw, "link", "set", "br0", "up"},
		{"ip", "-n", l.sw, "link", "set", "lo", "up"},
	}
	for i := 1; i <= n; i++ {
		h := &Host{Name: fmt.Sprintf("h%d", i), NS: fmt.Sprintf("%s-h%d", l.ID, i), Addr: fmt.Sprintf("10.231.0.%d", i)}
		if err := run(ctx, "ip", "netns", "add", h.NS); err != nil {
			return err
		}
		l.Hosts = append(l.Hosts, h)
		port := "p" + strconv.Itoa(i)
		steps = append(steps,
			[]string{"ip", "-n", l.sw, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", h.NS},
			[]string{"ip", "-n", l.sw, "link", "set", port, "master", "br0", "up"},
			[]string{"ip", "-n", h.NS, "addr", "add", h.Addr + "/24", "dev", "eth0"},
			[]string{"ip", "-n", h.NS, "link", "set", "eth0", "up"},
			[]string{"ip", "-n", h.NS, "link", "set", "lo", "up"},
		)
	}
	for _, s := range steps {
		if err := run(ctx, s[0], s[1:]...); err != nil {
			return err
		}
	}
	return nil
}

// Host returns the host named name (h1 ...), or nil.
func (l *Lab) Host(name string) *Host {
	for _, h := range l.Hosts {
		if h.Name == name {
			return h
		}
	}
	return nil
}

// Close stops the lab's flapping links and proxies, kills every process
// that still runs in its namespaces and deletes them. It is safe to call
// more than once.
func (l *Lab) Close() {
	l.stopFlaps()
	l.mu.Lock()
	proxies := l.proxies
	l.proxies = nil
	l.mu.Unlock()
	for _, p := range proxies {
		p.Close()
	}
	names := []string{l.sw}
	for _, h := range l.Hosts {
		names = append(names, h.NS)
	}
	removeNamespaces(context.Background(), names)
}

// Sweep removes every namespace named with Prefix whose lab's process is
// gone, killing what still runs in it: what a test that was killed left
// behind. Labs of live processes (parallel runs) are left alone.
func Sweep(ctx context.Context) {
	out, err := exec.CommandContext(ctx, "ip", "netns", "list").Output()
	if err != nil {
		return
	}
	var stale []string
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || !strings.HasPrefix(f[0], Prefix) {
			continue
		}
		pidPart, _, ok := strings.Cut(strings.TrimPrefix(f[0], Prefix), "x")
		pid, err := strconv.Atoi(pidPart)
		if !ok || err != nil {
			continue // not one of ours
		}
		if pid != os.Getpid() && syscall.Kill(pid, 0) == syscall.ESRCH {
			stale = append(stale, f[0])
		}
	}
	removeNamespaces(ctx, stale)
}

// removeNamespaces kills every process in each namespace, then deletes it.
func removeNamespaces(ctx context.Context, names []string) {
	for _, ns := range names {
		for range 50 {
			pids := nsPIDs(ctx, ns)
			if len(pids) == 0 {
				break
			}
			for _, pid := range pids {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
			time.Sleep(20 * time.Millisecond) // let the kernel reap them before deleting
		}
		_ = run(ctx, "ip", "netns", "del", ns)
	}
}

// nsPIDs returns the processes that run in namespace ns.
func nsPIDs(ctx context.Context, ns string) []int {
	out, err := exec.CommandContext(ctx, "ip", "netns", "pids", ns).Output()
	if err != nil {
		return nil
	}
	var pids []int
	for _, f := range strings.Fields(string(out)) {
		if pid, err := strconv.Atoi(f); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids
}

// Command returns a command that runs name with args inside host h's
// network namespace. Its pid is the program's own (ip netns exec execs it).
func (h *Host) Command(name string, args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", h.NS, name}, args...)...)
}

// PIDs returns the processes that run in h's namespace now.
func (h *Host) PIDs(ctx context.Context) []int { return nsPIDs(ctx, h.NS) }

func (h *Host) iptables(ctx context.Context, args ...string) error {
	return run(ctx, "ip", append([]string{"netns", "exec", h.NS, "iptables", "-w", "5"}, args...)...)
}

// run runs a command and returns its output in the error if it fails.
func run(ctx context.Context, name string, args ...string) error {
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}
