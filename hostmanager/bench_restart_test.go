package hostmanager

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vmguard/vmguard/config"
	"github.com/vmguard/vmguard/events"
	"github.com/vmguard/vmguard/internal/natsd"
)

var (
	benchRestarts    = flag.Int("restarts", 1000, "BenchmarkRestartLatency: restarts measured under vmguard")
	benchSupRestarts = flag.Int("supervisord-restarts", 30, "BenchmarkRestartLatency: restarts measured under supervisord (about 1s each; 0 skips it)")
)

// BenchmarkRestartLatency measures how fast a service that exits is running
// again, end to end on a real embedded server (interval mode), a real agent
// started by the process driver and real processes, with restart:
// unlimited and a service that exits at once:
//
//   - exit->started: from the service's exit (the agent's process.exited
//     time) to its replacement's process.started arriving at a reader of the
//     log — the agent spools and appends the exit, the host manager reads
//     it, appends service.restarting, asks the agent, which forks and
//     appends process.started;
//   - interval: time between two consecutive starts of the program, as the
//     program itself writes them to a file (`date +%s.%N`): the same
//     measure for vmguard and for supervisord (autorestart=true,
//     startsecs=0), run beside it when installed.
//
// Run it with:
//
//	go test ./hostmanager -run '^$' -bench RestartLatency -benchtime 1x -restarts 1000 -supervisord-restarts 30
func BenchmarkRestartLatency(b *testing.B) {
	for b.Loop() {
		p50 := benchVMGuardRestarts(b, *benchRestarts)
		if *benchSupRestarts > 0 {
			benchSupervisord(b, *benchSupRestarts, p50)
		}
	}
}

func benchVMGuardRestarts(b *testing.B, n int) time.Duration {
	dir := b.TempDir()
	srv := natsd.StartTest(b)
	nc := natsd.Connect(b, srv)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	l, err := events.Open(ctx, nc)
	if err != nil {
		b.Fatal(err)
	}
	yaml := `cluster: bench
node_timeout: 5s
guest_timeout: 5s
nodes: [node1]
packages:
  - name: web
    nodes: [node1]
    guest: {name: webvm, driver: process}
    services:
      - name: svc
        cmd: [sh, -c, "exit 1"]
        restart: unlimited
`
	if _, err := l.Append(ctx, events.New("/vmguard/cli/bench", "", configApplied(b, yaml))); err != nil {
		b.Fatal(err)
	}

	// The observer: a reader of the log like any other.
	var (
		mu        sync.Mutex
		exitTime  = map[string]time.Time{} // process.exited id -> exit time
		exitOf    = map[string]string{}    // service.restarting id -> its exit
		decidedAt = map[string]time.Time{} // service.restarting id -> its time
		latencies []time.Duration
		toDecide  []time.Duration // exit -> service.restarting (its time)
		toSpawn   []time.Duration // service.restarting -> process.started (its time)
		toRead    []time.Duration // process.started time -> read from the log
		forks     []time.Time     // process.started times
		done      = make(chan struct{})
	)
	go func() {
		_ = l.Follow(ctx, events.ForPackage("web"), func(e events.Event) error {
			now := time.Now()
			mu.Lock()
			defer mu.Unlock()
			switch d := e.Data.(type) {
			case events.ProcessExited:
				exitTime[e.ID] = e.Time
			case events.ServiceRestarting:
				exitOf[e.ID] = e.CauseID
				decidedAt[e.ID] = e.Time
			case events.ProcessStarted:
				forks = append(forks, e.Time)
				if x, ok := exitTime[exitOf[d.RequestID]]; ok && len(latencies) < n {
					latencies = append(latencies, now.Sub(x))
					toDecide = append(toDecide, decidedAt[d.RequestID].Sub(x))
					toSpawn = append(toSpawn, e.Time.Sub(decidedAt[d.RequestID]))
					toRead = append(toRead, now.Sub(e.Time))
					if len(latencies) == n {
						close(done)
					}
				}
			}
			return nil
		})
	}()

	var appendDur, arrive []time.Duration
	r, err := newRunner(Config{Node: "node1", Log: l, StateDir: filepath.Join(dir, "node1"), AgentBin: vmguardBin,
		Logger: slog.New(slog.DiscardHandler)}, testHooks{
		afterAppend: func(d events.Event) bool {
			if _, ok := d.Data.(events.ServiceRestarting); ok {
				appendDur = append(appendDur, time.Since(d.Time))
			}
			return false
		},
		onHandle: func(e events.Event) {
			if _, ok := e.Data.(events.ProcessExited); ok {
				arrive = append(arrive, time.Since(e.Time))
			}
		},
	})
	if err != nil {
		b.Fatal(err)
	}
	defer func() { b.Logf("exit -> host reads it p50 %v p99 %v", pct(arrive, 50), pct(arrive, 99)) }()
	defer func() {
		b.Logf("host append of service.restarting p50 %v p99 %v", pct(appendDur, 50), pct(appendDur, 99))
	}()
	rdone := make(chan struct{})
	go func() {
		defer close(rdone)
		_ = r.Run(ctx)
	}()
	defer func() {
		cancel()
		<-rdone
		if pid, ok := r.actuator.drivers[config.DriverProcess].(*ProcessDriver).PID("webvm"); ok {
			_ = syscall.Kill(-pid, syscall.SIGKILL)
		}
	}()
	start := time.Now()
	if _, err := l.Append(ctx, events.New("/vmguard/failover", "web", events.PackagePlaced{Node: "node1", Epoch: 1, Reason: "auto_run"})); err != nil {
		b.Fatal(err)
	}
	select {
	case <-done:
	case <-time.After(10 * time.Minute):
		b.Fatalf("only %d restarts in 10 minutes", len(latencies))
	}
	el := time.Since(start)
	mu.Lock()
	lat, iv := slices.Clone(latencies), gaps(forks)
	bd := fmt.Sprintf("exit -> decided %v/%v, decided -> forked %v/%v, forked -> read from the log %v/%v",
		pct(toDecide, 50), pct(toDecide, 99), pct(toSpawn, 50), pct(toSpawn, 99), pct(toRead, 50), pct(toRead, 99))
	mu.Unlock()
	p50, p99, mx := pct(lat, 50), pct(lat, 99), slices.Max(lat)
	b.ReportMetric(ms(p50), "exit->started-p50-ms")
	b.ReportMetric(ms(p99), "exit->started-p99-ms")
	b.ReportMetric(ms(pct(iv, 50)), "vmguard-spawn-interval-p50-ms")
	b.Logf("vmguard: %d restarts in %.2fs: exit -> process.started in the log p50 %v p99 %v max %v; spawn-to-spawn p50 %v p99 %v",
		len(lat), el.Seconds(), p50, p99, mx, pct(iv, 50), pct(iv, 99))
	b.Logf("vmguard breakdown p50/p99 (event times): %s", bd)
	return p50
}

// benchSupervisord runs the same program under supervisord (autorestart=true,
// startsecs=0) and measures, from its log, exit -> next spawn and
// spawn-to-spawn (millisecond timestamps).
func benchSupervisord(b *testing.B, n int, vmguardP50 time.Duration) {
	sup, err := exec.LookPath("supervisord")
	if err != nil {
		b.Logf("supervisord not installed (apt-get install -y supervisor): not measured")
		return
	}
	dir := b.TempDir()
	logf := filepath.Join(dir, "supervisord.log")
	conf := filepath.Join(dir, "supervisord.conf")
	body := fmt.Sprintf(`[supervisord]
nodaemon=true
logfile=%[1]s/supervisord.log
pidfile=%[1]s/supervisord.pid
childlogdir=%[1]s

[program:svc]
command=sh -c 'exit 1'
autorestart=true
startsecs=0
startretries=1000000
`, dir)
	if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command(sup, "-c", conf)
	cmd.Dir = dir
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
	}()
	deadline := time.Now().Add(time.Duration(n)*3*time.Second + 10*time.Second)
	var restarts, spawns []time.Duration
	for {
		restarts, spawns = supervisordLog(logf)
		if len(restarts) >= n {
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("supervisord: only %d restarts", len(restarts))
		}
		time.Sleep(100 * time.Millisecond)
	}
	p50 := pct(restarts, 50)
	b.ReportMetric(ms(p50), "supervisord-exit->spawn-p50-ms")
	b.Logf("supervisord %s: %d restarts: exit -> spawn p50 %v p99 %v; spawn-to-spawn p50 %v p99 %v",
		supervisordVersion(sup), len(restarts), p50, pct(restarts, 99), pct(spawns, 50), pct(spawns, 99))
	if vmguardP50 > 0 {
		b.Logf("ratio: supervisord exit -> spawn p50 / vmguard exit -> process.started p50 = %.0fx", float64(p50)/float64(vmguardP50))
	}
}

func supervisordVersion(bin string) string {
	out, err := exec.Command(bin, "--version").Output()
	if err != nil {
		return "?"
	}
	return strings.TrimSpace(string(out))
}

// supervisordLog reads exit -> next spawn and spawn -> spawn times from a
// supervisord log ("2026-01-02 03:04:05,678 INFO spawned: 'svc' ...",
// "... WARN exited: svc (...)").
func supervisordLog(path string) (restarts, spawns []time.Duration) {
	b, _ := os.ReadFile(path)
	var lastExit, lastSpawn time.Time
	for _, line := range strings.Split(string(b), "\n") {
		if len(line) < 23 {
			continue
		}
		t, err := time.Parse("2006-01-02 15:04:05,000", line[:23])
		if err != nil {
			continue
		}
		switch {
		case strings.Contains(line, "spawned: 'svc'"):
			if !lastExit.IsZero() {
				restarts = append(restarts, t.Sub(lastExit))
				lastExit = time.Time{}
			}
			if !lastSpawn.IsZero() {
				spawns = append(spawns, t.Sub(lastSpawn))
			}
			lastSpawn = t
		case strings.Contains(line, "exited: svc"):
			lastExit = t
		}
	}
	return restarts, spawns
}

// gaps returns the intervals between consecutive times.
func gaps(ts []time.Time) []time.Duration {
	var out []time.Duration
	for i := 1; i < len(ts); i++ {
		out = append(out, ts[i].Sub(ts[i-1]))
	}
	return out
}

func pct(d []time.Duration, p int) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	i := (len(s)*p + 99) / 100
	return s[min(max(i-1, 0), len(s)-1)]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
