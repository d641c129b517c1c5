package gateway

import (
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	v1 "github.com/streamhouse/streamhouse/api/gen/streamhouse/v1"
)

// FuzzStrictJSON feeds arbitrary bytes from the network to the strict JSON
// codec (and its diagnosing walk over the message descriptors): it must
// never panic, must refuse exactly what protojson without DiscardUnknown
// refuses, and what it accepts must decode as protojson decodes it.
func FuzzStrictJSON(f *testing.F) {
	for _, seed := range []string{
		`{"topic":"t","partition":1,"records":[{"key":"YQ==","value":"Yg==","headers":[{"key":"h","value":"dg=="}],"timestamp":"2026-01-01T00:00:00Z"}],"acks":"ACKS_WAL"}`,
		`{"batches":[{"topic":"t","partition":0,"batch":"AAAA"}],"acks":2}`,
		`{"acks":"wal"}`,
		`{"partitoin":1}`,
		`{"batches":[{"topic":"t","bogus":{"a":[1,2,{"b":null}]}}]}`,
		`{"partitions":[{"topic":"t","partition":1,"offset":"5","max_bytes":10}],"maxWaitMs":500}`,
		`[`, `{"topic":`, `null`, `{"records":[null]}`,
	} {
		f.Add([]byte(seed))
	}
	codec := strictJSONCodec{name: "json"}
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, newMsg := range []func() proto.Message{
			func() proto.Message { return &v1.ProduceRequest{} },
			func() proto.Message { return &v1.FetchPartitionsRequest{} },
		} {
			got, want := newMsg(), newMsg()
			err := codec.Unmarshal(data, got)
			wantErr := protojson.UnmarshalOptions{}.Unmarshal(data, want)
			if (err == nil) != (wantErr == nil) {
				t.Fatalf("%T from %q: codec error %v, protojson error %v", got, data, err, wantErr)
			}
			if err == nil && !proto.Equal(got, want) {
				t.Fatalf("%T from %q: codec decoded %v, protojson %v", got, data, got, want)
			}
		}
	})
}
