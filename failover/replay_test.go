package failover

import (
	"bufio"
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vmguard/vmguard/events"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from the current output")

// loadFixture reads testdata/<name>.jsonl: one structured CloudEvent a line,
// checked against the schemas; line n gets stream sequence n.
func loadFixture(t testing.TB, path string) []events.Event {
	t.Helper()
	codec, err := events.NewCodec()
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var evs []events.Event
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		e, err := codec.Decode(nil, line)
		if err != nil {
			t.Fatalf("%s:%d: %v", path, len(evs)+1, err)
		}
		e.Seq = uint64(len(evs) + 1)
		evs = append(evs, e)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return evs
}

func fixtures(t *testing.T) []string {
	t.Helper()
	paths, err := filepath.Glob("testdata/*.jsonl")
	if err != nil || len(paths) == 0 {
		t.Fatalf("no fixtures: %v", err)
	}
	return paths
}

// render is what the golden files hold for a log: the status as text (plain
// and -v) and JSON, what is due, and each package's explanation.
func render(t *testing.T, evs []events.Event) string {
	t.Helper()
	s := Fold(evs)
	v := BuildView(s)
	var b strings.Builder
	b.WriteString("== status\n")
	if err := v.WriteText(&b, false); err != nil {
		t.Fatal(err)
	}
	b.WriteString("== status -v\n")
	if err := v.WriteText(&b, true); err != nil {
		t.Fatal(err)
	}
	b.WriteString("== status -o json\n")
	j, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	b.Write(j)
	b.WriteString("\n== due (Reconcile)\n")
	for _, e := range Reconcile(s) {
		b.WriteString(brief([]events.Event{e}) + "\n")
	}
	for _, pv := range v.Packages {
		fmt.Fprintf(&b, "== explain %s\n", pv.Name)
		if err := WriteChain(&b, Explain(evs, pv.Name)); err != nil {
			t.Fatal(err)
		}
	}
	return b.String()
}

func TestFixturesGolden(t *testing.T) {
	for _, path := range fixtures(t) {
		t.Run(filepath.Base(path), func(t *testing.T) {
			got := render(t, loadFixture(t, path))
			golden := strings.TrimSuffix(path, ".jsonl") + ".golden"
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test -update to create it)", err)
			}
			if got != string(want) {
				t.Errorf("%s differs from the output (go test -update rewrites it):\n%s", golden, diffLines(string(want), got))
			}
		})
	}
}

// diffLines shows the first lines that differ.
func diffLines(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	var b strings.Builder
	for i := 0; i < max(len(w), len(g)) && b.Len() < 2000; i++ {
		var wl, gl string
		if i < len(w) {
			wl = w[i]
		}
		if i < len(g) {
			gl = g[i]
		}
		if wl != gl {
			fmt.Fprintf(&b, "line %d:\n  want %q\n   got %q\n", i+1, wl, gl)
		}
	}
	return b.String()
}

// TestFixturesDecisions checks that every decision the controller wrote in
// a fixture (placements, halts) is what Decide returns for its cause, with
// the log up to just before it.
func TestFixturesDecisions(t *testing.T) {
	for _, path := range fixtures(t) {
		t.Run(filepath.Base(path), func(t *testing.T) {
			evs := loadFixture(t, path)
			byID := map[string]events.Event{}
			for _, e := range evs {
				byID[e.ID] = e
			}
			n := 0
			for _, e := range evs {
				if typ := e.Type(); e.Source != Source || (typ != events.TypePackagePlaced && typ != events.TypePackageHalting) {
					continue // node.lost is an observation, not a decision
				}
				n++
				trigger, ok := byID[e.CauseID]
				if !ok {
					t.Fatalf("seq %d: cause %q not in the log", e.Seq, e.CauseID)
				}
				found := false
				for _, d := range Decide(FoldUntil(evs, e.Seq-1), trigger) {
					if d.Subject == e.Subject && d.Data == e.Data && d.CauseID == e.CauseID {
						found = true
					}
				}
				if !found {
					t.Errorf("seq %d %s %s: Decide on seq %d does not return it", e.Seq, e.Subject, e.Summary(), trigger.Seq)
				}
			}
			if n == 0 {
				t.Error("fixture has no controller decision to check")
			}
		})
	}
}

// TestReplayTwice folds each fixture, then the same log again into the same
// state: nothing changes, and a fresh fold gives the same state.
func TestReplayTwice(t *testing.T) {
	for _, path := range fixtures(t) {
		t.Run(filepath.Base(path), func(t *testing.T) {
			evs := loadFixture(t, path)
			s := Fold(evs)
			once := s.Clone()
			for _, e := range evs {
				if s.Apply(e) {
					t.Fatalf("seq %d applied twice", e.Seq)
				}
			}
			if !equalStates(s, once) {
				t.Error("replaying the log again changed the state")
			}
			if !equalStates(Fold(evs), once) {
				t.Error("two folds of the same log differ")
			}
		})
	}
}

// TestFoldUntilEqualsPrefix: the state at seq N (`status --at N`) is a fresh
// fold of the log's first N events, for every N, also when the log's
// sequences have gaps (a filtered read).
func TestFoldUntilEqualsPrefix(t *testing.T) {
	for _, path := range fixtures(t) {
		t.Run(filepath.Base(path), func(t *testing.T) {
			evs := loadFixture(t, path)
			for n := 0; n <= len(evs); n++ {
				at := FoldUntil(evs, uint64(n))
				fresh := Fold(evs[:n])
				if !equalStates(at, fresh) {
					t.Fatalf("FoldUntil(%d) differs from folding the first %d events", n, n)
				}
				var a, b bytes.Buffer
				BuildView(at).WriteText(&a, true)
				BuildView(fresh).WriteText(&b, true)
				if a.String() != b.String() {
					t.Fatalf("status at %d differs", n)
				}
			}
			gapped := make([]events.Event, len(evs))
			for i, e := range evs {
				e.Seq = uint64(3*i + 2)
				gapped[i] = e
			}
			for seq := uint64(0); seq <= uint64(3*len(evs)+3); seq++ {
				n := 0
				for n < len(gapped) && gapped[n].Seq <= seq {
					n++
				}
				if !equalStates(FoldUntil(gapped, seq), Fold(gapped[:n])) {
					t.Fatalf("gapped: FoldUntil(%d) differs from folding the first %d events", seq, n)
				}
			}
		})
	}
}

func TestSeqAt(t *testing.T) {
	l := newLog(t)
	l.config(testCluster())
	l.join("node1", "node2", "node3") // seq 2..4 at t0+2s..t0+4s
	for _, c := range []struct {
		secs int
		want uint64
	}{{0, 0}, {1, 1}, {3, 3}, {4, 4}, {100, 4}} {
		if got := SeqAt(l.evs, t0.Add(time.Duration(c.secs)*time.Second)); got != c.want {
			t.Errorf("SeqAt(t0+%ds) = %d, want %d", c.secs, got, c.want)
		}
	}
	// A writer whose clock is behind: its event still counts at its time.
	l.evs[2].Time = t0
	if got := SeqAt(l.evs, t0.Add(time.Second)); got != 3 {
		t.Errorf("SeqAt with a skewed clock = %d, want 3", got)
	}
}
