package netlab

import (
	"context"
	"fmt"
	"strconv"
	"time"
)

// Every fault is a rule in a host's own iptables (INPUT and OUTPUT on eth0
// only, so that a host's processes still reach each other over loopback);
// Heal flushes them all.

// Isolate cuts h off the lab's network: nothing in or out of its eth0.
func (l *Lab) Isolate(ctx context.Context, h *Host) error {
	if err := h.iptables(ctx, "-A", "INPUT", "-i", "eth0", "-j", "DROP"); err != nil {
		return fmt.Errorf("isolate %s: %w", h.Name, err)
	}
	if err := h.iptables(ctx, "-A", "OUTPUT", "-o", "eth0", "-j", "DROP"); err != nil {
		return fmt.Errorf("isolate %s: %w", h.Name, err)
	}
	return nil
}

// Split cuts every link between a host of a and a host of b, both ways;
// hosts on the same side still reach each other.
func (l *Lab) Split(ctx context.Context, a, b []*Host) error {
	for _, x := range a {
		for _, y := range b {
			if err := l.DropOneWay(ctx, x, y); err != nil {
				return fmt.Errorf("split: %w", err)
			}
			if err := l.DropOneWay(ctx, y, x); err != nil {
				return fmt.Errorf("split: %w", err)
			}
		}
	}
	return nil
}

// DropOneWay drops every packet from host from to host to (at both ends,
// as a switch that loses one direction would); the other direction still
// passes. TCP then breaks both ways, slowly: what arrives is never
// acknowledged.
func (l *Lab) DropOneWay(ctx context.Context, from, to *Host) error {
	if err := from.iptables(ctx, "-A", "OUTPUT", "-o", "eth0", "-d", to.Addr, "-j", "DROP"); err != nil {
		return fmt.Errorf("drop %s -> %s: %w", from.Name, to.Name, err)
	}
	if err := to.iptables(ctx, "-A", "INPUT", "-i", "eth0", "-s", from.Addr, "-j", "DROP"); err != nil {
		return fmt.Errorf("drop %s -> %s: %w", from.Name, to.Name, err)
	}
	return nil
}

// Loss drops each packet into or out of h with probability p (0 to 1),
// independently (iptables' statistic match, random mode).
func (l *Lab) Loss(ctx context.Context, h *Host, p float64) error {
	prob := strconv.FormatFloat(p, 'f', 4, 64)
	for _, rule := range [][]string{
		{"-A", "INPUT", "-i", "eth0", "-m", "statistic", "--mode", "random", "--probability", prob, "-j", "DROP"},
		{"-A", "OUTPUT", "-o", "eth0", "-m", "statistic", "--mode", "random", "--probability", prob, "-j", "DROP"},
	} {
		if err := h.iptables(ctx, rule...); err != nil {
			return fmt.Errorf("loss %v on %s: %w", p, h.Name, err)
		}
	}
	return nil
}

// Flap isolates h for down, lets it through for up, and again, until Heal
// or Close. It returns once the first cut is in place.
func (l *Lab) Flap(ctx context.Context, h *Host, down, up time.Duration) error {
	if err := l.Isolate(ctx, h); err != nil {
		return fmt.Errorf("flap %s: %w", h.Name, err)
	}
	fctx, stop := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan struct{})
	l.mu.Lock()
	l.flaps = append(l.flaps, flap{stop, done})
	l.mu.Unlock()
	go func() {
		defer close(done)
		cut := true
		for {
			d := down
			if !cut {
				d = up
			}
			t := time.NewTimer(d)
			select {
			case <-fctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
			var err error
			if cut {
				err = h.flush(fctx)
			} else {
				err = l.Isolate(fctx, h)
			}
			if err == nil {
				cut = !cut
			}
		}
	}()
	return nil
}

// Delay adds d to every chunk of data that the proxies in front of h pass,
// each way (0: none).
func (l *Lab) Delay(h *Host, d time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, p := range l.proxies {
		if p.host == h {
			p.SetDelay(d)
		}
	}
}

// Heal ends every fault: flapping stops, every host's rules are flushed and
// the proxies add no delay.
func (l *Lab) Heal(ctx context.Context) error {
	l.stopFlaps()
	l.mu.Lock()
	for _, p := range l.proxies {
		p.SetDelay(0)
	}
	l.mu.Unlock()
	for _, h := range l.Hosts {
		if err := h.flush(ctx); err != nil {
			return fmt.Errorf("heal: %w", err)
		}
	}
	return nil
}

func (h *Host) flush(ctx context.Context) error {
	if err := h.iptables(ctx, "-F", "INPUT"); err != nil {
		return err
	}
	return h.iptables(ctx, "-F", "OUTPUT")
}

// flap is one flapping link: stop ends it, done is closed once it has.
type flap struct {
	stop context.CancelFunc
	done chan struct{}
}

// stopFlaps ends every flapping link and waits until none touches a rule.
func (l *Lab) stopFlaps() {
	l.mu.Lock()
	flaps := l.flaps
	l.flaps = nil
	l.mu.Unlock()
	for _, f := range flaps {
		f.stop()
		<-f.done
	}
}
