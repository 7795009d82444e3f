package config

import (
	"strings"
	"testing"
)

func TestResourceMet(t *testing.T) {
	for _, tc := range []struct {
		up, status, value string
		want              bool
	}{
		{"", "up", "", true},
		{"up", "up", "7", true},
		{"", "down", "", false},
		{"", "", "", false}, // never set
		{">= 10", "up", "10", true},
		{">= 10", "up", "9", false},
		{">= 10", "up", "", false}, // an extended criterion needs a value
		{">= 10", "down", "50", false},
		{"< 50", "up", "49", true},
		{"<50", "up", "50", false},
		{"> -1", "up", "0", true},
		{"<= 3", "up", "3", true},
		{"= 3", "up", "3", true},
		{"== 3", "up", "4", false},
		{"!= 0", "up", "0", false},
		{"!= 0", "up", "x", false},
	} {
		if got := (Resource{Name: "r", Up: tc.up}).Met(tc.status, tc.value); got != tc.want {
			t.Errorf("up %q, status %q value %q: Met = %v, want %v", tc.up, tc.status, tc.value, got, tc.want)
		}
	}
}

func TestResourceValidation(t *testing.T) {
	base := "cluster: c\nnodes: [n1]\npackages:\n  - name: p\n    nodes: [n1]\n    services:\n      - name: s\n        cmd: [sleep, \"1\"]\n    resources:\n"
	for _, tc := range []struct{ lines, want string }{
		{"      - name: disk\n", ""},
		{"      - name: disk\n        up: \">= 10\"\n        evaluation: before_package_start\n", ""},
		{"      - name: disk\n        up: lots\n", `packages[0].resources[0].up: "lots": want up, or <, <=, >, >=, =, != and a whole number`},
		{"      - name: disk\n        up: \">= ten\"\n", `the value after >= must be a whole number`},
		{"      - name: disk\n        evaluation: sometimes\n", `packages[0].resources[0].evaluation: "sometimes": want during_package_start or before_package_start`},
		{"      - name: disk\n      - name: disk\n", `packages[0].resources[1].name: "disk" is listed twice`},
		{"      - name: a.b\n", `packages[0].resources[0].name: "a.b" is not a valid name`},
	} {
		_, err := Parse("c.yaml", []byte(base+tc.lines))
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%q: %v", tc.lines, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%q: err %v, want %q", tc.lines, err, tc.want)
		}
	}
}
