package schemas

import (
	"strings"
	"testing"
)

func TestValidateNamesField(t *testing.T) {
	v, err := New()
	if err != nil {
		t.Fatal(err)
	}
	if got := len(v.Types()); got != 20 {
		t.Fatalf("schemas: got %d, want 20", got)
	}
	cases := []struct {
		typ, data, want string
	}{
		{"io.vmguard.process.exited.v1", `{"guest":"g","service":"s","pid":1,"exit_code":"x","runtime_ms":1,"request_id":"r","epoch":1}`, "data.exit_code:"},
		{"io.vmguard.process.exited.v1", `{"guest":"g","service":"s","pid":1,"runtime_ms":1,"request_id":"r","epoch":1}`, "data.exit_code: missing"},
		{"io.vmguard.package.placed.v1", `{"node":"a.b","epoch":1,"reason":"x"}`, "data.node:"},
		{"io.vmguard.package.placed.v1", `[]`, "data:"},
	}
	for _, c := range cases {
		err := v.Validate(c.typ, []byte(c.data))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s %s: got %v, want error containing %q", c.typ, c.data, err, c.want)
		}
	}
	if err := v.Validate("io.vmguard.package.placed.v1", []byte(`{"node":"n1","epoch":1,"reason":"initial","extra":true}`)); err != nil {
		t.Errorf("valid event with an unknown optional field: %v", err)
	}
	if err := v.Validate("io.vmguard.nope.v1", []byte(`{}`)); err == nil {
		t.Error("unknown type: no error")
	}
}
