// Package metrics owns vmguard's Prometheus metrics: one registry per
// process, the events.Observer that measures what a Log appends and reads,
// and the small adapters the host manager and the guest agent report
// through. It only counts: it never decides, appends or changes what the
// daemons do, and nothing in it blocks a caller.
//
// A process counts what it does itself (the decisions it appended, the
// restarts and failovers among them), so summing a metric over every
// daemon's scrape gives the cluster's total without double counting.
package metrics

import (
	"context"
	"errors"
	"math"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/vmguard/vmguard/events"
)

// Namespace prefixes every vmguard metric.
const Namespace = "vmguard"

// latencyBuckets fit what vmguard waits for: a fsynced append takes
// milliseconds, a decision under load up to seconds.
var latencyBuckets = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}

// Metrics is the set of one process's metrics, in a registry of its own.
// Create it with New; its methods are safe for concurrent use.
type Metrics struct {
	reg *prometheus.Registry

	appended        *prometheus.CounterVec
	appendFailed    *prometheus.CounterVec
	appendSeconds   prometheus.Histogram
	decisions       *prometheus.CounterVec
	decisionSeconds prometheus.Histogram
	restarts        *prometheus.CounterVec
	failovers       *prometheus.CounterVec
	fences          *prometheus.CounterVec
	read            prometheus.Counter
	leaseRenewals   *prometheus.CounterVec
	leaseSeconds    *prometheus.HistogramVec
	heartbeats      *prometheus.CounterVec

	mu       sync.Mutex
	readAt   map[string]time.Time // event id -> when this process read it
	readIDs  []string             // ring of the ids in readAt, oldest first
	readPos  int
	lastRead uint64 // highest sequence read
}

// causeMemory is how many recently read event ids are kept to time the
// decisions that answer them.
const causeMemory = 4096

// New returns the metrics of one process, with the Go runtime's and the
// process's standard collectors.
func New() *Metrics {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	f := func(c prometheus.Collector) { reg.MustRegister(c) }
	m := &Metrics{reg: reg, readAt: make(map[string]time.Time, causeMemory), readIDs: make([]string, causeMemory)}
	m.appended = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: Namespace, Name: "events_appended_total",
		Help: "Events this process appended to the log, by type (entity.verb)."}, []string{"type"})
	m.appendFailed = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: Namespace, Name: "append_failures_total",
		Help: "Appends the log refused or that failed, by type and kind (conflict: the log moved on, so the decision is made again; error)."}, []string{"type", "kind"})
	m.appendSeconds = prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: Namespace, Name: "append_duration_seconds",
		Help: "Time from sending an event to the server's acknowledgement (stored, and fsynced in the default mode).", Buckets: latencyBuckets})
	m.decisions = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: Namespace, Name: "decisions_total",
		Help: "Decisions this process appended (appends guarded by an expected last sequence), by type."}, []string{"type"})
	m.decisionSeconds = prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: Namespace, Name: "decision_duration_seconds",
		Help: "Time from reading the event a decision answers (its causeid) to the decision stored.", Buckets: latencyBuckets})
	m.restarts = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: Namespace, Name: "restarts_total",
		Help: "Service restarts this process decided (service.restarting), by package."}, []string{"package"})
	m.failovers = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: Namespace, Name: "failovers_total",
		Help: "Packages this process placed on another node because they failed (reason failover) or their node was lost (node_lost)."}, []string{"package", "reason"})
	m.fences = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: Namespace, Name: "fences_total",
		Help: "Nodes that fenced themselves (node.fenced appended by this process)."}, []string{"node"})
	m.read = prometheus.NewCounter(prometheus.CounterOpts{Namespace: Namespace, Name: "events_read_total",
		Help: "Events this process read from the log (replays and follows)."})
	m.leaseRenewals = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: Namespace, Name: "lease_renewals_total",
		Help: "Node lease takes and renewals that succeeded."}, []string{"node"})
	m.leaseSeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: Namespace, Name: "lease_renewal_duration_seconds",
		Help: "Time the server took to answer a node lease renewal that succeeded.", Buckets: latencyBuckets}, []string{"node"})
	m.heartbeats = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: Namespace, Name: "guest_heartbeats_total",
		Help: "Guest heartbeats the host manager received."}, []string{"node", "guest"})
	for _, c := range []prometheus.Collector{m.appended, m.appendFailed, m.appendSeconds, m.decisions, m.decisionSeconds,
		m.restarts, m.failovers, m.fences, m.read, m.leaseRenewals, m.leaseSeconds, m.heartbeats} {
		f(c)
	}
	return m
}

// Handler serves the metrics in Prometheus's text format (/metrics).
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

// Register adds collectors of the caller's own (tests, commands).
func (m *Metrics) Register(c prometheus.Collector) error { return m.reg.Register(c) }

// Appended implements events.Observer.
func (m *Metrics) Appended(e events.Event, guarded bool, took time.Duration, err error) {
	typ := events.ShortType(e.Type())
	if err != nil {
		kind := "error"
		if isConflict(err) {
			kind = "conflict"
		}
		m.appendFailed.WithLabelValues(typ, kind).Inc()
		return
	}
	m.appended.WithLabelValues(typ).Inc()
	m.appendSeconds.Observe(took.Seconds())
	if !guarded {
		return
	}
	m.decisions.WithLabelValues(typ).Inc()
	if e.CauseID != "" {
		m.mu.Lock()
		at, ok := m.readAt[e.CauseID]
		m.mu.Unlock()
		if ok {
			m.decisionSeconds.Observe(time.Since(at).Seconds())
		}
	}
	switch d := e.Data.(type) {
	case events.ServiceRestarting:
		m.restarts.WithLabelValues(e.Subject).Inc()
	case events.PackagePlaced:
		if code := reasonCode(d.Reason); code == "failover" || code == "node_lost" {
			m.failovers.WithLabelValues(e.Subject, code).Inc()
		}
	case events.NodeFenced:
		m.fences.WithLabelValues(e.Subject).Inc()
	}
}

// Read implements events.Observer: it remembers when the event was read,
// to time a decision that answers it, and the highest sequence read.
func (m *Metrics) Read(e events.Event) {
	m.read.Inc()
	now := time.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	if e.Seq > m.lastRead {
		m.lastRead = e.Seq
	}
	if _, ok := m.readAt[e.ID]; ok || e.ID == "" {
		return
	}
	if old := m.readIDs[m.readPos]; old != "" {
		delete(m.readAt, old)
	}
	m.readIDs[m.readPos] = e.ID
	m.readPos = (m.readPos + 1) % len(m.readIDs)
	m.readAt[e.ID] = now
}

// LastRead returns the highest stream sequence this process read.
func (m *Metrics) LastRead() uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.lastRead
}

// WatchLog adds the metrics read from l at each scrape: the events it
// skipped as malformed, and the log's last sequence.
func (m *Metrics) WatchLog(l *events.Log) {
	m.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: Namespace, Name: "events_skipped_total",
		Help: "Malformed events (bad encoding, unknown type, schema failure) this process skipped on read."},
		func() float64 { return float64(l.Skipped()) }))
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: Namespace, Name: "log_last_sequence",
		Help: "The log's last stream sequence, read at scrape time (NaN if the server did not answer within 2s)."},
		func() float64 { return logLast(l) }))
}

// lagHelp is the help of vmguard_consumer_lag_events.
const lagHelp = "Events in the log not yet applied by a reader: the log's last sequence minus the reader's applied sequence; for a reader of part of the log (host), the events of its part its consumer holds behind the last one it read."

// AddPending adds vmguard_consumer_lag_events{reader} for a reader of
// part of the log: pending() is how many events of its part it has not
// read yet (a host manager's Lag).
func (m *Metrics) AddPending(reader string, pending func() uint64) {
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: Namespace, Name: "consumer_lag_events",
		Help: lagHelp, ConstLabels: prometheus.Labels{"reader": reader}},
		func() float64 { return float64(pending()) }))
}

// AddLag adds vmguard_consumer_lag_events{reader}: the log's last sequence
// minus the sequence applied(), read at each scrape.
func (m *Metrics) AddLag(l *events.Log, reader string, applied func() uint64) {
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: Namespace, Name: "consumer_lag_events",
		Help:        lagHelp,
		ConstLabels: prometheus.Labels{"reader": reader}},
		func() float64 {
			last := logLast(l)
			a := float64(applied())
			if last != last || a > last { // NaN, or the log grew since applied() read
				return max(0, last-a)
			}
			return last - a
		}))
}

// AddGauge adds a gauge vmguard_<name> read from f at each scrape.
func (m *Metrics) AddGauge(name, help string, labels prometheus.Labels, f func() float64) {
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: Namespace, Name: name, Help: help, ConstLabels: labels}, f))
}

// Node returns what one node's host manager reports through (it
// implements hostmanager.Metrics).
func (m *Metrics) Node(node string) NodeMetrics { return NodeMetrics{m: m, node: node} }

// NodeMetrics counts one node's lease renewals and guest heartbeats.
type NodeMetrics struct {
	m    *Metrics
	node string
}

// LeaseRenewed counts a lease renewal and its latency.
func (n NodeMetrics) LeaseRenewed(took time.Duration) {
	n.m.leaseRenewals.WithLabelValues(n.node).Inc()
	n.m.leaseSeconds.WithLabelValues(n.node).Observe(took.Seconds())
}

// Heartbeat counts a guest's heartbeat.
func (n NodeMetrics) Heartbeat(guest string) { n.m.heartbeats.WithLabelValues(n.node, guest).Inc() }

// logLast returns the log's last sequence, NaN if the server does not
// answer within 2s.
func logLast(l *events.Log) float64 {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	s, err := l.LastSeq(ctx)
	if err != nil {
		return math.NaN()
	}
	return float64(s)
}

// reasonCode is the code of a placement reason, the text before the first
// ':' (as failover.ReasonCode).
func reasonCode(reason string) string {
	code, _, _ := strings.Cut(reason, ":")
	return strings.TrimSpace(code)
}

func isConflict(err error) bool { return errors.Is(err, events.ErrConflict) }
