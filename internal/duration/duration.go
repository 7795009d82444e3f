// Package duration owns Duration, the "5s"-style time span that the cluster
// configuration and the guest agent's API both carry. It is its own small
// package so that the guest agent needs nothing of the cluster
// configuration (config and its YAML code stay out of the guest binary). It
// must not grow beyond plain value types.
package duration

import (
	"fmt"
	"strings"
	"time"
)

// Duration is a time.Duration written as "5s", "10m".
type Duration time.Duration

// D returns d as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// String formats d like time.Duration.
func (d Duration) String() string { return time.Duration(d).String() }

// Parse parses "5s"-style durations; a negative one is an error.
func Parse(s string) (Duration, error) {
	v, err := time.ParseDuration(strings.TrimSpace(s))
	if err != nil {
		return 0, fmt.Errorf("%q is not a duration (use e.g. 500ms, 5s, 10m)", s)
	}
	if v < 0 {
		return 0, fmt.Errorf("%q is negative", s)
	}
	return Duration(v), nil
}

// UnmarshalText implements encoding.TextUnmarshaler (YAML and JSON).
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := Parse(string(b))
	if err != nil {
		return err
	}
	*d = v
	return nil
}

// MarshalText implements encoding.TextMarshaler.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }
