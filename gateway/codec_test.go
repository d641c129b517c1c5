package gateway

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/encoding/protowire"

	v1 "github.com/streamhouse/streamhouse/api/gen/streamhouse/v1"
)

// postJSON sends body to the gateway as a Connect unary JSON request over
// HTTP/1.1, like curl, and returns the status and body of the answer.
func postJSON(t *testing.T, e *env, contentType, path, body string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctxT(t), http.MethodPost, e.srv.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", contentType)
	res, err := e.srv.HTTP1Client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return res.StatusCode, b
}

// wantJSONError checks a Connect error answer: HTTP 400, invalid_argument,
// and a message containing each of substrs.
func wantJSONError(t *testing.T, what string, status int, body []byte, substrs ...string) {
	t.Helper()
	var ce struct{ Code, Message string }
	if err := json.Unmarshal(body, &ce); err != nil {
		t.Fatalf("%s: answer %q: %v", what, body, err)
	}
	if status != http.StatusBadRequest || ce.Code != "invalid_argument" {
		t.Fatalf("%s: HTTP %d %s, want 400 invalid_argument", what, status, body)
	}
	for _, s := range substrs {
		if !strings.Contains(ce.Message, s) {
			t.Fatalf("%s: message %q does not contain %q", what, ce.Message, s)
		}
	}
}

func TestStrictJSONRefusals(t *testing.T) {
	e := newEnv(t, time.Minute)
	e.ctl.addTopic(&v1.TopicInfo{Name: "t", Partitions: 2}, agentAddr)
	const produce = "/streamhouse.v1.ProduceService/Produce"
	const produceFields = "valid fields are topic, partition, records, batch, acks, batches"

	for _, tc := range []struct {
		name, contentType, path, body string
		want                          []string
	}{
		{
			name: "enum name", contentType: "application/json", path: produce,
			body: `{"topic":"t","records":[{"value":"eA=="}],"acks":"wal"}`,
			want: []string{`invalid value "wal" for enum streamhouse.v1.Acks in field "acks": valid names are ACKS_UNSPECIFIED, ACKS_DURABLE, ACKS_WAL`},
		},
		{
			// Connect registers this spelling as a codec of its own.
			name: "enum name, charset", contentType: "application/json; charset=utf-8", path: produce,
			body: `{"topic":"t","records":[{"value":"eA=="}],"acks":"wal"}`,
			want: []string{`invalid value "wal" for enum streamhouse.v1.Acks`},
		},
		{
			name: "unknown field", contentType: "application/json", path: produce,
			body: `{"topic":"t","partitoin":1,"records":[{"value":"eA=="}]}`,
			want: []string{`unknown field "partitoin" in streamhouse.v1.ProduceRequest: ` + produceFields},
		},
		{
			name: "unknown nested field", contentType: "application/json", path: produce,
			body: `{"batches":[{"topic":"t","partition":0},{"topic":"t","partitoin":1}]}`,
			want: []string{`unknown field "partitoin" in streamhouse.v1.ProduceBatch at "batches[1]": valid fields are topic, partition, batch`},
		},
		{
			// The walk gets past nested messages and well-known types.
			name: "after nested values", contentType: "application/json", path: produce,
			body: `{"topic":"t","records":[{"value":"eA==","timestamp":"2024-01-02T03:04:05Z","headers":[{"key":"k"}]}],"acks":"DURABLE"}`,
			want: []string{`invalid value "DURABLE" for enum streamhouse.v1.Acks in field "acks"`},
		},
		{
			// Proto names are listed next to JSON names that differ.
			name: "proto names", contentType: "application/json", path: "/streamhouse.v1.ConsumeService/Fetch",
			body: `{"topic":"t","partition":0,"offset":0,"maxWait":100}`,
			want: []string{`unknown field "maxWait" in streamhouse.v1.FetchRequest`, "maxWaitMs (max_wait_ms)"},
		},
		{
			name: "admin enum", contentType: "application/json", path: "/streamhouse.v1.AdminService/CreateTopic",
			body: `{"name":"u","partitions":1,"durability":"wal"}`,
			want: []string{`invalid value "wal" for enum streamhouse.v1.Durability in field "durability": valid names are DURABILITY_UNSPECIFIED, DURABILITY_DURABLE, DURABILITY_WAL`},
		},
		{
			// Other mistakes keep protojson's explanation.
			name: "wrong type", contentType: "application/json", path: produce,
			body: `{"topic":"t","partition":"one"}`,
			want: []string{"invalid JSON for streamhouse.v1.ProduceRequest: ", "partition"},
		},
		{
			name: "syntax", contentType: "application/json", path: produce,
			body: `{"topic":`,
			want: []string{"invalid JSON for streamhouse.v1.ProduceRequest: "},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, body := postJSON(t, e, tc.contentType, tc.path, tc.body)
			wantJSONError(t, tc.name, status, body, tc.want...)
		})
	}
	// A refused request changes nothing.
	if calls := e.agent.appendCalls(); len(calls) != 0 {
		t.Fatalf("append calls after refusals = %v", calls)
	}
	e.ctl.mu.Lock()
	_, created := e.ctl.topics["u"]
	e.ctl.mu.Unlock()
	if created {
		t.Fatal("CreateTopic with a bad durability created the topic")
	}
}

func TestStrictJSONAccepts(t *testing.T) {
	e := newEnv(t, time.Minute)
	e.ctl.addTopic(&v1.TopicInfo{Name: "t", Partitions: 2}, agentAddr)

	// Enum names, enum numbers (proto3 enums are open), proto field names
	// and nulls are all still accepted.
	for i, body := range []string{
		`{"topic":"t","partition":1,"records":[{"value":"eA=="}],"acks":"ACKS_WAL"}`,
		`{"topic":"t","partition":1,"records":[{"value":"eA=="}],"acks":2}`,
		`{"topic":"t","partition":null,"records":[{"value":"eA==","timestamp":null}],"acks":"ACKS_WAL","batches":null}`,
	} {
		status, res := postJSON(t, e, "application/json", "/streamhouse.v1.ProduceService/Produce", body)
		if status != http.StatusOK {
			t.Fatalf("produce %s: HTTP %d %s", body, status, res)
		}
		// Responses are marshalled as by connect-go's default codec.
		var pr v1.ProduceResponse
		if err := protojson.Unmarshal(res, &pr); err != nil {
			t.Fatal(err)
		}
		want, err := protojson.MarshalOptions{}.Marshal(&pr)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(res, want) {
			t.Fatalf("produce answer %s, want %s", res, want)
		}
		if n := len(pr.GetResults()); n != 1 || pr.GetResults()[0].GetError() != nil {
			t.Fatalf("produce %d: results %v", i, pr.GetResults())
		}
	}
	for _, c := range e.agent.appendCalls() {
		if c.GetAcks() != v1.Acks_ACKS_WAL {
			t.Fatalf("append acks = %v, want ACKS_WAL", c.GetAcks())
		}
	}
	status, res := postJSON(t, e, "application/json; charset=utf-8", "/streamhouse.v1.ConsumeService/Fetch",
		`{"topic":"t","partition":1,"offset":"0","max_wait_ms":0,"maxBytes":1048576}`)
	if status != http.StatusOK || !strings.Contains(string(res), `"value":"eA=="`) {
		t.Fatalf("fetch: HTTP %d %s", status, res)
	}
}

// TestStrictJSONStream checks a server-streaming request: Connect reads it
// from an envelope, through the same codec.
func TestStrictJSONStream(t *testing.T) {
	e := newEnv(t, time.Minute)
	e.ctl.addTopic(&v1.TopicInfo{Name: "t", Partitions: 1}, agentAddr)
	msg := []byte(`{"topic":"t","partition":0,"ofset":0}`)
	env := binary.BigEndian.AppendUint32([]byte{0}, uint32(len(msg)))
	req, err := http.NewRequestWithContext(ctxT(t), http.MethodPost, e.srv.URL+"/streamhouse.v1.ConsumeService/Subscribe", bytes.NewReader(append(env, msg...)))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/connect+json")
	res, err := e.srv.Client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	// The answer is one end-of-stream envelope (flag 2) holding the error.
	if len(b) < 5 || b[0] != 2 {
		t.Fatalf("answer %q, want an end-of-stream envelope", b)
	}
	var end struct {
		Error struct{ Code, Message string }
	}
	if err := json.Unmarshal(b[5:], &end); err != nil {
		t.Fatalf("end of stream %q: %v", b[5:], err)
	}
	if end.Error.Code != "invalid_argument" || !strings.Contains(end.Error.Message, `unknown field "ofset" in streamhouse.v1.SubscribeRequest: valid fields are topic, partition, offset, maxBytes (max_bytes)`) {
		t.Fatalf("end of stream error = %+v", end.Error)
	}
}

// TestStrictJSONClients sends JSON through Connect clients of each protocol,
// so the codec serves Connect, gRPC and gRPC-web's "+json" content types.
func TestStrictJSONClients(t *testing.T) {
	for _, p := range protocols {
		t.Run(p.name, func(t *testing.T) {
			e := newEnv(t, time.Minute, append(cloneOpts(p.opts), connect.WithProtoJSON())...)
			e.ctl.addTopic(&v1.TopicInfo{Name: "t", Partitions: 1}, agentAddr)
			e.mustProduce(t, &v1.ProduceRequest{Topic: "t", Records: recs("", "a"), Acks: v1.Acks_ACKS_WAL})
			if f := e.mustFetch(t, &v1.FetchRequest{Topic: "t"}); len(f.GetRecords()) != 1 {
				t.Fatalf("fetch = %v", f)
			}
		})
	}
}

// TestBinaryUnknownFields checks that the binary codec keeps protobuf's
// forward compatibility: a request from a newer client, with a field this
// gateway does not know, is served.
func TestBinaryUnknownFields(t *testing.T) {
	for _, p := range protocols {
		t.Run(p.name, func(t *testing.T) {
			e := newEnv(t, time.Minute, p.opts...)
			e.ctl.addTopic(&v1.TopicInfo{Name: "t", Partitions: 1}, agentAddr)
			req := &v1.ProduceRequest{Topic: "t", Records: recs("", "a"), Acks: v1.Acks_ACKS_WAL}
			unknown := protowire.AppendTag(nil, 999, protowire.VarintType)
			unknown = protowire.AppendVarint(unknown, 1)
			req.ProtoReflect().SetUnknown(unknown)
			res := e.mustProduce(t, req)
			if len(res.GetResults()) != 1 || res.GetResults()[0].GetRecordCount() != 1 {
				t.Fatalf("results = %v", res.GetResults())
			}
			if calls := e.agent.appendCalls(); len(calls) != 1 || calls[0].GetAcks() != v1.Acks_ACKS_WAL {
				t.Fatalf("append calls = %v", calls)
			}
		})
	}
}

func cloneOpts(opts []connect.ClientOption) []connect.ClientOption {
	return append([]connect.ClientOption(nil), opts...)
}
