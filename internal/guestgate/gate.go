// Package guestgate is the door guests' events come through when each
// guest sits in an account of its own (vmguard init's nats.conf, see
// internal/guestauth.RenderAccounts). A guest's agent publishes its
// process events as always; its account routes them, as a service
// request, to the control account's subject guestauth.GateSubject(guest,
// subject), where the gate checks each one — a valid event of the right
// type on that subject, written by that guest about itself — limits each
// guest's rate, and appends what passes to the log, answering the agent
// with the log's own acknowledgement. Junk, forgeries and a flood beyond
// the rate are answered with an error and never stored, so a guest can
// neither fill the store nor delay what the control plane writes.
//
// It owns no state but the rate buckets; it must not decide anything
// about packages or nodes.
package guestgate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/vmguard/vmguard/events"
	"github.com/vmguard/vmguard/internal/guestauth"
)

// Defaults of Config.
const (
	// DefaultRate is how many events a second a guest may append on
	// average: far more than an agent writes (two a process start and
	// exit), far less than a store can take.
	DefaultRate = 50
	// DefaultBurst is how many at once (an agent delivering its spool
	// after a reconnect).
	DefaultBurst = 200
	// QueueGroup is the gates' queue group: each server of a cluster runs
	// one, and each event goes to one of them.
	QueueGroup = "vmguard-guestgate"

	appendTimeout = 5 * time.Second
	workers       = 8
	queued        = 256
	summaryEvery  = 10 * time.Second
)

// Config configures a Gate.
type Config struct {
	// Conn is a connection of the control account (required): the gate
	// receives guests' events on it and appends them to the log.
	Conn *nats.Conn
	// Forward, if set, makes this the gate of a host's leaf node (vmguard
	// host --leaf): Conn is the leaf's host account, and what passes is
	// not appended but sent on Forward, a connection to the hub, to the
	// same gate subject, where the hub's gate checks it again and appends
	// it. Only what passes here crosses to the hub, at the guest's rate.
	Forward *nats.Conn
	// Logger receives a summary of what was refused (default: discard).
	Logger *slog.Logger
	// Rate and Burst limit each guest (default DefaultRate, DefaultBurst).
	Rate  float64
	Burst int
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Stats counts what a Gate did.
type Stats struct {
	// Appended were stored (or found stored: a retried id).
	Appended uint64
	// Invalid were refused as not an event the guest may write.
	Invalid uint64
	// Limited were refused over the guest's rate.
	Limited uint64
	// Busy were refused because the gate's queue was full.
	Busy uint64
	// Upstream were passed on (Config.Forward) and refused there; they
	// are not counted as Appended.
	Upstream uint64
}

// Gate checks guests' events and appends them to the log.
type Gate struct {
	cfg                              Config
	codec                            *events.Codec
	limiter                          *Limiter // owned by the subscription's goroutine
	work                             chan job
	appended, invalid, limited, busy atomic.Uint64
	upstream                         atomic.Uint64
	lastWhy                          atomic.Pointer[string] // the last refusal of an invalid event
}

type job struct {
	m          *nats.Msg
	guest, sub string
}

// New returns a Gate.
func New(cfg Config) (*Gate, error) {
	if cfg.Conn == nil {
		return nil, errors.New("new guest gate: connection: missing")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Rate <= 0 {
		cfg.Rate = DefaultRate
	}
	if cfg.Burst <= 0 {
		cfg.Burst = DefaultBurst
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	codec, err := events.NewCodec()
	if err != nil {
		return nil, fmt.Errorf("new guest gate: %w", err)
	}
	return &Gate{cfg: cfg, codec: codec, limiter: NewLimiter(cfg.Rate, cfg.Burst), work: make(chan job, queued)}, nil
}

// Stats returns the counts so far.
func (g *Gate) Stats() Stats {
	return Stats{Appended: g.appended.Load(), Invalid: g.invalid.Load(), Limited: g.limited.Load(), Busy: g.busy.Load(), Upstream: g.upstream.Load()}
}

// Run serves the gate until ctx ends.
func (g *Gate) Run(ctx context.Context) error {
	sub, err := g.cfg.Conn.QueueSubscribe(guestauth.GatePrefix+".>", QueueGroup, g.onMsg)
	if err != nil {
		return fmt.Errorf("guest gate: subscribe: %w", err)
	}
	// What the gate cannot take in is dropped by the connection (a slow
	// consumer), not queued: the agent retries, a flood is lost.
	_ = sub.SetPendingLimits(1024, 8<<20)
	var wg sync.WaitGroup
	wctx, stop := context.WithCancel(context.WithoutCancel(ctx))
	for range workers {
		wg.Go(func() {
			for {
				select {
				case <-wctx.Done():
					return
				case j := <-g.work:
					g.handle(wctx, j)
				}
			}
		})
	}
	tick := time.NewTicker(summaryEvery)
	defer tick.Stop()
	var last Stats
	for {
		select {
		case <-ctx.Done():
			_ = sub.Unsubscribe()
			stop()
			wg.Wait()
			return nil
		case <-tick.C:
			if s := g.Stats(); s.Invalid+s.Limited+s.Busy != last.Invalid+last.Limited+last.Busy {
				why := ""
				if p := g.lastWhy.Load(); p != nil {
					why = *p
				}
				g.cfg.Logger.Warn("guest gate refused events", "invalid", s.Invalid-last.Invalid, "over_rate", s.Limited-last.Limited,
					"busy", s.Busy-last.Busy, "appended", s.Appended-last.Appended, "in", summaryEvery, "last_invalid", why)
				last = s
			}
		}
	}
}

// onMsg runs on the subscription's goroutine: it parses, rate-limits and
// queues, without waiting.
func (g *Gate) onMsg(m *nats.Msg) {
	guest, sub, ok := guestauth.ParseGateSubject(m.Subject)
	if !ok {
		g.invalid.Add(1)
		refuse(m, 400, "not a gate subject")
		return
	}
	if !g.limiter.Allow(guest, g.cfg.Now()) {
		g.limited.Add(1)
		refuse(m, 429, fmt.Sprintf("guest %s is over its rate of %g events a second", guest, g.cfg.Rate))
		return
	}
	select {
	case g.work <- job{m: m, guest: guest, sub: sub}:
	default:
		g.busy.Add(1)
		refuse(m, 503, "guest gate busy")
	}
}

// handle checks one event and appends it.
func (g *Gate) handle(ctx context.Context, j job) {
	if err := Check(g.codec, j.guest, j.sub, j.m.Header, j.m.Data); err != nil {
		g.invalid.Add(1)
		why := "guest " + j.guest + " on " + j.sub + ": " + err.Error()
		g.lastWhy.Store(&why)
		refuse(j.m, 400, err.Error())
		return
	}
	out := &nats.Msg{Subject: j.sub, Header: forwardHeader(j.m.Header), Data: j.m.Data}
	conn := g.cfg.Conn
	if g.cfg.Forward != nil {
		out.Subject, conn = j.m.Subject, g.cfg.Forward
	}
	actx, cancel := context.WithTimeout(ctx, appendTimeout)
	resp, err := conn.RequestMsgWithContext(actx, out)
	cancel()
	if err != nil {
		refuse(j.m, 503, "append: "+err.Error())
		return
	}
	if g.cfg.Forward != nil && refused(resp.Data) {
		g.upstream.Add(1)
	} else {
		g.appended.Add(1)
	}
	if j.m.Reply != "" {
		_ = j.m.RespondMsg(&nats.Msg{Header: resp.Header, Data: resp.Data})
	}
}

// Check returns an error unless a guest may append the message (hdr,
// body) on the log's subject sub: a valid event stored on its own subject,
// a process event whose source is guest's agent and whose guest is guest.
func Check(codec *events.Codec, guest, sub string, hdr nats.Header, body []byte) error {
	e, err := codec.DecodeStored(sub, hdr, body)
	if err != nil {
		return err
	}
	if role, name := events.RoleOf(e.Source); role != events.RoleGuest || name != guest {
		return fmt.Errorf("%w: source %q: guest %s writes as %s", events.ErrInvalid, e.Source, guest, events.GuestSource(guest))
	}
	var about string
	switch d := e.Data.(type) {
	case events.ProcessStarted:
		about = d.Guest
	case events.ProcessExited:
		about = d.Guest
	default:
		return fmt.Errorf("%w: a guest writes process events, not %s", events.ErrInvalid, e.Type())
	}
	if about != guest {
		return fmt.Errorf("%w: guest %s wrote about guest %q", events.ErrInvalid, guest, about)
	}
	return nil
}

// forwardHeader keeps what an event needs of a guest's headers: its id
// (deduplication), content type and binary-mode CloudEvents attributes.
// Anything else a guest sets — an expected sequence, Nats-Rollup, Nats-TTL,
// batch headers — does not reach the log.
func forwardHeader(h nats.Header) nats.Header {
	out := nats.Header{}
	for k, vs := range h {
		switch lk := strings.ToLower(k); {
		case lk == strings.ToLower(nats.MsgIdHdr), lk == "content-type", strings.HasPrefix(lk, "ce-"):
			out[k] = vs
		}
	}
	return out
}

// refused reports whether an answer to an append is an error (a
// JetStream or gate error: {"error": {...}}).
func refused(body []byte) bool {
	var r struct {
		Error *json.RawMessage `json:"error"`
	}
	return json.Unmarshal(body, &r) == nil && r.Error != nil
}

// refuse answers m, if it has a reply subject, with a JetStream publish
// error, which the agent's append returns as an error (and retries).
func refuse(m *nats.Msg, code int, desc string) {
	if m.Reply == "" {
		return
	}
	b, _ := json.Marshal(map[string]any{"error": map[string]any{"code": code, "description": "vmguard guest gate: " + desc}})
	_ = m.Respond(b)
}
