package hostmanager

import (
	"bufio"
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"pgregory.net/rapid"

	"github.com/vmguard/vmguard/events"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from the current output (never the *.jsonl inputs)")

func snapshotJSON(t testing.TB, s *State) string {
	t.Helper()
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// snapshot returns a deep copy of s.
func snapshot(t testing.TB, s *State) *State {
	t.Helper()
	var c State
	if err := json.Unmarshal([]byte(snapshotJSON(t, s)), &c); err != nil {
		t.Fatal(err)
	}
	return &c
}

// fold applies evs to a fresh state of node1.
func fold(evs []events.Event) *State {
	s := NewState(me)
	for _, e := range evs {
		s.Apply(e)
	}
	return s
}

// scenario is a log that goes through most branches: start, restarts with
// backoff, a guest loss and restart, a reset, an operator halt, a run
// again, a failure, and a move.
func scenario(t rapid.TB) []events.Event {
	h := newHarness(t, cfgYAML("restart: 2\nrestart_window: 10m\nbackoff: {delay: 100ms, factor: 2, max: 1s}", "restart: 1"))
	h.start()
	for range 2 {
		h.advance(time.Second)
		h.exit("a", 1)
		h.settle()
		h.advance(time.Second)
		h.settle()
	}
	h.add(HostSource(me), "web", "", events.GuestLost{Guest: "webvm", Node: me, Epoch: 1})
	h.settle()
	h.add("/vmguard/cli/alice", "web", "", events.PackageReset{Service: "a", By: "alice"})
	h.advance(time.Second)
	h.exit("b", 0)
	h.settle()
	h.advance(time.Second)
	h.settle()
	h.add("/vmguard/cli/alice", "web", "", events.PackageHalting{Node: me, Epoch: 1, Reason: "maintenance", By: "alice"})
	h.settle()
	h.place(me, "operator_run")
	h.settle()
	for range 3 {
		h.advance(time.Second)
		h.exit("a", 2)
		h.settle()
		h.advance(2 * time.Second)
		h.settle()
	}
	h.add("/vmguard/failover", "web", "", events.PackagePlaced{Node: "node2", Epoch: 3, Reason: "failover", PreviousNode: me})
	h.add("/vmguard/nodes/node2/host", "web", "", events.PackageStarting{Node: "node2", Epoch: 3})
	h.place(me, "failback")
	h.add("/vmguard/failover", "node2", "", events.NodeLost{Reason: "lease expired"})
	h.settle()
	return h.log
}

func TestReplayTwiceSameState(t *testing.T) {
	log := scenario(t)
	s := fold(log)
	want := snapshotJSON(t, s)
	for _, e := range log {
		if s.Apply(e) {
			t.Fatalf("event %d applied twice", e.Seq)
		}
	}
	if got := snapshotJSON(t, s); got != want {
		t.Errorf("second replay changed the state")
	}
	if got := snapshotJSON(t, fold(log)); got != want {
		t.Errorf("a fresh replay differs")
	}
	if !reflect.DeepEqual(fold(log), fold(log)) {
		t.Error("two folds differ")
	}
}

// TestCrashAnywhereFinishesTheSame cuts the scenario log at every point,
// rebuilds a fresh state from the prefix (a new runner after kill -9) and
// checks that it decides and asks for exactly what the live state did.
func TestCrashAnywhereFinishesTheSame(t *testing.T) {
	log := scenario(t)
	live := NewState(me)
	for k, e := range log {
		live.Apply(e)
		fresh := fold(log[:k+1])
		for _, pkg := range live.PackageNames() {
			d1, ok1 := Decide(live, pkg)
			d2, ok2 := Decide(fresh, pkg)
			if ok1 != ok2 || !reflect.DeepEqual(d1, d2) {
				t.Fatalf("after event %d: decisions differ: %+v / %+v", e.Seq, d1, d2)
			}
			if a1, a2 := Pending(live, pkg), Pending(fresh, pkg); !reflect.DeepEqual(a1, a2) {
				t.Fatalf("after event %d: actions differ: %+v / %+v", e.Seq, a1, a2)
			}
		}
	}
}

// TestReplayFixtures replays testdata/*.jsonl (CloudEvents as stored, one
// per line, seq = line number) and compares each step's decision and
// actions with the golden file. -update rewrites only the golden files
// (the outputs); the fixtures are inputs and are never regenerated from the
// code under test, or -update would make any change look right.
func TestReplayFixtures(t *testing.T) {
	codec, err := events.NewCodec()
	if err != nil {
		t.Fatal(err)
	}
	files, err := filepath.Glob("testdata/*.jsonl")
	if err != nil || len(files) == 0 {
		t.Fatalf("no fixtures: %v", err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			s := NewState(me)
			var out strings.Builder
			sc := bufio.NewScanner(bytes.NewReader(data))
			sc.Buffer(nil, 1<<20)
			var seq uint64
			for sc.Scan() {
				seq++
				e, err := codec.Decode(nil, sc.Bytes())
				if err != nil {
					t.Fatalf("line %d: %v", seq, err)
				}
				e.Seq = seq
				s.Apply(e)
				summary := e.Summary()
				if d, ok := e.Data.(events.ConfigApplied); ok {
					summary = "hash=" + d.Hash
				}
				fmt.Fprintf(&out, "%d %s %s\n", seq, events.ShortType(e.Type()), summary)
				for _, pkg := range Affected(s, e) {
					if d, ok := Decide(s, pkg); ok {
						fmt.Fprintf(&out, "  decide %s cause=%s %s\n", events.ShortType(d.Type()), d.CauseID, d.Summary())
					}
					for _, a := range Pending(s, pkg) {
						fmt.Fprintf(&out, "  act %s %s svc=%s req=%s cause=%s force=%v\n", a.Kind, a.Package, a.Service.Name, a.RequestID, a.CauseID, a.Force)
					}
				}
			}
			golden := strings.TrimSuffix(f, ".jsonl") + ".golden"
			if *update {
				if err := os.WriteFile(golden, []byte(out.String()), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if out.String() != string(want) {
				t.Errorf("replay of %s differs from %s (run with -update after checking the change):\n%s", f, golden, out.String())
			}
		})
	}
}
