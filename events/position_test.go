package events

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/vmguard/vmguard/internal/natsd"
)

// replyMsg is a message with only a reply subject; Metadata says what
// positionOf must fall back to.
type replyMsg struct {
	jetstream.Msg
	reply string
}

func (m replyMsg) Reply() string { return m.reply }

func (m replyMsg) Metadata() (*jetstream.MsgMetadata, error) {
	return nil, errors.New("fallback")
}

func TestPositionOfReply(t *testing.T) {
	for _, c := range []struct {
		reply string
		want  position
	}{
		{"$JS.ACK.VMGUARD.c1.1.42.7.1700000000000000000.0", position{42, 7, 0}},
		{"$JS.ACK.VMGUARD.c1.1.42.7.1700000000000000000.913", position{42, 7, 913}},
		{"$JS.ACK._.ACCHASH.VMGUARD.c1.2.42.7.1700000000000000000.5.rnd", position{42, 7, 5}},
		{"$JS.ACK.dom.ACCHASH.VMGUARD.c1.2.18446744073709551.3.1700000000000000000.0", position{18446744073709551, 3, 0}},
	} {
		got, err := positionOf(replyMsg{reply: c.reply})
		if err != nil || got != c.want {
			t.Errorf("%s: %+v %v, want %+v", c.reply, got, err, c.want)
		}
	}
	for _, reply := range []string{"", "_INBOX.x", "$JS.ACK.S.c.1.x.7.1.0", "$JS.ACK.S.c.1.0.7.1.0",
		"$JS.ACK.S.c.1.4.7.1.", "$JS.ACK.a.b.S.c.1.42.7.1", "$JS.NAK.S.c.1.42.7.1.0"} {
		if p, err := positionOf(replyMsg{reply: reply}); err == nil {
			t.Errorf("%q: %+v, want the Metadata fallback", reply, p)
		}
	}
}

// On messages a real server delivers, positionOf reads what Metadata reads.
func TestPositionOfAgreesWithMetadata(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	nc := natsd.Connect(t, natsd.StartTest(t))
	l, err := Open(ctx, nc)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		if _, err := l.Append(ctx, benchEvent(i)); err != nil {
			t.Fatal(err)
		}
	}
	cons, err := l.stream.CreateConsumer(ctx, jetstream.ConsumerConfig{AckPolicy: jetstream.AckNonePolicy, DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: 2})
	if err != nil {
		t.Fatal(err)
	}
	batch, err := cons.Fetch(4, jetstream.FetchMaxWait(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for m := range batch.Messages() {
		meta, err := m.Metadata()
		if err != nil {
			t.Fatal(err)
		}
		got, err := positionOf(m)
		want := position{meta.Sequence.Stream, meta.Sequence.Consumer, meta.NumPending}
		if err != nil || got != want {
			t.Errorf("reply %s: %+v %v, want %+v", m.Reply(), got, err, want)
		}
		n++
	}
	if n != 4 {
		t.Fatalf("%d messages fetched, want 4 (%v)", n, batch.Error())
	}
}
