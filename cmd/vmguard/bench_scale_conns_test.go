package main

import (
	"bytes"
	"strings"
	"testing"
)

// TestServerLogKinds: bench scale sums the embedded server's warnings up by
// kind: what varies from one connection, consumer or inbox to the next is
// taken out, so that a storm of one warning is one line with its count.
func TestServerLogKinds(t *testing.T) {
	cw, err := newConnWatch(t.TempDir() + "/server.log")
	if err != nil {
		t.Fatal(err)
	}
	cw.Warnf("%s - %s", `127.0.0.1:56458 - cid:4783 - "v1.55.0:go:group 3 host managers"`, "Slow Consumer Detected: MaxPending of 67108864 Exceeded")
	cw.Warnf("%s - %s", `127.0.0.1:1234 - cid:12 - "v1.55.0:go:group 7 leases"`, "Slow Consumer Detected: MaxPending of 67108864 Exceeded")
	cw.Warnf(`Internal subscription on "$JS.API.CONSUMER.CREATE.VMGUARD.AEHSNRNn.vmguard.events.pkg.*.package.placed" took too long: 3.4s`)
	cw.Warnf(`Internal subscription on "$JS.API.CONSUMER.CREATE.VMGUARD.ZZtop123.vmguard.events.pkg.*.package.placed" took too long: 1.2s`)
	cw.Warnf(`Internal subscription on "_R_.pNnrRi.rcrbNC" took too long: 2.1s`)
	cw.Noticef("Server is ready")
	var out bytes.Buffer
	cw.summary(&out, "server.log")
	for _, want := range []string{
		"logged 5 warnings and errors",
		"2  WRN Slow Consumer Detected: MaxPending of N Exceeded",
		`2  WRN Internal subscription on "$JS.API.CONSUMER.CREATE.VMGUARD.*.vmguard.events.pkg.*.package.placed" took too long: N.Ns`,
		`1  WRN Internal subscription on "_R_.*" took too long: N.Ns`,
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("summary lacks %q:\n%s", want, out.String())
		}
	}
}
