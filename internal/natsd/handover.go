package natsd

import (
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// HandoverWait bounds how long Stop waits for the streams a member led to
// have a leader elsewhere before it shuts the member down.
const HandoverWait = 3 * time.Second

// Stop shuts s down, a cluster member handing over the leadership of every
// stream it leads first: it asks each that has a current replica online to
// step down and waits, up to wait, until another member leads it. It returns how many streams it led and
// how many of them had another leader in time.
//
// nats-server's own Shutdown steps its raft groups down too, but shuts them
// down at once after: a leader transfer that has not gone out by then is
// lost, and the remaining members elect a leader only once their election
// timers run out (4-9 s). A `vmguard server` stopped that way left the
// lease bucket without a leader for 4.8 s (renewal gaps of 11-12 s and a
// fenced node in TestClusterSurvivesServerLoss, once in CI, under load).
func Stop(s *server.Server, wait time.Duration) (led, moved int) {
	defer func() {
		s.Shutdown()
		s.WaitForShutdown()
	}()
	if !s.JetStreamIsClustered() {
		return 0, 0
	}
	mine := map[[2]string]bool{}
	for k, st := range streamLeaders(s) {
		if st.leader == s.Name() && st.successor {
			mine[k] = true
			_ = s.JetStreamStepdownStream(k[0], k[1]) // one that stays is counted below
		}
	}
	deadline := time.Now().Add(wait)
	for {
		moved = 0
		leaders := streamLeaders(s)
		for k := range mine {
			if l := leaders[k].leader; l != "" && l != s.Name() {
				moved++
			}
		}
		if moved == len(mine) || !time.Now().Before(deadline) {
			return len(mine), moved
		}
		time.Sleep(20 * time.Millisecond) // the new leader's election, seen by this member
	}
}

// leadership is what a member sees of a clustered stream's leadership.
type leadership struct {
	leader    string // "" while none
	successor bool   // another replica is online and current: it could lead
}

// streamLeaders returns what s sees of the leadership of every clustered
// stream of every account, by account id and stream name.
func streamLeaders(s *server.Server) map[[2]string]leadership {
	out := map[[2]string]leadership{}
	info, err := s.Jsz(&server.JSzOptions{Accounts: true, Streams: true})
	if err != nil {
		return out
	}
	for _, a := range info.AccountDetails {
		for _, st := range a.Streams {
			if st.Cluster == nil {
				continue
			}
			l := leadership{leader: st.Cluster.Leader}
			for _, r := range st.Cluster.Replicas {
				l.successor = l.successor || (r.Current && !r.Offline)
			}
			out[[2]string{a.Id, st.Name}] = l
		}
	}
	return out
}
