package config

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

const valid = `cluster: demo
nodes: [node1, node2]
packages:
  - name: web
    nodes: [node1, node2]
    guest:
      name: webvm
    services:
      - name: httpd
        cmd: [/usr/sbin/httpd, -DFOREGROUND]
        restart: 3
`

func TestParseDefaults(t *testing.T) {
	c, err := Parse("cluster.yaml", []byte(valid))
	if err != nil {
		t.Fatal(err)
	}
	yes := true
	want := &Cluster{
		Cluster:      "demo",
		NodeTimeout:  Duration(5 * time.Second),
		GuestTimeout: Duration(5 * time.Second),
		Nodes:        []string{"node1", "node2"},
		Packages: []Package{{
			Name:           "web",
			Nodes:          []string{"node1", "node2"},
			FailoverPolicy: ConfiguredNode,
			FailbackPolicy: FailbackManual,
			AutoRun:        &yes,
			MaxRelocate:    Unlimited,
			Guest:          Guest{Name: "webvm", Driver: DriverProcess, StartTimeout: Duration(30 * time.Second)},
			Services: []Service{{
				Name:        "httpd",
				Cmd:         []string{"/usr/sbin/httpd", "-DFOREGROUND"},
				Restart:     Limit{N: 3},
				HaltTimeout: Duration(10 * time.Second),
			}},
		}},
	}
	if !reflect.DeepEqual(c, want) {
		t.Errorf("got  %+v\nwant %+v", c, want)
	}
}

func TestParseEverything(t *testing.T) {
	src := `cluster: prod
node_timeout: 3s
guest_timeout: 4s
nodes: [a, b, c]
x-svc: &svc
  restart: unlimited
  restart_window: 10m
  halt_timeout: 0s
packages:
  - name: db
    nodes: [c, a]
    failover_policy: min_package_node
    failback_policy: automatic
    auto_run: no
    max_relocate: 2
    guest:
      name: dbvm
      driver: exec
      restart: 1
      start_timeout: 2m
      exec:
        start: [virsh, start, "{{.Guest}}"]
        stop: [virsh, shutdown, "{{.Guest}}"]
        status: [virsh, domstate, "{{.Guest}}"]
    services:
      - name: pg
        cmd: [postgres, -D, /var/lib/pg]
        env: {PGPORT: "5432"}
        dir: /var/lib/pg
        <<: *svc
        backoff: {delay: 1s}
`
	// x-svc is not a field: strict decoding must say so.
	if _, err := Parse("c.yaml", []byte(src)); err == nil || !strings.Contains(err.Error(), "c.yaml:5: x-svc: unknown field") {
		t.Fatalf("want unknown field x-svc on line 5, got %v", err)
	}
	src = strings.Replace(src, "x-svc: &svc", "packages_: &svc", 1)
	src = strings.Replace(src, "packages_: &svc\n  restart: unlimited\n  restart_window: 10m\n  halt_timeout: 0s\n", "", 1)
	src = strings.Replace(src, "        <<: *svc\n", "        restart: unlimited\n        restart_window: 10m\n        halt_timeout: 0s\n", 1)
	c, err := Parse("c.yaml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	p := c.Packages[0]
	s := p.Services[0]
	if p.AutoRunEnabled() || p.MaxRelocate != (Limit{N: 2}) || p.Guest.Restart != (Limit{N: 1}) ||
		p.Guest.Exec.Timeout.D() != 30*time.Second || p.Guest.StartTimeout.D() != 2*time.Minute {
		t.Errorf("package: %+v", p)
	}
	if !s.Restart.Unlimited || s.RestartWindow.D() != 10*time.Minute || s.HaltTimeout != 0 ||
		*s.Backoff != (Backoff{Delay: Duration(time.Second), Factor: 2, Max: Duration(5 * time.Minute)}) || s.Env["PGPORT"] != "5432" {
		t.Errorf("service: %+v backoff %+v", s, s.Backoff)
	}
}

func TestParseMergeKeys(t *testing.T) {
	src := `cluster: demo
nodes: [node1]
packages:
  - name: web
    nodes: [node1]
    services:
      - &base
        name: a
        cmd: [sleep, "100"]
        restart: 2
      - <<: *base
        name: b
`
	c, err := Parse("m.yaml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	b := c.Packages[0].Services[1]
	if b.Name != "b" || b.Restart != (Limit{N: 2}) || len(b.Cmd) != 2 {
		t.Errorf("merged service: %+v", b)
	}
	if c.Packages[0].Guest.Name != "web" {
		t.Errorf("guest name default: %q, want the package name", c.Packages[0].Guest.Name)
	}
}

// TestParseErrors feeds one mistake at a time and checks the exact
// "file:line: field" prefix of the error.
func TestParseErrors(t *testing.T) {
	pkg := func(extra string) string {
		return "cluster: demo\nnodes: [node1, node2]\npackages:\n  - name: web\n    nodes: [node1]\n" + extra
	}
	svc := func(fields string) string {
		return pkg("    services:\n      - name: httpd\n" + fields)
	}
	const cmd = "        cmd: [sleep, \"1\"]\n"
	exec := func(fields string) string {
		return pkg("    guest:\n      driver: exec\n      exec:\n" + fields + "    services:\n      - name: s\n" + cmd)
	}
	tests := []struct {
		name, src, want string
	}{
		{"yaml syntax", "cluster: demo\nnodes: [a\n", "f.yaml:2: yaml: did not find expected ',' or ']'"},
		{"yaml unclosed flow map", "cluster: demo\nnodes: {x: 1\npackages: []\n", "f.yaml:2: yaml: did not find expected ',' or '}'"},
		{"yaml bad indent", "cluster: demo\nnodes:\n  - a\n bad: 2\n", "f.yaml:4: yaml: did not find expected key"},
		{"yaml sequence after map", "cluster: demo\n- a\n", "f.yaml:2: yaml: did not find expected key"},
		{"yaml mapping in scalar", "cluster: demo\n\nnodes: a: b\n", "f.yaml:3: yaml: mapping values are not allowed in this context"},
		{"empty file", "", "f.yaml:1: the file is empty"},
		{"two documents", valid + "---\ncluster: x\n", "f.yaml:12: a second YAML document"},
		{"not a mapping", "- a\n- b\n", "f.yaml:1: want a mapping of fields"},
		{"unknown top field", "cluster: demo\nnode: [a]\nnodes: [a]\n", "f.yaml:2: node: unknown field: want one of cluster, node_timeout"},
		{"unknown service field", svc(cmd + "        restarts: 3\n"), "f.yaml:9: packages[0].services[0].restarts: unknown field"},
		{"duplicate key", "cluster: demo\ncluster: again\nnodes: [a]\n", "f.yaml:2: cluster: given twice (first on line 1)"},
		{"cluster missing", "nodes: [a]\n", "f.yaml:1: cluster: missing"},
		{"cluster bad name", "cluster: my.cluster\nnodes: [a]\n", `f.yaml:1: cluster: "my.cluster" is not a valid name`},
		{"no nodes", "cluster: demo\n", "f.yaml:1: nodes: missing"},
		{"nodes not a list", "cluster: demo\nnodes: node1\n", `f.yaml:2: nodes: want a list such as [a, b], got "node1"`},
		{"node bad name", "cluster: demo\nnodes:\n  - node1\n  - node 2\n", `f.yaml:4: nodes[1]: "node 2" is not a valid name`},
		{"node twice", "cluster: demo\nnodes: [a, a]\n", `f.yaml:2: nodes[1]: "a" is listed twice`},
		{"node_timeout not a duration", "cluster: demo\nnode_timeout: 5\nnodes: [a]\n", `f.yaml:2: node_timeout: "5" is not a duration`},
		{"node_timeout negative", "cluster: demo\nnode_timeout: -5s\nnodes: [a]\n", `f.yaml:2: node_timeout: "-5s" is negative`},
		{"node_timeout zero", "cluster: demo\nnode_timeout: 0s\nnodes: [a]\n", `f.yaml:2: node_timeout: 0s: must be at least 1s`},
		{"guest_timeout short", "cluster: demo\nguest_timeout: 1s\nnodes: [a]\n", `f.yaml:2: guest_timeout: 1s: must be at least 2s`},
		{"package bad name", "cluster: demo\nnodes: [a]\npackages:\n  - name: web.1\n", `f.yaml:4: packages[0].name: "web.1" is not a valid name`},
		{"package twice", svc(cmd) + "  - name: web\n    nodes: [node1]\n    services: [{name: s, cmd: [x]}]\n", `f.yaml:9: packages[1].name: "web": another package has this name`},
		{"package without nodes", "cluster: demo\nnodes: [a]\npackages:\n  - name: web\n    services: [{name: s, cmd: [x]}]\n", "f.yaml:4: packages[0].nodes: missing"},
		{"package node unknown", "cluster: demo\nnodes: [node1]\npackages:\n  - name: web\n    nodes:\n      - node1\n      - node3\n", `f.yaml:7: packages[0].nodes[1]: "node3" is not one of the cluster's nodes (node1)`},
		{"package node twice", "cluster: demo\nnodes: [node1]\npackages:\n  - name: web\n    nodes: [node1, node1]\n", `f.yaml:5: packages[0].nodes[1]: "node1" is listed twice`},
		{"no services", pkg(""), "f.yaml:4: packages[0].services: missing"},
		{"service bad name", svc(cmd) + "      - name: 'a b'\n" + cmd, `f.yaml:9: packages[0].services[1].name: "a b" is not a valid name`},
		{"service twice", svc(cmd) + "      - name: httpd\n" + cmd, `f.yaml:9: packages[0].services[1].name: "httpd": another service`},
		{"service without cmd", svc("        restart: 1\n"), "f.yaml:7: packages[0].services[0].cmd: missing"},
		{"service empty cmd", svc("        cmd: []\n"), "f.yaml:8: packages[0].services[0].cmd: missing"},
		{"service cmd blank", svc("        cmd: ['']\n"), "f.yaml:8: packages[0].services[0].cmd[0]: empty command name"},
		{"cmd as a string", svc("        cmd: httpd -X\n"), `f.yaml:8: packages[0].services[0].cmd: want a list such as [a, b], got "httpd -X"`},
		{"restart many", svc(cmd) + "      - name: s2\n" + cmd + "        restart: many\n", `f.yaml:11: packages[0].services[1].restart: "many": want none, unlimited or a whole number 0 or more`},
		{"restart negative", svc(cmd + "        restart: -1\n"), `f.yaml:9: packages[0].services[0].restart: "-1": want none`},
		{"restart_window bad", svc(cmd + "        restart_window: 10 minutes\n"), `f.yaml:9: packages[0].services[0].restart_window: "10 minutes" is not a duration`},
		{"halt_timeout negative", svc(cmd + "        halt_timeout: -1s\n"), `f.yaml:9: packages[0].services[0].halt_timeout: "-1s" is negative`},
		{"backoff factor", svc(cmd + "        backoff:\n          delay: 1s\n          factor: 0.5\n"), `f.yaml:11: packages[0].services[0].backoff.factor: 0.5: must be 1 or more`},
		{"backoff factor text", svc(cmd + "        backoff: {delay: 1s, factor: double}\n"), `f.yaml:9: packages[0].services[0].backoff.factor: "double": want a number`},
		{"backoff max below delay", svc(cmd + "        backoff:\n          delay: 10s\n          max: 1s\n"), `f.yaml:11: packages[0].services[0].backoff.max: 1s: must be at least the delay (10s)`},
		{"backoff without delay", svc(cmd + "        backoff:\n          factor: 2\n"), `f.yaml:9: packages[0].services[0].backoff.delay: 0s: must be more than 0`},
		{"env not a mapping", svc(cmd + "        env: [A=1]\n"), `f.yaml:9: packages[0].services[0].env: want a mapping, got a list`},
		{"failover policy", pkg("    failover_policy: first_node\n"), `f.yaml:6: packages[0].failover_policy: "first_node": want configured_node or min_package_node`},
		{"failback policy", pkg("    failback_policy: auto\n"), `f.yaml:6: packages[0].failback_policy: "auto": want manual or automatic`},
		{"auto_run not bool", pkg("    auto_run: maybe\n"), `f.yaml:6: packages[0].auto_run: "maybe": want true or false`},
		{"max_relocate", pkg("    max_relocate: lots\n"), `f.yaml:6: packages[0].max_relocate: "lots": want none, unlimited`},
		{"guest bad name", pkg("    guest:\n      name: web/vm\n"), `f.yaml:7: packages[0].guest.name: "web/vm" is not a valid name`},
		{"guest shared", svc(cmd) + "  - name: db\n    nodes: [node1]\n    guest: {name: web}\n    services: [{name: s, cmd: [x]}]\n",
			`f.yaml:11: packages[1].guest.name: "web" is also the guest of package web`},
		{"guest driver", pkg("    guest:\n      driver: qemu\n"), `f.yaml:7: packages[0].guest.driver: "qemu": want process or exec`},
		{"guest restart", pkg("    guest:\n      restart: twice\n"), `f.yaml:7: packages[0].guest.restart: "twice": want none`},
		{"guest start_timeout zero", pkg("    guest:\n      start_timeout: 0s\n"), `f.yaml:7: packages[0].guest.start_timeout: 0s: must be more than 0`},
		{"exec on process driver", pkg("    guest:\n      exec:\n        start: [x]\n"), `f.yaml:7: packages[0].guest.exec: only for driver: exec`},
		{"exec missing", pkg("    guest:\n      driver: exec\n"), `f.yaml:6: packages[0].guest.exec: missing: driver exec needs start, stop and status commands`},
		{"exec stop missing", exec("        start: [virsh, start, '{{.Guest}}']\n        status: [virsh, domstate, '{{.Guest}}']\n"), `f.yaml:8: packages[0].guest.exec.stop: missing`},
		{"exec template syntax", exec("        start: [virsh, start, '{{.Guest']\n        stop: [x]\n        status: [x]\n"), `f.yaml:9: packages[0].guest.exec.start[2]: "{{.Guest": unclosed action`},
		{"exec template field", exec("        start: [x]\n        stop: [virsh, shutdown, '{{.Gueest}}']\n        status: [x]\n"), `f.yaml:10: packages[0].guest.exec.stop[2]: "{{.Gueest}}": can't evaluate field Gueest`},
		{"exec migrate template field", exec("        start: [x]\n        stop: [x]\n        status: [x]\n        migrate: [virsh, migrate, '{{.Targt}}']\n"), `f.yaml:12: packages[0].guest.exec.migrate[2]: "{{.Targt}}": can't evaluate field Targt`},
		{"exec target outside migrate", exec("        start: [virsh, start, '{{.Target}}']\n        stop: [x]\n        status: [x]\n"), `f.yaml:9: packages[0].guest.exec.start[2]: "{{.Target}}": can't evaluate field Target`},
		{"exec timeout", exec("        start: [x]\n        stop: [x]\n        status: [x]\n        timeout: 0s\n"), `f.yaml:12: packages[0].guest.exec.timeout: 0s: must be more than 0`},
		{"exec unknown field", exec("        start: [x]\n        stop: [x]\n        status: [x]\n        restart: [x]\n"), `f.yaml:12: packages[0].guest.exec.restart: unknown field: want one of start, stop, status, migrate, migrate_timeout, timeout`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("f.yaml", []byte(tt.src))
			if err == nil {
				t.Fatalf("no error, want %q", tt.want)
			}
			var errs Errors
			if !errors.As(err, &errs) {
				t.Fatalf("error %T is not Errors: %v", err, err)
			}
			for _, e := range errs {
				if strings.HasPrefix(e.Error(), tt.want) {
					return
				}
			}
			t.Errorf("no error starts with %q; got:\n%v", tt.want, err)
		})
	}
}

// TestParseCollectsAllErrors checks that every mistake is reported, in line order.
func TestParseCollectsAllErrors(t *testing.T) {
	src := `cluster: demo
nodes: [node1]
packages:
  - name: web
    nodes: [node9]
    failover_policy: random
    services:
      - name: a
        cmd: [x]
        restart: many
      - name: a
        cmd: [x]
`
	_, err := Parse("f.yaml", []byte(src))
	var errs Errors
	if !errors.As(err, &errs) {
		t.Fatalf("want Errors, got %v", err)
	}
	want := []string{
		`f.yaml:5: packages[0].nodes[0]: "node9" is not one of the cluster's nodes (node1)`,
		`f.yaml:6: packages[0].failover_policy: "random": want configured_node or min_package_node`,
		`f.yaml:10: packages[0].services[0].restart: "many": want none, unlimited or a whole number 0 or more`,
		`f.yaml:11: packages[0].services[1].name: "a": another service of this package has this name`,
	}
	if got := strings.Split(err.Error(), "\n"); !reflect.DeepEqual(got, want) {
		t.Errorf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if len(errs) != len(want) || errs[2].Line != 10 || errs[2].Field != "packages[0].services[0].restart" {
		t.Errorf("fields: %+v", errs[2])
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "cluster.yaml")
	if err := os.WriteFile(path, []byte("cluster: demo\nnodes: [a]\nbogus: 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := Load(path)
	if err == nil || !strings.HasPrefix(err.Error(), path+":3: bogus: unknown field") {
		t.Errorf("got %v", err)
	}
	if _, err := Load(filepath.Join(dir, "missing.yaml")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
}

func TestJSONRoundTripAndHash(t *testing.T) {
	for _, f := range []string{"../examples/demo.yaml", "../examples/virsh.yaml"} {
		c, err := Load(f)
		if err != nil {
			t.Fatal(err)
		}
		b, err := c.JSON()
		if err != nil {
			t.Fatal(err)
		}
		back, err := FromJSON(b)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(c, back) {
			t.Errorf("%s: round trip changed the config:\n%+v\n%+v", f, c, back)
		}
		if err := back.Validate(); err != nil {
			t.Errorf("%s: decoded config does not validate: %v", f, err)
		}
		h1, _ := c.Hash()
		h2, _ := back.Hash()
		if h1 != h2 || len(h1) != 64 {
			t.Errorf("%s: hash %q after round trip %q", f, h1, h2)
		}
	}
}

func TestHashIgnoresLayoutButNotContent(t *testing.T) {
	a, err := Parse("a.yaml", []byte(valid))
	if err != nil {
		t.Fatal(err)
	}
	// Same config: flow style, comments, defaults spelled out.
	b, err := Parse("b.yaml", []byte(`# same thing
cluster: demo
node_timeout: 5s
nodes: [node1, node2]
packages: [{name: web, nodes: [node1, node2], auto_run: true, guest: {name: webvm, driver: process},
  services: [{name: httpd, cmd: [/usr/sbin/httpd, -DFOREGROUND], restart: 3, halt_timeout: 10s}]}]
`))
	if err != nil {
		t.Fatal(err)
	}
	c, err := Parse("c.yaml", []byte(strings.Replace(valid, "restart: 3", "restart: 4", 1)))
	if err != nil {
		t.Fatal(err)
	}
	ha, _ := a.Hash()
	hb, _ := b.Hash()
	hc, _ := c.Hash()
	if ha != hb {
		t.Errorf("same config, different hashes %s %s", ha, hb)
	}
	if ha == hc {
		t.Errorf("different configs, same hash %s", ha)
	}
}

func TestValidateWithoutFile(t *testing.T) {
	c, err := Parse("a.yaml", []byte(valid))
	if err != nil {
		t.Fatal(err)
	}
	c.Packages[0].Nodes = append(c.Packages[0].Nodes, "node7")
	err = c.Validate()
	if err == nil || err.Error() != `packages[0].nodes[2]: "node7" is not one of the cluster's nodes (node1, node2)` {
		t.Errorf("got %v", err)
	}
}

func TestBackoffDelay(t *testing.T) {
	b := Backoff{Delay: Duration(100 * time.Millisecond), Factor: 2, Max: Duration(time.Second)}
	want := []time.Duration{100, 200, 400, 800, 1000, 1000}
	for i, w := range want {
		if got := b.DelayFor(i + 1); got != w*time.Millisecond {
			t.Errorf("attempt %d: %v, want %v", i+1, got, w*time.Millisecond)
		}
	}
	var none *Backoff
	if none.DelayFor(3) != 0 {
		t.Error("nil backoff: want no delay")
	}
	if got := b.DelayFor(100000); got != time.Second {
		t.Errorf("huge attempt: %v", got)
	}
}
