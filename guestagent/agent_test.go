package guestagent_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/micro"

	"github.com/vmguard/vmguard/events"
	"github.com/vmguard/vmguard/guestagent"
	"github.com/vmguard/vmguard/internal/duration"
	"github.com/vmguard/vmguard/internal/natsd/natstest"
)

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) != "" {
		os.Exit(childAgent())
	}
	os.Exit(m.Run())
}

func TestExitsAreReportedExactly(t *testing.T) {
	s := startServer(t, t.TempDir(), 0)
	l := openLog(t, s.ClientURL())
	ta := startAgent(t, s.ClientURL(), nil)

	cases := []struct {
		id, script string
		code       int
		signal     string
		output     []string
	}{
		{"exit0", "echo hello; exit 0", 0, "", []string{"hello"}},
		{"exit3", "echo out; echo err >&2; exit 3", 3, "", []string{"out", "err"}},
		{"sigkill", "kill -KILL $$", -1, "SIGKILL", nil},
		{"sigterm", "echo bye; kill -TERM $$", -1, "SIGTERM", []string{"bye"}},
	}
	for _, tc := range cases {
		req := sh("web", tc.id, tc.id+"/"+tc.id, tc.script)
		req.CauseID = "cause-" + tc.id
		reply := run(t, ta.client, req)
		if reply.Process.PID <= 0 || reply.Duplicate || reply.Process.StartedEventID == "" {
			t.Fatalf("%s: reply %+v", tc.id, reply)
		}
	}
	for _, tc := range cases {
		ev, x := waitExit(t, l, "web", tc.id+"/"+tc.id)
		if x.ExitCode != tc.code || x.Signal != tc.signal || x.Reason != "" {
			t.Errorf("%s: exit code %d signal %q reason %q, want %d %q \"\"", tc.id, x.ExitCode, x.Signal, x.Reason, tc.code, tc.signal)
		}
		if strings.Join(x.Output, "|") != strings.Join(tc.output, "|") {
			t.Errorf("%s: output %q, want %q", tc.id, x.Output, tc.output)
		}
		if ev.CauseID != "cause-"+tc.id || ev.Source != "/vmguard/guests/g1/agent" || ev.Subject != "web" {
			t.Errorf("%s: envelope cause %q source %q subject %q", tc.id, ev.CauseID, ev.Source, ev.Subject)
		}
		if x.Guest != "g1" || x.Service != tc.id || x.Epoch != 7 || x.PID <= 0 || x.RuntimeMS < 0 {
			t.Errorf("%s: data %+v", tc.id, x)
		}
	}
	// Every exit follows its start, each once.
	seen := map[string]string{}
	for _, e := range procEvents(t, l, "web") {
		switch d := e.Data.(type) {
		case events.ProcessStarted:
			if seen[d.RequestID] != "" {
				t.Errorf("%s: started after %s", d.RequestID, seen[d.RequestID])
			}
			seen[d.RequestID] = "started"
			if e.CauseID != "cause-"+d.Service || d.Guest != "g1" || d.Epoch != 7 {
				t.Errorf("started %+v cause %q", d, e.CauseID)
			}
		case events.ProcessExited:
			if seen[d.RequestID] != "started" {
				t.Errorf("%s: exited after %q", d.RequestID, seen[d.RequestID])
			}
			seen[d.RequestID] = "exited"
		}
	}
	if len(seen) != len(cases) {
		t.Errorf("events for %d requests, want %d", len(seen), len(cases))
	}
	// The output also went to the service's log file.
	b, err := os.ReadFile(filepath.Join(ta.state, "logs", "web", "exit3.log"))
	if err != nil || !strings.Contains(string(b), "out\n") || !strings.Contains(string(b), "exited: exit code 3") {
		t.Errorf("service log: %q, %v", b, err)
	}
}

func TestCauseDefaultsToDecisionID(t *testing.T) {
	s := startServer(t, t.TempDir(), 0)
	l := openLog(t, s.ClientURL())
	ta := startAgent(t, s.ClientURL(), nil)
	run(t, ta.client, sh("web", "httpd", "0190-guest-started/httpd", "exit 0"))
	run(t, ta.client, sh("web", "db", "0190-restarting", "exit 0"))
	ev, _ := waitExit(t, l, "web", "0190-guest-started/httpd")
	if ev.CauseID != "0190-guest-started" {
		t.Errorf("cause %q, want the guest.started id", ev.CauseID)
	}
	ev, _ = waitExit(t, l, "web", "0190-restarting")
	if ev.CauseID != "0190-restarting" {
		t.Errorf("cause %q, want the request id", ev.CauseID)
	}
}

func TestEnvironmentAndDir(t *testing.T) {
	s := startServer(t, t.TempDir(), 0)
	l := openLog(t, s.ClientURL())
	ta := startAgent(t, s.ClientURL(), nil)
	dir := t.TempDir()
	req := sh("web", "env", "r-env", `pwd; echo "$GREETING $VMGUARD_GUEST $VMGUARD_PACKAGE $VMGUARD_SERVICE $VMGUARD_REQUEST_ID $VMGUARD_EPOCH"`)
	req.Env = map[string]string{"GREETING": "hi"}
	req.Dir = dir
	run(t, ta.client, req)
	_, x := waitExit(t, l, "web", "r-env")
	want := []string{dir, "hi g1 web env r-env 7"}
	if strings.Join(x.Output, "|") != strings.Join(want, "|") {
		t.Errorf("output %q, want %q", x.Output, want)
	}
}

func TestOutputTailIsBounded(t *testing.T) {
	s := startServer(t, t.TempDir(), 0)
	l := openLog(t, s.ClientURL())
	ta := startAgent(t, s.ClientURL(), func(c *guestagent.Config) { c.LogMaxBytes = 4000 })
	// 100 lines of ~100 bytes: 10 KB, past both bounds and the log cap.
	run(t, ta.client, sh("web", "noisy", "r-noisy",
		`i=0; while [ $i -lt 100 ]; do printf 'line %03d %090d\n' $i 0; i=$((i+1)); done; exit 1`))
	_, x := waitExit(t, l, "web", "r-noisy")
	if len(x.Output) != 20 || !strings.HasPrefix(x.Output[19], "line 099 ") || !strings.HasPrefix(x.Output[0], "line 080 ") {
		t.Errorf("output: %d lines, first %q", len(x.Output), x.Output)
	}
	n := 0
	for _, o := range x.Output {
		n += len(o) + 1
	}
	if n > 4096 {
		t.Errorf("output %d bytes, want at most 4 KiB", n)
	}
	for _, name := range []string{"noisy.log", "noisy.log.1"} {
		st, err := os.Stat(filepath.Join(ta.state, "logs", "web", name))
		if err != nil || st.Size() > 4000 || st.Size() == 0 {
			t.Errorf("%s: %v, %v", name, st, err)
		}
	}
}

func TestStop(t *testing.T) {
	s := startServer(t, t.TempDir(), 0)
	l := openLog(t, s.ClientURL())
	ta := startAgent(t, s.ClientURL(), nil)
	ctx := context.Background()

	// A process that ends on SIGTERM.
	run(t, ta.client, guestagent.RunRequest{Package: "web", Service: "sleep", RequestID: "r-sleep", Argv: []string{"sleep", "100"}})
	reply, err := ta.client.Stop(ctx, guestagent.StopRequest{RequestID: "r-sleep"})
	if err != nil {
		t.Fatal(err)
	}
	if len(reply.Processes) != 1 || reply.Processes[0].Exit == nil {
		t.Fatalf("stop reply %+v", reply)
	}
	if x := reply.Processes[0].Exit; x.Signal != "SIGTERM" || x.Reason != guestagent.ReasonStopped || x.ExitCode != -1 {
		t.Errorf("exit %+v, want SIGTERM stopped", x)
	}

	// A process that ignores SIGTERM: SIGKILL after the halt timeout.
	req := sh("web", "stubborn", "r-stubborn", `trap "" TERM; echo ready; sleep 100`)
	req.HaltTimeout = duration.Duration(300 * time.Millisecond)
	run(t, ta.client, req)
	logFile := filepath.Join(ta.state, "logs", "web", "stubborn.log")
	natstest.WaitFor(t, 10*time.Second, "trap set", func() bool {
		b, _ := os.ReadFile(logFile)
		return strings.Contains(string(b), "ready")
	})
	start := time.Now()
	reply, err = ta.client.Stop(ctx, guestagent.StopRequest{Package: "web", Service: "stubborn"})
	if err != nil {
		t.Fatal(err)
	}
	if len(reply.Processes) != 1 {
		t.Fatalf("stop reply %+v", reply)
	}
	if x := reply.Processes[0].Exit; x.Signal != "SIGKILL" || x.Reason != guestagent.ReasonStopped {
		t.Errorf("exit %+v, want SIGKILL stopped", x)
	}
	if d := time.Since(start); d < 300*time.Millisecond {
		t.Errorf("SIGKILL after %s, before the 300ms halt timeout", d)
	}
	_, x := waitExit(t, l, "web", "r-stubborn")
	if x.Signal != "SIGKILL" || x.Reason != guestagent.ReasonStopped || x.Output[0] != "ready" {
		t.Errorf("exited event %+v", x)
	}

	// Stopping again returns the exit; stopping a service that is not
	// running lists nothing; an unknown request id is ErrNotFound.
	reply, err = ta.client.Stop(ctx, guestagent.StopRequest{RequestID: "r-sleep"})
	if err != nil || len(reply.Processes) != 1 || reply.Processes[0].Exit.Signal != "SIGTERM" {
		t.Errorf("repeat stop: %+v, %v", reply, err)
	}
	reply, err = ta.client.Stop(ctx, guestagent.StopRequest{Package: "web", Service: "sleep"})
	if err != nil || len(reply.Processes) != 0 {
		t.Errorf("stop of a stopped service: %+v, %v", reply, err)
	}
	if _, err := ta.client.Stop(ctx, guestagent.StopRequest{RequestID: "nope"}); !errors.Is(err, guestagent.ErrNotFound) {
		t.Errorf("stop unknown: %v, want ErrNotFound", err)
	}
	if n := len(exitsOf(procEvents(t, l, "web"))); n != 2 {
		t.Errorf("%d exits in the log, want 2", n)
	}
}

func TestStopProcessTree(t *testing.T) {
	s := startServer(t, t.TempDir(), 0)
	l := openLog(t, s.ClientURL())
	ta := startAgent(t, s.ClientURL(), nil)
	r := run(t, ta.client, sh("web", "tree", "r-tree", `sleep 100 & sleep 100 & sh -c 'sleep 100 & wait' & wait`))
	pgid := r.Process.PID
	natstest.WaitFor(t, 10*time.Second, "the tree to start", func() bool { return len(groupMembers(pgid)) >= 5 })
	reply, err := ta.client.Stop(context.Background(), guestagent.StopRequest{Package: "web"})
	if err != nil || len(reply.Processes) != 1 || reply.Processes[0].Exit.Reason != guestagent.ReasonStopped {
		t.Fatalf("stop: %+v, %v", reply, err)
	}
	natstest.WaitFor(t, 10*time.Second, "every process of the tree to end", func() bool { return len(groupMembers(pgid)) == 0 })
	waitExit(t, l, "web", "r-tree")
}

func TestExitKillsLeftovers(t *testing.T) {
	s := startServer(t, t.TempDir(), 0)
	l := openLog(t, s.ClientURL())
	ta := startAgent(t, s.ClientURL(), nil)
	r := run(t, ta.client, sh("web", "leaky", "r-leaky", `sleep 100 & echo started; exit 4`))
	_, x := waitExit(t, l, "web", "r-leaky")
	if x.ExitCode != 4 || x.Reason != "" {
		t.Errorf("exit %+v", x)
	}
	natstest.WaitFor(t, 10*time.Second, "the leftover sleep to end", func() bool { return len(groupMembers(r.Process.PID)) == 0 })
}

func TestRunIsIdempotent(t *testing.T) {
	s := startServer(t, t.TempDir(), 0)
	l := openLog(t, s.ClientURL())
	ta := startAgent(t, s.ClientURL(), nil)
	ctx := context.Background()
	req := sh("web", "app", "r-1", `read x`) // stdin is /dev/null: exits at once
	req.Argv = []string{"sleep", "100"}
	first := run(t, ta.client, req)
	again := run(t, ta.client, req)
	if !again.Duplicate || again.Process.PID != first.Process.PID || again.Process.StartedEventID != first.Process.StartedEventID {
		t.Fatalf("repeat: %+v, first %+v", again, first)
	}
	// Another request id for the running service is a conflict, and so is
	// the same request id for another service.
	other := req
	other.RequestID = "r-2"
	if _, err := ta.client.Run(ctx, other); !errors.Is(err, guestagent.ErrConflict) {
		t.Errorf("second run of a running service: %v, want ErrConflict", err)
	}
	other = req
	other.Service = "other"
	if _, err := ta.client.Run(ctx, other); !errors.Is(err, guestagent.ErrConflict) {
		t.Errorf("request id reused for another service: %v, want ErrConflict", err)
	}
	if _, err := ta.client.Stop(ctx, guestagent.StopRequest{RequestID: "r-1"}); err != nil {
		t.Fatal(err)
	}
	// After the exit a repeat still returns the same process, exited.
	after := run(t, ta.client, req)
	if !after.Duplicate || after.Process.PID != first.Process.PID || after.Process.State != guestagent.StateExited ||
		after.Process.Exit == nil || after.Process.Exit.Reason != guestagent.ReasonStopped {
		t.Errorf("repeat after exit: %+v", after)
	}
	waitExit(t, l, "web", "r-1")
	starts := 0
	for _, e := range procEvents(t, l, "web") {
		if _, ok := e.Data.(events.ProcessStarted); ok {
			starts++
		}
	}
	if starts != 1 {
		t.Errorf("%d process.started events, want 1", starts)
	}
	// A new request id for the now stopped service starts it again.
	other = req
	other.RequestID = "r-3"
	if r := run(t, ta.client, other); r.Duplicate || r.Process.PID == first.Process.PID {
		t.Errorf("restart: %+v", r)
	}
}

func TestBadRequests(t *testing.T) {
	s := startServer(t, t.TempDir(), 0)
	l := openLog(t, s.ClientURL())
	ta := startAgent(t, s.ClientURL(), nil)
	nc := connect(t, s.ClientURL())
	huge := `{"package":"web","service":"a","request_id":"r","argv":["` + strings.Repeat("x", 70<<10) + `"]}`
	cases := []struct {
		name, endpoint, body, code, want string
	}{
		{"missing argv", "run", `{"package":"web","service":"a","request_id":"r"}`, "400", "argv: missing"},
		{"empty argv0", "run", `{"package":"web","service":"a","request_id":"r","argv":[""]}`, "400", "argv[0]: empty"},
		{"unknown field", "run", `{"package":"web","service":"a","request_id":"r","argv":["true"],"cmd":"x"}`, "400", `unknown field "cmd"`},
		{"oversized", "run", huge, "413", "more than the 65536 allowed"},
		{"invalid package", "run", `{"package":"web.x","service":"a","request_id":"r","argv":["true"]}`, "400", `package: "web.x" is not a valid name`},
		{"invalid service", "run", `{"package":"web","service":"a b","request_id":"r","argv":["true"]}`, "400", `service: "a b" is not a valid name`},
		{"missing request id", "run", `{"package":"web","service":"a","argv":["true"]}`, "400", "request_id: missing"},
		{"request id with space", "run", `{"package":"web","service":"a","request_id":"r 1","argv":["true"]}`, "400", "space or control"},
		{"relative dir", "run", `{"package":"web","service":"a","request_id":"r","argv":["true"],"dir":"tmp"}`, "400", "not an absolute path"},
		{"reserved env", "run", `{"package":"web","service":"a","request_id":"r","argv":["true"],"env":{"VMGUARD_GUEST":"x"}}`, "400", "set by the agent"},
		{"bad halt timeout", "run", `{"package":"web","service":"a","request_id":"r","argv":["true"],"halt_timeout":"soon"}`, "400", "not a duration"},
		{"halt timeout as number", "run", `{"package":"web","service":"a","request_id":"r","argv":["true"],"halt_timeout":5000}`, "400", "halt_timeout"},
		{"not json", "run", `argv=true`, "400", "decode JSON"},
		{"trailing data", "run", `{"package":"web","service":"a","request_id":"r","argv":["true"]} {}`, "400", "after the object"},
		{"empty run", "run", ``, "400", "empty body"},
		{"stop nothing", "stop", `{}`, "400", "request_id or package: missing"},
		{"stop both", "stop", `{"request_id":"r","package":"web"}`, "400", "not both"},
		{"stop bad service", "stop", `{"package":"web","service":"a.b"}`, "400", "not a valid name"},
		{"stop unknown field", "stop", `{"package":"web","force":true}`, "400", `unknown field "force"`},
		{"list bad package", "list", `{"package":"*"}`, "400", "not a valid name"},
		{"ping unknown field", "ping", `{"x":1}`, "400", `unknown field "x"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m, err := nc.Request(guestagent.Subject("g1", tc.endpoint), []byte(tc.body), 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			code, desc := m.Header.Get(micro.ErrorCodeHeader), m.Header.Get(micro.ErrorHeader)
			if code != tc.code || !strings.Contains(desc, tc.want) {
				t.Errorf("reply %s %q, want %s containing %q", code, desc, tc.code, tc.want)
			}
		})
	}
	// The client maps codes to sentinels.
	_, err := ta.client.Run(context.Background(), guestagent.RunRequest{Package: "web", Service: "a", RequestID: "r"})
	var re *guestagent.RemoteError
	if !errors.Is(err, guestagent.ErrBadRequest) || !errors.As(err, &re) || re.Code != "400" {
		t.Errorf("client error %v", err)
	}
	// A command that does not exist is refused too, and nothing changed.
	_, err = ta.client.Run(context.Background(), guestagent.RunRequest{Package: "web", Service: "a", RequestID: "r", Argv: []string{"no-such-command-vmguard"}})
	if !errors.Is(err, guestagent.ErrStart) || !strings.Contains(err.Error(), "executable file not found") {
		t.Errorf("missing command: %v", err)
	}
	_, err = ta.client.Run(context.Background(), guestagent.RunRequest{Package: "web", Service: "a", RequestID: "r2", Argv: []string{"/bin/true"}, Dir: "/no/such/dir"})
	if !errors.Is(err, guestagent.ErrStart) {
		t.Errorf("missing dir: %v", err)
	}
	list, err := ta.client.List(context.Background(), guestagent.ListRequest{Exited: true})
	if err != nil || len(list.Processes) != 0 {
		t.Errorf("list after bad requests: %+v, %v", list, err)
	}
	if seq, err := l.LastSeq(context.Background()); err != nil || seq != 0 {
		t.Errorf("log last seq %d, %v: bad requests wrote events", seq, err)
	}
}

func TestMaxProcs(t *testing.T) {
	s := startServer(t, t.TempDir(), 0)
	ta := startAgent(t, s.ClientURL(), func(c *guestagent.Config) { c.MaxProcs = 2 })
	for _, id := range []string{"a", "b"} {
		run(t, ta.client, guestagent.RunRequest{Package: "web", Service: id, RequestID: id, Argv: []string{"sleep", "100"}})
	}
	_, err := ta.client.Run(context.Background(), guestagent.RunRequest{Package: "web", Service: "c", RequestID: "c", Argv: []string{"sleep", "100"}})
	if !errors.Is(err, guestagent.ErrUnavailable) || !strings.Contains(err.Error(), "at capacity") {
		t.Fatalf("third run: %v, want at capacity", err)
	}
	if _, err := ta.client.Stop(context.Background(), guestagent.StopRequest{RequestID: "a"}); err != nil {
		t.Fatal(err)
	}
	run(t, ta.client, guestagent.RunRequest{Package: "web", Service: "c", RequestID: "c", Argv: []string{"sleep", "100"}})
}

func TestListPingHeartbeat(t *testing.T) {
	s := startServer(t, t.TempDir(), 0)
	ta := startAgent(t, s.ClientURL(), nil)
	nc := connect(t, s.ClientURL())
	sub, err := nc.SubscribeSync(guestagent.HeartbeatSubject("g1"))
	if err != nil {
		t.Fatal(err)
	}
	run(t, ta.client, guestagent.RunRequest{Package: "web", Service: "a", RequestID: "a", Argv: []string{"sleep", "100"}})
	run(t, ta.client, guestagent.RunRequest{Package: "db", Service: "b", RequestID: "b", Argv: []string{"sleep", "100"}})
	run(t, ta.client, sh("db", "c", "c", "exit 0"))
	ctx := context.Background()
	natstest.WaitFor(t, 10*time.Second, "c to exit", func() bool {
		l, err := ta.client.List(ctx, guestagent.ListRequest{})
		return err == nil && len(l.Processes) == 2
	})
	l, err := ta.client.List(ctx, guestagent.ListRequest{Package: "db", Exited: true})
	if err != nil || len(l.Processes) != 2 || l.Processes[0].RequestID != "b" || l.Processes[1].State != guestagent.StateExited {
		t.Errorf("list db: %+v, %v", l, err)
	}
	p, err := ta.client.Ping(ctx)
	if err != nil || p.Guest != "g1" || p.Node != "" || p.Lease != "" || p.Running != 2 || p.MaxProcs != 1024 || p.Version != "1.2.3" {
		t.Errorf("ping: %+v, %v", p, err)
	}
	natstest.WaitFor(t, 10*time.Second, "a heartbeat with 2 running", func() bool {
		m, err := sub.NextMsg(time.Second)
		if err != nil {
			return false
		}
		var hb map[string]any
		if err := json.Unmarshal(m.Data, &hb); err != nil {
			t.Fatal(err)
		}
		_, hasTime := hb["time"]
		return hb["guest"] == "g1" && hb["running"] == float64(2) && hb["version"] == "1.2.3" && hasTime
	})
	// The micro service is discoverable.
	m, err := nc.Request("$SRV.INFO."+guestagent.ServiceName, nil, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var info micro.Info
	if err := json.Unmarshal(m.Data, &info); err != nil || len(info.Endpoints) != 5 || info.Metadata["guest"] != "g1" {
		t.Errorf("micro info %+v, %v", info, err)
	}
	for _, ep := range info.Endpoints {
		if !strings.HasPrefix(ep.Subject, "vmguard.agent.g1.") {
			t.Errorf("endpoint subject %s", ep.Subject)
		}
	}
}

func TestShutdownStopsProcesses(t *testing.T) {
	s := startServer(t, t.TempDir(), 0)
	l := openLog(t, s.ClientURL())
	ta := startAgent(t, s.ClientURL(), nil)
	var pids []int
	for _, id := range []string{"a", "b", "c"} {
		r := run(t, ta.client, sh("web", id, id, "sleep 100 & wait"))
		pids = append(pids, r.Process.PID)
	}
	ta.stop(t)
	xs := waitExits(t, l, "web", 3)
	for _, x := range xs {
		if x.Reason != guestagent.ReasonAgentStopped {
			t.Errorf("exit %+v, want reason agent_stopped", x)
		}
	}
	for _, pid := range pids {
		if m := groupMembers(pid); len(m) != 0 {
			t.Errorf("group %d still has %v", pid, m)
		}
	}
	// Everything was delivered before Run returned.
	if n := ta.Undelivered(); n != 0 {
		t.Errorf("%d undelivered after shutdown", n)
	}
}

func TestStateDirIsLocked(t *testing.T) {
	s := startServer(t, t.TempDir(), 0)
	ta := startAgent(t, s.ClientURL(), nil)
	a, err := guestagent.New(guestagent.Config{Guest: "g2", Conn: connect(t, s.ClientURL()), StateDir: ta.state})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Run(context.Background()); err == nil || !strings.Contains(err.Error(), "another agent uses it") {
		t.Errorf("second agent on the same state: %v", err)
	}
}

func TestNewChecksConfig(t *testing.T) {
	s := startServer(t, t.TempDir(), 0)
	nc := connect(t, s.ClientURL())
	for _, cfg := range []guestagent.Config{
		{Guest: "", Conn: nc, StateDir: "x"},
		{Guest: "a.b", Conn: nc, StateDir: "x"},
		{Guest: "g", StateDir: "x"},
		{Guest: "g", Conn: nc},
		{Guest: "g", Conn: nc, StateDir: "x", MaxProcs: -1},
		{Guest: "g", Conn: nc, StateDir: "x", Node: "n.1"},
	} {
		if _, err := guestagent.New(cfg); err == nil {
			t.Errorf("New(%+v): no error", cfg)
		}
	}
}

// TestMinimalEnv: services inherit only the documented minimum of the
// agent's environment, never its NATS_* or other variables.
func TestMinimalEnv(t *testing.T) {
	got := guestagent.MinimalEnv([]string{"NATS_URL=nats://a:pw@h:4222", "NATS_CREDS=/etc/x.creds", "PATH=/bin", "HOME=/root",
		"AWS_SECRET_ACCESS_KEY=k", "LC_ALL=C", "LANG=C.UTF-8", "VMGUARD_GUEST=x", "PATHX=1"})
	want := []string{"PATH=/bin", "HOME=/root", "LC_ALL=C", "LANG=C.UTF-8"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("MinimalEnv = %q, want %q", got, want)
	}
	if got := guestagent.MinimalEnv([]string{"NATS_URL=x"}); len(got) != 1 || !strings.HasPrefix(got[0], "PATH=/usr/local/sbin:") {
		t.Errorf("MinimalEnv without PATH = %q, want the default PATH only", got)
	}
}
