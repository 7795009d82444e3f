package sgimport

import (
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/vmguard/vmguard/config"
)

var update = flag.Bool("update", false, "rewrite testdata/imported.golden.yaml")

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		name, src string
		want      []Attr
		err       string
	}{
		{"name and value", "package_name  web\n", []Attr{{"package_name", "web", 1}}, ""},
		{"names are not case-sensitive", "PACKAGE_NAME web\n", []Attr{{"package_name", "web", 1}}, ""},
		{"comments and blank lines", "# c\n\n  # indented\nnode_name n1 # primary\n", []Attr{{"node_name", "n1", 4}}, ""},
		{"quoted value keeps spaces and #", `service_cmd "/bin/echo a # b"` + "\n", []Attr{{"service_cmd", "/bin/echo a # b", 1}}, ""},
		{"escaped quote", `service_cmd "say \"hi\""` + "\n", []Attr{{"service_cmd", `say "hi"`, 1}}, ""},
		{"continuation joins lines, line of the first", "a 1\nservice_cmd \"/bin/x \\\n   -y\"\nb 2\n",
			[]Attr{{"a", "1", 1}, {"service_cmd", "/bin/x     -y", 2}, {"b", "2", 4}}, ""},
		{"empty value", "priority\n", []Attr{{"priority", "", 1}}, ""},
		{"unclosed quote", "service_cmd \"/bin/x\n", nil, ":1: service_cmd: a double quote that is not closed"},
		{"text after the quote", "service_cmd \"/bin/x\" y\n", nil, `:1: service_cmd: text after the closing quote: "y"`},
		{"legacy control script", "SERVICE_NAME[0]=\"x\"\n", nil, "legacy package control script line; vmguard import reads modular package files (convert with cmmigratepkg first)"},
		{"bad parameter name", "pkg-name x\n", nil, `:1: "pkg-name" is not a parameter name`},
		{"ends inside a continuation", "service_cmd \"/bin/x \\\n", nil, ":1: the file ends inside a continued line"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, err := Parse("p.conf", strings.NewReader(tc.src))
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want it to contain %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(f.Attrs, tc.want) {
				t.Errorf("attrs = %+v, want %+v", f.Attrs, tc.want)
			}
		})
	}
}

func TestParseLongLine(t *testing.T) {
	src := "service_cmd \"" + strings.Repeat("x", MaxLineLen+10) + "\"\n"
	if _, err := Parse("big.conf", strings.NewReader(src)); err == nil {
		t.Fatal("a line longer than MaxLineLen was accepted")
	}
}

func loadSamples(t *testing.T, names ...string) []*File {
	t.Helper()
	var files []*File
	for _, n := range names {
		fh, err := os.Open(filepath.Join("testdata", n))
		if err != nil {
			t.Fatal(err)
		}
		f, err := Parse(n, fh)
		fh.Close()
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, f)
	}
	return files
}

// TestMapSamples maps the sample files written from the manual's attribute
// list and checks what each Serviceguard parameter became.
func TestMapSamples(t *testing.T) {
	res, err := Map(loadSamples(t, "erp.conf", "mail.conf", "monitor.conf"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	c := res.Cluster
	if want := []string{"kvm1", "kvm2", "kvm3"}; !reflect.DeepEqual(c.Nodes, want) {
		t.Errorf("nodes = %v, want %v (the nodes the packages name, in order)", c.Nodes, want)
	}
	if len(c.Packages) != 3 {
		t.Fatalf("%d packages, want 3", len(c.Packages))
	}
	erp, mail, mon := c.Packages[0], c.Packages[1], c.Packages[2]
	if mon.Name != "node_monitor" || mon.Type != "multi_node" || !reflect.DeepEqual(mon.Nodes, c.Nodes) || mon.FailoverPolicy != "" || mon.Priority != 0 {
		t.Errorf("node_monitor = %+v: want a multi_node package on every node (node_name *), no failover_policy or priority", mon)
	}
	if erp.Name != "erp_pkg" || erp.Guest.Name != "erp-vm" || erp.Guest.StartTimeout != "180s" || *erp.AutoRun != true {
		t.Errorf("erp = %+v: want erp_pkg, guest erp-vm (from cmappmgr -node), start_timeout 180s, auto_run", erp)
	}
	wantSvc := []Service{
		{Name: "erp_db", Cmd: []string{"/usr/lib/postgresql/16/bin/postgres", "-D", "/var/lib/pg"}, Restart: "3", HaltTimeout: "60s"},
		{Name: "erp_app", Cmd: []string{"/opt/erp/bin/erp-server", "--config", "/etc/erp/server.conf"}, Restart: "unlimited", HaltTimeout: "1s", FailFast: true},
	}
	if !reflect.DeepEqual(erp.Services, wantSvc) {
		t.Errorf("erp services = %+v\nwant %+v (cmappmgr unwrapped, hpvmsg_mon left out)", erp.Services, wantSvc)
	}
	if mail.Name != "mail-pkg" || !reflect.DeepEqual(mail.Nodes, c.Nodes) || mail.FailoverPolicy != "min_package_node" ||
		mail.FailbackPolicy != "automatic" || *mail.AutoRun != false || !mail.NodeFailFast || erp.NodeFailFast {
		t.Errorf("mail = %+v: want mail-pkg on every node (node_name *), min_package_node, automatic, auto_run false", mail)
	}
	if want := []Resource{{Name: "sfm_disk", Up: ">= 1", Evaluation: "during_package_start"}}; !reflect.DeepEqual(mail.Resources, want) {
		t.Errorf("mail resources = %+v, want %+v", mail.Resources, want)
	}
	if want := []Dependency{{Name: "erp_pkg", Condition: "up", Location: "same_node"}}; mail.Priority != 10 || !reflect.DeepEqual(mail.Dependencies, want) {
		t.Errorf("mail priority %d, dependencies %+v: want 10 and %+v", mail.Priority, mail.Dependencies, want)
	}
	if got := mail.Services[1].Cmd; !reflect.DeepEqual(got, []string{"/bin/sh", "-c", "while sleep 5; do /usr/sbin/postqueue -p >/dev/null || exit 1; done"}) {
		t.Errorf("queue_watch cmd = %q: want its sh -c script kept as one argument", got)
	}
	// Every parameter that is not carried over is in the report, with its line.
	for _, want := range []string{
		"erp.conf:29: service_cmd: hpvmsg_mon watches the guest",
		"erp.conf:46: service_halt_timeout: 0 (SIGKILL at once)",
		"erp.conf:49: ip_address: 192.168.10.21: the guest's addresses and storage move with the VM",
		"mail.conf:3: package_name: \"mail.pkg\" written as \"mail-pkg\"",
		"erp.conf:20: successor_halt_timeout: no_timeout: vmguard bounds every wait",
		"mail.conf:29: user_name: operator1: access in vmguard is by NATS credentials",
		"monitor.conf:4: failover_policy: does not apply to a multi_node package",
		"monitor.conf:5: priority: does not apply to a multi_node package",
	} {
		if !hasNote(res.Notes, want) {
			t.Errorf("no note %q in\n%s", want, notesText(res.Notes))
		}
	}
	for _, quiet := range []string{"module_name", "module_version", "package_description", "script_log_file", "operation_sequence"} {
		for _, n := range res.Notes {
			if n.Param == quiet {
				t.Errorf("note for %s, which is Serviceguard's own bookkeeping: %s", quiet, n)
			}
		}
	}
}

// TestImportGolden: the YAML written for the samples, as a whole, for both
// drivers, passes vmguard's own config check and matches the golden file.
func TestImportGolden(t *testing.T) {
	names := []string{"erp.conf", "mail.conf", "monitor.conf"}
	for _, driver := range []string{DriverProcess, DriverVirsh} {
		res, err := Map(loadSamples(t, names...), Options{Cluster: "sg", Driver: driver})
		if err != nil {
			t.Fatal(err)
		}
		out, err := res.YAML(names)
		if err != nil {
			t.Fatal(err)
		}
		cl, err := config.Parse("imported.yaml", out)
		if err != nil {
			t.Fatalf("driver %s: the imported file fails vmguard check: %v\n%s", driver, err, out)
		}
		if len(cl.Packages) != 3 || !cl.Packages[2].MultiNode() || cl.Packages[0].Guest.Driver != map[string]string{DriverProcess: "process", DriverVirsh: "exec"}[driver] {
			t.Errorf("driver %s: packages %+v", driver, cl.Packages)
		}
		if driver != DriverProcess {
			continue
		}
		golden := filepath.Join("testdata", "imported.golden.yaml")
		if *update {
			if err := os.WriteFile(golden, out, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		want, err := os.ReadFile(golden)
		if err != nil {
			t.Fatal(err)
		}
		if string(out) != string(want) {
			t.Errorf("import output differs from %s (go test -update to accept):\n%s", golden, out)
		}
	}
}

func TestMapErrors(t *testing.T) {
	parse := func(src string) *File {
		f, err := Parse("x.conf", strings.NewReader(src))
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	for _, tc := range []struct {
		name, src string
		opt       Options
		err, note string
	}{
		{"no package_name", "node_name n1\n", Options{}, "no package could be imported", "x.conf:1: package_name: missing"},
		{"no node_name", "package_name p\n", Options{}, "no package could be imported", "node_name: missing"},
		{"star without nodes", "package_name p\nnode_name *\n", Options{}, "every package has node_name * and --nodes is empty", ""},
		{"star with nodes", "package_name p\nnode_name *\n", Options{Nodes: []string{"a", "b"}}, "", ""},
		{"node outside --nodes", "package_name p\nnode_name c\n", Options{Nodes: []string{"a"}}, "", `names node "c", which is not in --nodes`},
		{"bad driver", "package_name p\nnode_name a\n", Options{Driver: "xen"}, `driver "xen"`, ""},
		{"cmappmgr without -service", "package_name p\nnode_name a\nservice_name s\nservice_cmd \"/usr/sbin/cmappmgr -node g\"\n", Options{},
			"", "cmappmgr without -service: nothing to run in the guest: the service is left out"},
		{"service parameter before a service", "package_name p\nnode_name a\nservice_restart 3\n", Options{}, "", "service_restart: comes before any service_name"},
		{"bad restart", "package_name p\nnode_name a\nservice_name s\nservice_cmd /bin/true\nservice_restart lots\n", Options{}, "", `"lots": want none, unlimited or a number`},
		{"service without a command", "package_name p\nnode_name a\nservice_name s\n", Options{}, "", "service s has no service_cmd: left out"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, err := Map([]*File{parse(tc.src)}, tc.opt)
			if tc.err == "" && err != nil {
				t.Fatalf("err = %v", err)
			}
			if tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)) {
				t.Fatalf("err = %v, want %q", err, tc.err)
			}
			if tc.note != "" && !hasNote(res.Notes, tc.note) {
				t.Errorf("no note %q in\n%s", tc.note, notesText(res.Notes))
			}
		})
	}
}

func FuzzParse(f *testing.F) {
	for _, n := range []string{"erp.conf", "mail.conf", "monitor.conf", "legacy.cntl"} {
		b, err := os.ReadFile(filepath.Join("testdata", n))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(string(b))
	}
	f.Fuzz(func(t *testing.T, src string) {
		pf, err := Parse("f.conf", strings.NewReader(src))
		if err != nil {
			return
		}
		res, err := Map([]*File{pf}, Options{Nodes: []string{"n1"}})
		if err != nil {
			return
		}
		if _, err := res.YAML([]string{"f.conf"}); err != nil {
			t.Fatalf("yaml: %v", err)
		}
	})
}

func hasNote(notes []Note, want string) bool {
	for _, n := range notes {
		if strings.Contains(n.String(), want) {
			return true
		}
	}
	return false
}

func notesText(notes []Note) string {
	var b strings.Builder
	for _, n := range notes {
		b.WriteString(n.String() + "\n")
	}
	return b.String()
}
