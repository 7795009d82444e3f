// Package lease owns the node lease contract shared by the host manager
// (which holds and renews its node's lease), the guest agent (which fences
// its processes when its node's lease lapses) and the failover controller
// (which records node.lost once a lease has expired, never earlier).
//
// A lease is one key in the JetStream key-value bucket "vmguard_leases": key =
// node name, value = JSON Value. The bucket's TTL (MaxAge) is the cluster's
// node_timeout, so the server itself removes a lease that is not renewed in
// time; a missing key is an expired lease. Holders renew every TTL/4. The
// bucket has as many replicas as the VMGUARD stream, so a clustered log keeps
// its leases through the loss of a server.
//
// Expiry is judged, not just read: a key also expires when the store itself
// could take no renewals (no quorum, a server restarting), and that must not
// read as the node's death. The failover controller runs a Prober, which
// writes a probe key of its own (ProbeKey) and feeds a Judge, and declares a
// node lost only when its key is missing, the Judge says Lost (the store has
// taken writes without a break for a whole TTL) and the bucket's leader has
// no lease for it either (ReadFromLeader). See Judge for the exact rule. The
// holder's side is unchanged by an outage: it fences itself FenceAfter(TTL)
// after its last renewal that succeeded, whatever the cause.
//
// Its parts, and who uses them:
//   - Value, Ensure, Open, KeySubject: the key and the bucket (everyone).
//   - Watcher (watcher.go): follows one node's key by watch and poll and
//     hands each revision to its Observe callback, the node free to change
//     while it runs (Node, Kick); Newer orders revisions, WrittenAt times
//     them. The guest agent fences by it (guestagent/fence.go keeps only
//     the fence timer and state); anything else that must follow a node's
//     lease (an agent that follows its node across a failover) should too.
//   - Judge and Prober (judge.go, probe.go), ReadFromLeader: the failover
//     controller's expiry judgement (failover/liveness.go).
//   - Renew (renew.go): one renewal of a held key, in overlapping attempts
//     until the holder's fence (hostmanager/lease.go).
//   - timing.go: every number of the holder (RenewAttempt, RenewResend, RenewRetry,
//     TakeTimeout, TakeRetry, TakeoverWait: hostmanager/lease.go and
//     vmguard host's takeover check), the watcher (PollEvery, PollTimeout,
//     FenceHalt), the prober (ProbeEvery, ProbeGap) and the election
//     (ElectionRenewEvery, ElectionPoll: failover/election.go).
//
// The package must not decide anything about packages or append to the
// log; it observes and times leases, and its users act.
//
// Times come from a Clock (SystemClock in production) or from the caller;
// the judgement itself is pure. Every timing number of the contract is in
// timing.go (on top of internal/timeline), and TestTiming asserts all their
// inequalities in one place.
package lease

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/vmguard/vmguard/events"
	"github.com/vmguard/vmguard/internal/timeline"
)

// Bucket is the key-value bucket holding node leases.
const Bucket = "vmguard_leases"

// StreamName is the JetStream stream behind Bucket.
const StreamName = "KV_" + Bucket

// KeySubject is the subject of node's key in Bucket: a direct get of its
// last message ($JS.API.DIRECT.GET.<StreamName>.<KeySubject>) reads the
// lease from any current replica (KV buckets allow direct get).
func KeySubject(node string) string { return "$KV." + Bucket + "." + node }

// Value is what a lease key holds.
type Value struct {
	// Node is the node the lease is for.
	Node string `json:"node"`
	// Holder identifies the host manager instance holding it.
	Holder string `json:"holder"`
	// Renewed is when the holder last wrote it, by its clock.
	Renewed time.Time `json:"renewed"`
	// TTLMS is the lease's time to live in milliseconds (node_timeout).
	TTLMS int64 `json:"ttl_ms"`
	// Host, PID and Since say where the holder runs and since when it holds
	// the lease, for an operator (a refused second host manager names them).
	Host  string    `json:"host,omitempty"`
	PID   int       `json:"pid,omitempty"`
	Since time.Time `json:"since,omitzero"`
	// FrozenUntil is set while the log shows the node frozen (`vmguard node
	// freeze`): the end of the freeze. A guest agent that sees the lease
	// lapse before then keeps its processes, and fences FenceAfter(ttl)
	// after it instead, unless a renewal comes first.
	FrozenUntil time.Time `json:"frozen_until,omitzero"`
}

// Who names the holder for an operator: its host, pid and since when.
func (v Value) Who() string {
	if v.PID == 0 {
		return "holder " + v.Holder
	}
	return fmt.Sprintf("pid %d on %s, holding it since %s (holder %s)", v.PID, v.Host, v.Since.Local().Format(time.DateTime), v.Holder)
}

// TTL returns the lease's time to live.
func (v Value) TTL() time.Duration { return time.Duration(v.TTLMS) * time.Millisecond }

// Encode returns v as JSON.
func (v Value) Encode() []byte {
	b, _ := json.Marshal(v) // a struct of plain fields always marshals
	return b
}

// Decode reads a lease value.
func Decode(b []byte) (Value, error) {
	var v Value
	if err := json.Unmarshal(b, &v); err != nil {
		return Value{}, fmt.Errorf("decode lease: %w", err)
	}
	return v, nil
}

// RenewEvery is how often a holder renews a lease of the given TTL
// (internal/timeline owns the fencing timeline).
func RenewEvery(ttl time.Duration) time.Duration { return timeline.RenewEvery(ttl) }

// FenceAfter is how long a guest agent waits without seeing a renewal before
// it stops its processes, and how long a host manager waits after sending
// its last renewal that succeeded before it stops its guests: well inside
// the TTL, so that the guests and their processes are gone before anyone
// can declare the node lost and place its packages elsewhere, even if the
// agent saw the last renewal late or the guest takes a while to stop.
func FenceAfter(ttl time.Duration) time.Duration { return timeline.FenceAfter(ttl) }

// Spec is the lease bucket's set-up with key TTL ttl.
func Spec(ttl time.Duration) events.Bucket {
	return events.Bucket{
		Name:        Bucket,
		Description: "vmguard node leases; a key expires when its node stops renewing it",
		TTL:         ttl,
	}
}

// Ensure creates the lease bucket with TTL ttl, or updates its TTL to ttl.
// The bucket gets the replica count of the VMGUARD stream (1 without one,
// events.EnsureBucket): on a cluster whose log is R3 the leases are R3 too,
// or losing the one server that held them would make every node look lost.
func Ensure(ctx context.Context, js jetstream.JetStream, ttl time.Duration) (jetstream.KeyValue, error) {
	if ttl <= 0 {
		return nil, errors.New("lease ttl: must be positive")
	}
	return events.EnsureBucket(ctx, js, Spec(ttl))
}

// Open binds to the existing lease bucket.
func Open(ctx context.Context, js jetstream.JetStream) (jetstream.KeyValue, error) {
	kv, err := js.KeyValue(ctx, Bucket)
	if err != nil {
		return nil, fmt.Errorf("open lease bucket: %w", err)
	}
	return kv, nil
}

// ErrNotHeld is Release's answer when the key is missing or not the caller's.
var ErrNotHeld = errors.New("not held")

// Release deletes key from kv if its current value is the caller's (ours
// says whether a value names it), with the revision it read as the
// delete's expected last revision, so that a holder that took the key in
// between keeps it. It reads the key rather than trusting the last revision
// the caller wrote: a renewal cut short by a stop may have been stored
// without its ack arriving. The host manager releases its node's lease so
// on a clean stop, and the failover leader its leader key (bucket
// vmguard_failover), so that a successor takes over at once.
func Release(ctx context.Context, kv jetstream.KeyValue, key string, ours func([]byte) bool) error {
	e, err := kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("release %s: %w", key, ErrNotHeld)
	}
	if err != nil {
		return fmt.Errorf("release %s: %w", key, err)
	}
	if !ours(e.Value()) {
		return fmt.Errorf("release %s: %w", key, ErrNotHeld)
	}
	if err := kv.Delete(ctx, key, jetstream.LastRevision(e.Revision())); err != nil {
		return fmt.Errorf("release %s: %w", key, err)
	}
	return nil
}
