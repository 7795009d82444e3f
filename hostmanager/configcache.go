package hostmanager

import (
	"sync"

	"github.com/vmguard/vmguard/config"
	"github.com/vmguard/vmguard/events"
)

// ConfigCache shares the configurations parsed from cluster.config_applied
// events between the host managers of one process (Config.Configs): each
// would otherwise hold its own copy, ~40 MB at 10,000 packages, which is
// what bounds how many host managers `vmguard bench scale` can run in one
// process. A configuration is parsed once per event (by its ID: the same
// event has the same bytes) and is read-only once parsed: the host manager
// never changes a config.Cluster, it copies what it keeps (an instance's
// config.Package).
type ConfigCache struct {
	mu   sync.Mutex
	byID map[string]*config.Cluster
	ids  []string // oldest first
}

// configCacheSize is how many configurations a ConfigCache keeps: the one
// in force and the few before it that a host manager starting late may
// still replay.
const configCacheSize = 4

// NewConfigCache returns an empty cache.
func NewConfigCache() *ConfigCache { return &ConfigCache{byID: map[string]*config.Cluster{}} }

// parse returns the configuration of d, the data of the event id; without a
// cache (nil) or an id it parses d alone.
func (c *ConfigCache) parse(id string, d events.ConfigApplied) (*config.Cluster, error) {
	if c == nil || id == "" {
		return config.FromJSON(d.Config)
	}
	c.mu.Lock()
	defer c.mu.Unlock() // parsed once: the others wait for it
	if cl := c.byID[id]; cl != nil {
		return cl, nil
	}
	cl, err := config.FromJSON(d.Config)
	if err != nil {
		return nil, err
	}
	c.byID[id] = cl
	c.ids = append(c.ids, id)
	if len(c.ids) > configCacheSize {
		delete(c.byID, c.ids[0])
		c.ids = c.ids[1:]
	}
	return cl, nil
}
