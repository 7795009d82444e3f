// Package events owns vmguard's event model: the Go types of every event in the
// catalog, their NATS subjects, their CloudEvents encoding, and the Log that
// appends them to and reads them from the VMGUARD JetStream stream.
//
// It must not decide anything: deciders (hostmanager, failover) fold events
// into their own state. Everything here is I/O or plain data.
//
// The Log hides NATS from its callers: an append's condition is a plain
// value (Expect) that the Log turns into the server's headers, AppendAsync
// returns the Log's own Appending, and the key-value buckets kept beside
// the log (leases, election, snapshots) are set up once, by EnsureBucket,
// with the log's replica count. Log.Conn and Log.JetStream remain for what
// is not the log: the host manager's agent client (request/reply to the
// guests' micro service), the lease prober and ReadFromLeader (direct gets
// at a bucket's leader), the CloudEvents sink's durable consumer, the
// simulated guests, and the benchmarks that measure raw JetStream as a
// baseline.
package events
