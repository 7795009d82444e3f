package timeline

import (
	"strings"
	"testing"
	"time"
)

// TestDefaultHolds checks that the defaults hold for every node_timeout a
// config may have, and the order of the steps the package doc states.
func TestDefaultHolds(t *testing.T) {
	for ms := 1000; ms <= 120000; ms += 7 {
		tl := Default(time.Duration(ms) * time.Millisecond)
		if p := tl.Problems(); len(p) > 0 {
			t.Fatalf("Default(%dms): %v", ms, p)
		}
		steps := []time.Duration{0, tl.Renew(), tl.SelfFence(), tl.GuardAfter(), tl.GuestsDownBy(), tl.NodeTimeout}
		for i := 1; i < len(steps); i++ {
			if steps[i] <= steps[i-1] {
				t.Fatalf("Default(%dms): step %d at %s, not after step %d at %s: %s", ms, i, steps[i], i-1, steps[i-1], tl)
			}
		}
	}
}

func TestProblems(t *testing.T) {
	s := time.Second
	for _, tc := range []struct {
		name string
		tl   Timeline
		want []string // substrings, one per problem; none: it holds
	}{
		{"defaults", Default(5 * s), nil},
		{"tight but holds", Timeline{NodeTimeout: 4 * s, GuardBound: 1400 * time.Millisecond, GuestStop: 1500 * time.Millisecond}, nil},
		{"stop too long", Timeline{NodeTimeout: 5 * s, GuardBound: 2 * s, GuestStop: 2 * s},
			[]string{"renew interval 1.25s (node_timeout/4) + guard_bound 2s + guard_stop_time 2s = 5.25s, not less than node_timeout 5s"}},
		{"exactly node_timeout", Timeline{NodeTimeout: 4 * s, GuardBound: 2 * s, GuestStop: s},
			[]string{"= 4s, not less than node_timeout 4s"}},
		{"guard before the host's own fence", Timeline{NodeTimeout: 10 * s, GuardBound: s, GuestStop: s},
			[]string{"renew interval 2.5s (node_timeout/4) + guard_bound 1s = 3.5s, before the host manager's own fence at 6s (0.6 × node_timeout 10s): a slow renewal would make the guard stop the guests of a healthy node; raise guard_bound to at least 3.5s"}},
		{"both", Timeline{NodeTimeout: 10 * s, GuardBound: s, GuestStop: 7 * s},
			[]string{"not less than node_timeout 10s", "before the host manager's own fence"}},
		{"zero bound", Timeline{NodeTimeout: 5 * s, GuestStop: s}, []string{"guard_bound: 0s: must be more than 0"}},
		{"negative stop", Timeline{NodeTimeout: 5 * s, GuardBound: 2 * s, GuestStop: -s}, []string{"guard_stop_time: -1s: must be more than 0"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := tc.tl.Problems()
			if len(got) != len(tc.want) {
				t.Fatalf("Problems() = %q, want %d matching %q", got, len(tc.want), tc.want)
			}
			for i, w := range tc.want {
				if !strings.Contains(got[i], w) {
					t.Errorf("problem %d = %q, want it to contain %q", i, got[i], w)
				}
			}
		})
	}
}
