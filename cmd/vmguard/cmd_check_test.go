package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestCheckTimeline: `vmguard check` refuses a config whose fencing
// timeline cannot hold (renew interval + guard_bound + guard_stop_time <
// node_timeout, and the guard not before the host manager's own fence),
// naming the numbers and the line of the key at fault.
func TestCheckTimeline(t *testing.T) {
	const nodes = "cluster: demo\nnodes: [node1]\n"
	for _, tc := range []struct {
		name string
		top  string // lines before nodes:
		want string // "" = ok; else the problem line without the file name
	}{
		{"defaults", "node_timeout: 5s\n", ""},
		{"default node_timeout", "", ""},
		{"explicit keys that hold", "node_timeout: 5s\nguard_bound: 2s\nguard_stop_time: 1s\n", ""},
		{"short node_timeout, defaults follow it", "node_timeout: 1s\n", ""},
		{"stop time too long", "node_timeout: 5s\nguard_stop_time: 2s\n",
			":3: guard_stop_time: fencing timeline: renew interval 1.25s (node_timeout/4) + guard_bound 2s + guard_stop_time 2s = 5.25s, not less than node_timeout 5s: a node could be declared lost while its guests still run; shorten guard_bound or guard_stop_time, or raise node_timeout"},
		{"bound too long", "node_timeout: 4s\nguard_bound: 3s\n",
			":3: guard_bound: fencing timeline: renew interval 1s (node_timeout/4) + guard_bound 3s + guard_stop_time 1s = 5s, not less than node_timeout 4s"},
		{"guard before the host's fence", "node_timeout: 10s\nguard_bound: 1s\n",
			":3: guard_bound: fencing timeline: renew interval 2.5s (node_timeout/4) + guard_bound 1s = 3.5s, before the host manager's own fence at 6s (0.6 × node_timeout 10s): a slow renewal would make the guard stop the guests of a healthy node; raise guard_bound to at least 3.5s"},
		{"node_timeout lowered under explicit keys", "node_timeout: 2s\nguard_bound: 1s\nguard_stop_time: 1s\n",
			":3: guard_bound: fencing timeline: renew interval 500ms (node_timeout/4) + guard_bound 1s + guard_stop_time 1s = 2.5s, not less than node_timeout 2s"},
		{"zero stop time", "guard_stop_time: 0s\n", ":2: guard_stop_time: 0s: must be more than 0 (leave it out for the default)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := filepath.Join(t.TempDir(), "c.yaml")
			src := strings.Replace(nodes, "nodes:", tc.top+"nodes:", 1)
			if err := os.WriteFile(f, []byte(src), 0o644); err != nil {
				t.Fatal(err)
			}
			code, out, errs := runCLI("check", "-f", f)
			if tc.want == "" {
				if code != exitOK || !strings.HasPrefix(out, "ok: ") {
					t.Fatalf("code %d, out %q, stderr %q; want ok", code, out, errs)
				}
				return
			}
			if code != exitError || out != "" {
				t.Fatalf("code %d, out %q; want %d and nothing on stdout", code, out, exitError)
			}
			if first, _, _ := strings.Cut(errs, "\n"); !strings.HasPrefix(first, f+tc.want) {
				t.Errorf("stderr\n%s\nwant its first line to start with\n%s%s", errs, f, tc.want)
			}
		})
	}
}
