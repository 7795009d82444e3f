package hostmanager

import (
	"testing"

	"github.com/vmguard/vmguard/events"
)

// TestConfigCacheShares: host managers with one ConfigCache fold the same
// cluster.config_applied into one parsed configuration, a later one into
// another; without a cache each has its own. The states agree either way.
func TestConfigCacheShares(t *testing.T) {
	h := newHarness(t, cfgYAML("", ""))
	cfgEvent := h.log[len(h.log)-1]
	cache := NewConfigCache()
	fold := func(c *ConfigCache, node string, evs ...events.Event) *State {
		s := NewState(node)
		s.configs = c
		for _, e := range evs {
			s.Apply(e)
		}
		return s
	}
	a, b := fold(cache, "node1", cfgEvent), fold(cache, "node2", cfgEvent)
	if a.Config == nil || a.Config != b.Config {
		t.Fatalf("one event, one cache: configs %p and %p, want the same", a.Config, b.Config)
	}
	own := fold(nil, "node1", cfgEvent)
	if own.Config == nil || own.Config == a.Config || len(own.Config.Packages) != len(a.Config.Packages) || own.ConfigID != a.ConfigID {
		t.Fatalf("without a cache: %p (%d packages, %s), want a copy of %p (%d packages, %s)",
			own.Config, len(own.Config.Packages), own.ConfigID, a.Config, len(a.Config.Packages), a.ConfigID)
	}
	h.config(cfgYAML("restart: 2", ""))
	next := h.log[len(h.log)-1]
	c := fold(cache, "node1", cfgEvent, next)
	if c.Config == a.Config || c.ConfigID != next.ID {
		t.Fatalf("a later config_applied: got the config of %s", c.ConfigID)
	}
	if d := fold(cache, "node3", cfgEvent, next); d.Config != c.Config {
		t.Error("the later configuration was parsed twice")
	}
	for range configCacheSize + 1 {
		h.config(cfgYAML("restart: 3", ""))
		fold(cache, "node1", h.log[len(h.log)-1])
	}
	if n := len(cache.byID); n != configCacheSize {
		t.Errorf("cache holds %d configurations, want %d", n, configCacheSize)
	}
}

// TestConfigMakesNoPackageEntries: folding a configuration keeps it, and
// makes no entry for the packages it names: an entry comes with an event
// about the package. (An entry for each of 10,000 configured packages in
// each of 200 host managers of one process was 380 MB, `vmguard bench
// scale`.)
func TestConfigMakesNoPackageEntries(t *testing.T) {
	h := newHarness(t, cfgYAML("", ""))
	s := NewState("node1")
	s.Apply(h.log[len(h.log)-1])
	if s.Config == nil || len(s.Config.Packages) == 0 {
		t.Fatal("the configuration was not folded")
	}
	if len(s.Packages) != 0 {
		t.Errorf("folding the configuration made %d package entries, want none", len(s.Packages))
	}
}
