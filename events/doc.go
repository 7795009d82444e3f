// Package events owns vmguard's event model: the Go types of every event in the
// catalog, their NATS subjects, their CloudEvents encoding, and the Log that
// appends them to and reads them from the VMGUARD JetStream stream.
//
// It must not decide anything: deciders (hostmanager, failover) fold events
// into their own state. Everything here is I/O or plain data.
package events
