package config

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
)

// JSON returns the configuration in the canonical JSON form recorded by
// cluster.config_applied: fields in declaration order, map keys sorted,
// defaults filled in. FromJSON reads it back.
func (c *Cluster) JSON() ([]byte, error) {
	b, err := json.Marshal(c)
	if err != nil {
		return nil, fmt.Errorf("encode config: %w", err)
	}
	return b, nil
}

// Hash returns the hex SHA-256 of the configuration's canonical JSON, so two
// files that differ only in layout, comments or spelled-out defaults have
// the same hash.
func (c *Cluster) Hash() (string, error) {
	b, err := c.JSON()
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:]), nil
}
