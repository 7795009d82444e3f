package hostmanager

import (
	"encoding/json"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/vmguard/vmguard/guestagent"
)

// TestHeartbeatCountsForTheSubjectsGuest: a beat counts for the guest whose
// subject it came on, never for one its payload names; a guest's NATS user
// may publish on its own heartbeat subject only.
func TestHeartbeatCountsForTheSubjectsGuest(t *testing.T) {
	env := newEnv(t)
	r, err := NewRunner(Config{Node: "node1", Log: env.log, StateDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	beat := func(subject, guest, node string) bool {
		b, _ := json.Marshal(guestagent.Heartbeat{Guest: guest, Node: node})
		return r.noteBeat(&nats.Msg{Subject: subject, Data: b})
	}
	if !beat(guestagent.HeartbeatSubject("webvm"), "webvm", "node1") {
		t.Error("a guest's own beat did not count")
	}
	if beat(guestagent.HeartbeatSubject("webvm"), "dbvm", "node1") {
		t.Error("webvm's beat counted for dbvm")
	}
	if beat(guestagent.HeartbeatSubject("webvm"), "webvm", "node2") {
		t.Error("a beat from another node's agent counted")
	}
	r.hbMu.Lock()
	defer r.hbMu.Unlock()
	if _, ok := r.hb["dbvm"]; ok {
		t.Error("dbvm has a heartbeat it never sent")
	}
}
