// Package examples holds the sample cluster configurations; the demo one is
// embedded in the binary for `vmguard up`.
package examples

import _ "embed"

// Demo is examples/demo.yaml, the configuration `vmguard up` uses by default.
//
//go:embed demo.yaml
var Demo []byte

// DemoName is the file name errors in Demo refer to.
const DemoName = "examples/demo.yaml"
