package natsd

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// TestManyConsumersOnAStream: a server started here takes more than
// nats-server's default of 1,000 consumers on one stream (every host
// manager holds two or three on the log); a config file's own
// default_max_consumers is kept.
func TestManyConsumersOnAStream(t *testing.T) {
	s := StartTest(t)
	js, err := jetstream.New(Connect(t, s))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	st, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "T", Subjects: []string{"t.>"}})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 1001 {
		if _, err := st.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{InactiveThreshold: time.Minute}); err != nil {
			t.Fatalf("consumer %d: %v", i+1, err)
		}
	}

	opts, err := Config{StoreDir: t.TempDir(), ConfigFile: writeConf(t, "jetstream { limits { default_max_consumers: 50 } }\n")}.Options()
	if err != nil {
		t.Fatal(err)
	}
	if got := opts.JetStreamLimits.DefaultMaxConsumers; got != 50 {
		t.Errorf("config file's default_max_consumers 50 became %d", got)
	}
}
