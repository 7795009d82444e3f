package lease

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// ProbeKey is the key a controller instance (id, a KV-key-safe string such
// as a UUID) writes to probe the lease bucket. It holds a dot, which no node
// name may, so it never shadows a node's lease; the bucket's TTL removes it
// once its controller stops.
func ProbeKey(id string) string { return "_probe." + id }

// Prober writes its controller's probe key into the lease bucket every
// Gap/4 (each write bounded by Gap) and feeds the outcomes to a Judge, so
// that the controller knows whether, and since when, the store could take
// renewals. Create it with NewProber, run it with Run, ask it with Decide.
// It runs on every controller instance, leading or not, so that a standby
// that takes over already knows the store's recent past.
type Prober struct {
	js     jetstream.JetStream
	key    string
	clock  Clock
	logger *slog.Logger

	mu    sync.Mutex
	judge Judge
}

// NewProber returns a Prober writing ProbeKey(id) through js, reading the
// time from clock.
func NewProber(js jetstream.JetStream, id string, clock Clock, logger *slog.Logger) *Prober {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Prober{js: js, key: ProbeKey(id), clock: clock, logger: logger}
}

// SetTTL sets the lease TTL (node_timeout) the judgement uses.
func (p *Prober) SetTTL(ttl time.Duration) {
	p.mu.Lock()
	p.judge.TTL = ttl
	p.mu.Unlock()
}

// Decide returns the Judge's verdict on a lease key found missing at now
// (see Judge.Decide), and since when the store is known writable.
func (p *Prober) Decide(now time.Time) (Verdict, time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.judge.Decide(now), p.judge.WritableSince(now)
}

// Run probes until ctx ends.
func (p *Prober) Run(ctx context.Context) {
	var (
		kv      jetstream.KeyValue
		failing bool
	)
	for ctx.Err() == nil {
		p.mu.Lock()
		ttl := p.judge.TTL
		p.mu.Unlock()
		wait := 250 * time.Millisecond // no TTL known yet
		if ttl > 0 {
			gap := ProbeGap(ttl)
			wait = ProbeEvery(ttl)
			sent := p.clock.Now()
			err := p.probe(ctx, &kv, ttl, gap)
			done := p.clock.Now()
			if ctx.Err() != nil {
				return
			}
			p.mu.Lock()
			p.judge.Probed(sent, done, err == nil)
			p.mu.Unlock()
			switch {
			case err != nil && !failing:
				failing = true
				p.logger.Warn("lease store takes no writes; no node is declared lost until it has taken them for node_timeout "+
					"(if it persists: this controller's NATS user must be allowed to publish to $KV."+Bucket+"._probe.>)", "err", err)
			case err == nil && failing:
				failing = false
				p.logger.Info("lease store takes writes again; a node whose lease is missing is declared lost no earlier than node_timeout from its window's start",
					"window_start", p.windowStart(done), "node_timeout", ttl)
			}
			wait -= done.Sub(sent)
		}
		if wait <= 0 {
			continue
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

func (p *Prober) windowStart(now time.Time) time.Time {
	_, since := p.Decide(now)
	return since
}

// probe writes the probe key once, within gap.
func (p *Prober) probe(ctx context.Context, kv *jetstream.KeyValue, ttl, gap time.Duration) error {
	pctx, cancel := context.WithTimeout(ctx, gap)
	defer cancel()
	if *kv == nil {
		b, err := Open(pctx, p.js)
		if err != nil {
			return err
		}
		*kv = b
	}
	v, _ := json.Marshal(struct {
		At    time.Time `json:"at"`
		TTLMS int64     `json:"ttl_ms"`
	}{p.clock.Now().UTC(), ttl.Milliseconds()})
	if _, err := (*kv).Put(pctx, p.key, v); err != nil {
		return fmt.Errorf("probe lease bucket: %w", err)
	}
	return nil
}

// ReadFromLeader reads node's lease from the leader of the lease bucket's
// stream (not by direct get, which any replica may answer, one that is
// catching up after a partition included). found is false when the key is
// missing, deleted or expired. The controller reads a lease this way before
// it declares a node lost.
func ReadFromLeader(ctx context.Context, js jetstream.JetStream, node string) (v Value, found bool, err error) {
	req, _ := json.Marshal(map[string]string{"last_by_subj": KeySubject(node)})
	m, err := js.Conn().RequestWithContext(ctx, "$JS.API.STREAM.MSG.GET."+StreamName, req)
	if err != nil {
		return Value{}, false, fmt.Errorf("read lease %s from the leader: %w", node, err)
	}
	var resp struct {
		Message *struct {
			Hdrs []byte `json:"hdrs"`
			Data []byte `json:"data"`
		} `json:"message"`
		Error *struct {
			Code        int    `json:"code"`
			ErrCode     int    `json:"err_code"`
			Description string `json:"description"`
		} `json:"error"`
	}
	if err := json.Unmarshal(m.Data, &resp); err != nil {
		return Value{}, false, fmt.Errorf("read lease %s from the leader: %w", node, err)
	}
	switch {
	case resp.Error != nil && resp.Error.ErrCode == 10037: // no message found
		return Value{}, false, nil
	case resp.Error != nil:
		return Value{}, false, fmt.Errorf("read lease %s from the leader: %s (%d)", node, resp.Error.Description, resp.Error.ErrCode)
	case resp.Message == nil:
		return Value{}, false, fmt.Errorf("read lease %s from the leader: %w", node, errors.New("empty answer"))
	}
	if len(resp.Message.Hdrs) > 0 {
		h, err := nats.DecodeHeadersMsg(resp.Message.Hdrs)
		if err == nil && IsDeleteMarker(h) {
			return Value{}, false, nil
		}
	}
	v, err = Decode(resp.Message.Data)
	if err != nil {
		return Value{}, true, err
	}
	return v, true, nil
}
