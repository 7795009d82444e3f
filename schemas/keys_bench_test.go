package schemas

import (
	"encoding/json"
	"testing"
)

func BenchmarkCheckKeys(b *testing.B) {
	doc := []byte(`{"specversion":"1.0","id":"0190c0de-0000-7000-8000-000000000001","source":"/vmguard/guests/webvm/agent","type":"io.vmguard.process.exited.v1","subject":"web","datacontenttype":"application/json","dataschema":"urn:vmguard:schema:io.vmguard.process.exited.v1","time":"2026-11-27T10:00:00Z","data":{"guest":"webvm","service":"httpd","pid":4242,"exit_code":3,"runtime_ms":1500,"request_id":"req-1","epoch":3,"output":["line 1","line 2"]}}`)
	k := NewKeyCheck("specversion", "id", "source", "type", "subject", "time", "datacontenttype", "dataschema", "causeid", "data", "data_base64")
	b.ReportAllocs()
	for b.Loop() {
		if err := k.Check(doc); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkJSONValid is the yardstick for BenchmarkCheckKeys: encoding/json's
// syntax check of the same event.
func BenchmarkJSONValid(b *testing.B) {
	doc := []byte(`{"specversion":"1.0","id":"0190c0de-0000-7000-8000-000000000001","source":"/vmguard/guests/webvm/agent","type":"io.vmguard.process.exited.v1","subject":"web","datacontenttype":"application/json","dataschema":"urn:vmguard:schema:io.vmguard.process.exited.v1","time":"2026-11-27T10:00:00Z","data":{"guest":"webvm","service":"httpd","pid":4242,"exit_code":3,"runtime_ms":1500,"request_id":"req-1","epoch":3,"output":["line 1","line 2"]}}`)
	for b.Loop() {
		if !json.Valid(doc) {
			b.Fatal("invalid")
		}
	}
}
