package natsd

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func writeConf(t *testing.T, conf string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "nats.conf")
	if err := os.WriteFile(p, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestOptionsFromConfigFile: what the config file sets is kept unless a
// field overrides it; defaults fill the rest.
func TestOptionsFromConfigFile(t *testing.T) {
	p := writeConf(t, "server_name: a1\nlisten: 127.0.0.2:4300\njetstream { store_dir: \"/tmp/x\" }\n")
	o, err := Config{ConfigFile: p}.Options()
	if err != nil {
		t.Fatal(err)
	}
	if o.ServerName != "a1" || o.Host != "127.0.0.2" || o.Port != 4300 || o.StoreDir != "/tmp/x" {
		t.Errorf("got name %q host %q port %d store %q, want the file's", o.ServerName, o.Host, o.Port, o.StoreDir)
	}
	o, err = Config{ConfigFile: p, Name: "b", Host: "127.0.0.3", Port: 4400, StoreDir: "/tmp/y"}.Options()
	if err != nil {
		t.Fatal(err)
	}
	if o.ServerName != "b" || o.Host != "127.0.0.3" || o.Port != 4400 || o.StoreDir != "/tmp/y" {
		t.Errorf("got name %q host %q port %d store %q, want the fields'", o.ServerName, o.Host, o.Port, o.StoreDir)
	}
	o, err = Config{DefaultStoreDir: "/tmp/z"}.Options()
	if err != nil {
		t.Fatal(err)
	}
	if o.ServerName != "vmguard" || o.Host != "127.0.0.1" || o.Port != 4222 || o.StoreDir != "/tmp/z" || o.Cluster.Port != 0 {
		t.Errorf("defaults: name %q host %q port %d store %q cluster port %d", o.ServerName, o.Host, o.Port, o.StoreDir, o.Cluster.Port)
	}
	if _, err := (Config{}).Options(); err == nil || !strings.Contains(err.Error(), "store dir") {
		t.Errorf("no store: %v, want a store dir error", err)
	}
}

// TestOptionsClusterNeedsNames: a cluster member needs a name of its own
// (members sharing the default one refuse each other's routes) and a
// cluster name.
func TestOptionsClusterNeedsNames(t *testing.T) {
	noName := writeConf(t, "cluster { name: c, listen: 127.0.0.1:6300, routes: [nats-route://127.0.0.1:6301] }\n")
	if _, err := (Config{ConfigFile: noName, StoreDir: t.TempDir()}).Options(); err == nil || !strings.Contains(err.Error(), "server name") {
		t.Errorf("cluster without server_name: %v, want a server name error", err)
	}
	o, err := Config{ConfigFile: noName, StoreDir: t.TempDir(), Name: "m1"}.Options()
	if err != nil || o.ServerName != "m1" || len(o.Routes) != 1 {
		t.Errorf("--name m1: %v, name %q, %d routes", err, o.ServerName, len(o.Routes))
	}
	noCluster := writeConf(t, "server_name: m1\ncluster { listen: 127.0.0.1:6300 }\n")
	if _, err := (Config{ConfigFile: noCluster, StoreDir: t.TempDir()}).Options(); err == nil || !strings.Contains(err.Error(), "cluster name") {
		t.Errorf("cluster without a name: %v, want a cluster name error", err)
	}
	o, err = Config{StoreDir: t.TempDir(), Name: "m2", ClusterName: "c", ClusterPort: 6302, Routes: []string{"nats-route://127.0.0.1:6303"}}.Options()
	if err != nil || o.Cluster.Name != "c" || o.Cluster.Port != 6302 || len(o.Routes) != 1 {
		t.Errorf("cluster fields: %v, %+v", err, o.Cluster)
	}
}

// TestExampleClusterConfigs: examples/nats-cluster holds three members of
// one cluster with their own names, ports and stores, routed to each other.
func TestExampleClusterConfigs(t *testing.T) {
	names, clients, stores := map[string]bool{}, map[int]bool{}, map[string]bool{}
	for i := 1; i <= 3; i++ {
		o, err := Config{ConfigFile: filepath.Join("..", "..", "examples", "nats-cluster", fmt.Sprintf("n%d.conf", i))}.Options()
		if err != nil {
			t.Fatal(err)
		}
		names[o.ServerName], clients[o.Port], stores[o.StoreDir] = true, true, true
		if o.ServerName != fmt.Sprintf("n%d", i) || o.Port != 4221+i || o.Cluster.Port != 6221+i || o.Cluster.Name != "vmguard" {
			t.Errorf("n%d.conf: name %q port %d cluster %q port %d", i, o.ServerName, o.Port, o.Cluster.Name, o.Cluster.Port)
		}
		var routes []string
		for _, r := range o.Routes {
			routes = append(routes, r.Host)
		}
		var want []string
		for j := 1; j <= 3; j++ {
			if j != i {
				want = append(want, fmt.Sprintf("127.0.0.1:%d", 6221+j))
			}
		}
		if strings.Join(routes, ",") != strings.Join(want, ",") {
			t.Errorf("n%d.conf: routes %v, want %v", i, routes, want)
		}
	}
	if len(names) != 3 || len(clients) != 3 || len(stores) != 3 {
		t.Errorf("names %v, ports %v, stores %v: want three of each", names, clients, stores)
	}
}

// TestSyncModes: a server started with the zero Config fsyncs every write
// before acknowledging it (the running server's JetStream config says
// sync_always), Interval switches that off for a flush interval, and the
// test helper's servers run in interval mode (so the durable default is
// tested here and by the CLI tests, not by every other test).
func TestSyncModes(t *testing.T) {
	for _, tc := range []struct {
		name     string
		cfg      Config
		always   bool
		interval time.Duration
	}{
		{"default", Config{}, true, 0},
		{"interval", Config{Interval: true, SyncInterval: 3 * time.Second}, false, 3 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.StoreDir, tc.cfg.Port = t.TempDir(), -1
			s, err := Start(tc.cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Shutdown()
			js := s.JetStreamConfig()
			if js == nil || js.SyncAlways != tc.always || (!tc.always && js.SyncInterval != tc.interval) {
				t.Fatalf("running server's JetStream config %+v: want sync_always %v, sync_interval %s", js, tc.always, tc.interval)
			}
		})
	}
	if js := StartTest(t).JetStreamConfig(); js.SyncAlways {
		t.Errorf("StartTest: sync_always; test servers run in interval mode")
	}
}
