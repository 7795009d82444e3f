package main

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/vmguard/vmguard/events"
	"github.com/vmguard/vmguard/internal/natsd/natstest"
)

// scrape reads url's metrics with Prometheus's own text parser.
func scrape(url string) (map[string]*dto.MetricFamily, error) {
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		return nil, fmt.Errorf("GET %s: content type %q, want Prometheus text", url, ct)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	return p.TextToMetricFamilies(resp.Body)
}

// sum adds up every sample of a counter or gauge family (0 if absent), and
// the sample count of a histogram.
func sum(fams map[string]*dto.MetricFamily, name string) float64 {
	f, ok := fams[name]
	if !ok {
		return 0
	}
	var n float64
	for _, m := range f.GetMetric() {
		switch {
		case m.Counter != nil:
			n += m.GetCounter().GetValue()
		case m.Gauge != nil:
			n += m.GetGauge().GetValue()
		case m.Histogram != nil:
			n += float64(m.GetHistogram().GetSampleCount())
		}
	}
	return n
}

// startUpWeb runs `vmguard up` with its web listener on a free port and
// returns the command, its output and the listener's base URL.
func startUpWeb(t *testing.T, store string, port int, extra ...string) (*exec.Cmd, *syncBuffer, string) {
	t.Helper()
	web := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	cmd, out := runUp(t, store, port, append([]string{"--ui", web}, extra...)...)
	return cmd, out, "http://" + web
}

// TestMetricsMoveWithRestartsAndFailover scrapes `vmguard up`'s /metrics,
// parses it with Prometheus's text parser, and sees the counters move as the
// demo's flaky service is restarted and web fails over; each counter lies
// between the log's count of its events read just before and just after
// the scrape (up appends all of them, so it must count each once).
func TestMetricsMoveWithRestartsAndFailover(t *testing.T) {
	if testing.Short() {
		t.Skip("runs vmguard up until a failover; run without -short")
	}
	store := t.TempDir()
	port := freePort(t)
	cmd, out, base := startUpWeb(t, store, port)
	metricsURL := base + "/metrics"

	var first map[string]*dto.MetricFamily
	natstest.WaitFor(t, 30*time.Second, "/metrics to answer", func() bool {
		var err error
		first, err = scrape(metricsURL)
		return err == nil
	})
	l := dialLog(t, fmt.Sprintf("nats://127.0.0.1:%d", port))
	isRestart := func(e events.Event) bool { return e.Type() == events.TypeServiceRestarting }
	isFailover := func(e events.Event) bool {
		d, ok := e.Data.(events.PackagePlaced)
		return ok && (strings.HasPrefix(d.Reason, "failover") || strings.HasPrefix(d.Reason, "node_lost"))
	}
	var fams map[string]*dto.MetricFamily
	// Each poll reads the whole log twice: every 250 ms, not waitFor's 20.
	pace := time.NewTicker(250 * time.Millisecond)
	defer pace.Stop()
	natstest.WaitFor(t, 120*time.Second, "vmguard_restarts_total and vmguard_failovers_total to grow", func() bool {
		<-pace.C
		before := readLog(t, l)
		f, err := scrape(metricsURL)
		if err != nil {
			t.Fatalf("scrape: %v\n%s", err, out.String())
		}
		after := readLog(t, l)
		for _, c := range []struct {
			name  string
			match func(events.Event) bool
		}{{"vmguard_restarts_total", isRestart}, {"vmguard_failovers_total", isFailover}} {
			lo, hi, got := count(before, c.match), count(after, c.match), sum(f, c.name)
			if got < float64(lo) || got > float64(hi) {
				t.Fatalf("%s = %v, but the log held %d such events before the scrape and %d after", c.name, got, lo, hi)
			}
		}
		fams = f
		return sum(f, "vmguard_restarts_total") > sum(first, "vmguard_restarts_total") &&
			sum(f, "vmguard_failovers_total") > sum(first, "vmguard_failovers_total")
	})
	for _, name := range []string{
		"vmguard_decisions_total", "vmguard_events_appended_total", "vmguard_append_duration_seconds",
		"vmguard_decision_duration_seconds", "vmguard_lease_renewals_total", "vmguard_lease_renewal_duration_seconds",
		"vmguard_guest_heartbeats_total", "vmguard_events_read_total", "vmguard_log_last_sequence",
	} {
		if sum(fams, name) <= 0 {
			t.Errorf("%s is %v after a restart and a failover, want more than 0", name, sum(fams, name))
		}
	}
	for name, typ := range map[string]dto.MetricType{
		"vmguard_events_skipped_total": dto.MetricType_COUNTER, "vmguard_consumer_lag_events": dto.MetricType_GAUGE,
		"vmguard_failover_leader": dto.MetricType_GAUGE, "vmguard_append_duration_seconds": dto.MetricType_HISTOGRAM,
	} {
		if f, ok := fams[name]; !ok || f.GetType() != typ {
			t.Errorf("%s missing or not a %s", name, typ)
		}
	}
	if got := sum(fams, "vmguard_failover_leader"); got != 1 {
		t.Errorf("vmguard_failover_leader = %v, want 1 (up's controller leads)", got)
	}
	interrupt(t, cmd, out)
}

// TestDaemonMetrics starts a server, a failover controller and a host
// manager with --metrics each and scrapes them: every daemon serves its own
// metrics (the controller leads, the host renews its lease and reads the
// log, the server reports the log's end).
func TestDaemonMetrics(t *testing.T) {
	dir := t.TempDir()
	port := freePort(t)
	url := fmt.Sprintf("nats://127.0.0.1:%d", port)
	srvAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	startServer(t, filepath.Join(dir, "nats"), port, "--metrics", srvAddr)
	c := &cluster{t: t, url: url, dir: dir, procs: map[string]*exec.Cmd{}, logs: map[string]*syncBuffer{}}
	defer c.stopAll()
	cfg := filepath.Join(dir, "cluster.yaml")
	if err := os.WriteFile(cfg, []byte(e2eConfig), 0o644); err != nil {
		t.Fatal(err)
	}
	c.cli("apply", "-f", cfg)
	foAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	hostAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	c.start("failover", "failover", "--metrics", foAddr)
	c.start("node1", "host", "--node", "node1", "--state", filepath.Join(dir, "node1"), "--agent-bin", vmguardBin, "--metrics", hostAddr)
	for _, w := range []struct {
		addr, what string
		ok         func(map[string]*dto.MetricFamily) bool
	}{
		{srvAddr, "the server's vmguard_log_last_sequence > 0", func(f map[string]*dto.MetricFamily) bool { return sum(f, "vmguard_log_last_sequence") > 0 }},
		{foAddr, "the controller to lead, with a lag gauge", func(f map[string]*dto.MetricFamily) bool {
			_, lag := f["vmguard_consumer_lag_events"]
			return lag && sum(f, "vmguard_failover_leader") == 1 && sum(f, "vmguard_decisions_total") > 0
		}},
		{hostAddr, "node1's lease renewals, guest heartbeats and decisions", func(f map[string]*dto.MetricFamily) bool {
			return sum(f, "vmguard_lease_renewals_total") > 0 && sum(f, "vmguard_guest_heartbeats_total") > 0 &&
				sum(f, "vmguard_decisions_total") > 0 && sum(f, "vmguard_events_read_total") > 0
		}},
	} {
		natstest.WaitFor(t, 60*time.Second, w.what, func() bool {
			f, err := scrape("http://" + w.addr + "/metrics")
			return err == nil && w.ok(f)
		})
	}
}

// TestAgentMetrics starts `vmguard agent --metrics` and scrapes its gauge of
// running processes, labelled with the guest.
func TestAgentMetrics(t *testing.T) {
	dir := t.TempDir()
	port := freePort(t)
	startServer(t, filepath.Join(dir, "nats"), port)
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	cmd := exec.Command(vmguardBin, "--nats", fmt.Sprintf("nats://127.0.0.1:%d", port), "agent", "--guest", "g1",
		"--state", filepath.Join(dir, "agent"), "--metrics", addr)
	out := startLogged(t, cmd)
	var f map[string]*dto.MetricFamily
	natstest.WaitFor(t, 30*time.Second, "vmguard_agent_processes{guest=\"g1\"}", func() bool {
		var err error
		f, err = scrape("http://" + addr + "/metrics")
		if err != nil {
			return false
		}
		fam, ok := f["vmguard_agent_processes"]
		if !ok || len(fam.GetMetric()) != 1 {
			return false
		}
		for _, lp := range fam.GetMetric()[0].GetLabel() {
			if lp.GetName() == "guest" && lp.GetValue() == "g1" {
				return true
			}
		}
		return false
	})
	if got := sum(f, "vmguard_agent_processes"); got != 0 {
		t.Errorf("vmguard_agent_processes = %v before any run, want 0\n%s", got, out.String())
	}
}
