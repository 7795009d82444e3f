package hostmanager

import "time"

// Metrics receives what the host manager measures that the event log does
// not carry (internal/metrics implements it; what it appends is measured
// by the log's events.Observer). Its methods must be fast and never block.
type Metrics interface {
	// LeaseRenewed reports a lease take or renewal that succeeded and how
	// long the server took to answer it.
	LeaseRenewed(took time.Duration)
	// Heartbeat reports a heartbeat received from a guest of this node.
	Heartbeat(guest string)
}

// noMetrics is the Metrics of a runner configured without one.
type noMetrics struct{}

func (noMetrics) LeaseRenewed(time.Duration) {}
func (noMetrics) Heartbeat(string)           {}
