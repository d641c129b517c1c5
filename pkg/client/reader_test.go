package client

import (
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/streamhouse/streamhouse/pkg/batch"
)

// fill produces n records to partition 0 in batches of about 2 KiB.
func fill(t *testing.T, g *fakeGateway, c *Client, n int) {
	t.Helper()
	p, err := c.NewProducer("t", Linger(time.Hour), BatchBytes(2<<10))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	var col collector
	for i := range n {
		p.Produce(context.Background(), Record{Key: []byte("k"), Value: value(i), Partition: new(int32(0))}, col.cb(i))
	}
	if err := p.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if errs := col.errs(); len(errs) > 0 {
		t.Fatal(errs[0])
	}
	if g.batchCount(0) < n/100 {
		t.Fatalf("only %d batches", g.batchCount(0))
	}
}

func readAll(t *testing.T, r *Reader, until int64) []batch.Record {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var out []batch.Record
	for r.Offset() < until {
		recs, err := r.Next(ctx)
		if err != nil {
			t.Fatalf("Next at %d: %v", r.Offset(), err)
		}
		out = append(out, recs...)
	}
	return out
}

func TestReaderReadsInOrder(t *testing.T) {
	g, c := startFake(t, 1)
	const n = 1000
	fill(t, g, c, n)
	r := c.NewReader("t", 0, 0, MaxBytes(4<<10), MaxWait(10*time.Millisecond))
	recs := readAll(t, r, n)
	if len(recs) != n {
		t.Fatalf("read %d records, want %d", len(recs), n)
	}
	for i, rec := range recs {
		if rec.Offset != int64(i) || string(rec.Value) != string(value(i)) || string(rec.Key) != "k" {
			t.Fatalf("record %d: offset %d value %q", i, rec.Offset, rec.Value)
		}
	}
	if r.HighWatermark() != n || r.Offset() != n {
		t.Fatalf("offset %d hwm %d", r.Offset(), r.HighWatermark())
	}
	// Caught up: the long poll ends empty.
	start := time.Now()
	recs, err := r.Next(context.Background())
	if err != nil || len(recs) != 0 || time.Since(start) < 5*time.Millisecond {
		t.Fatalf("Next at the end: %d records, %v after %v", len(recs), err, time.Since(start))
	}
}

func TestReaderStartsMidBatch(t *testing.T) {
	g, c := startFake(t, 1)
	const n = 500
	fill(t, g, c, n)
	// Pick an offset strictly inside the third batch.
	g.mu.Lock()
	mid := g.logs[0].bases[2] + 3
	if g.logs[0].bases[3] <= mid {
		t.Fatal("batches too small")
	}
	g.mu.Unlock()
	r := c.NewReader("t", 0, mid, MaxWait(10*time.Millisecond))
	recs := readAll(t, r, n)
	if len(recs) != n-int(mid) || recs[0].Offset != mid {
		t.Fatalf("read %d records from %d, want %d from %d", len(recs), recs[0].Offset, n-int(mid), mid)
	}
	for i, rec := range recs {
		if want := mid + int64(i); rec.Offset != want || string(rec.Value) != string(value(int(want))) {
			t.Fatalf("record %d: offset %d value %q", i, rec.Offset, rec.Value)
		}
	}
}

func TestReaderLongPollAndSpecialOffsets(t *testing.T) {
	g, c := startFake(t, 1)
	fill(t, g, c, 100)
	// OffsetStart reads from the beginning.
	r := c.NewReader("t", 0, OffsetStart, MaxWait(10*time.Millisecond))
	if recs := readAll(t, r, 100); len(recs) != 100 || recs[0].Offset != 0 {
		t.Fatalf("OffsetStart: %d records", len(recs))
	}
	// OffsetEnd sees only new records, which wake up the long poll.
	tail := c.NewReader("t", 0, OffsetEnd, MaxWait(5*time.Second))
	p, err := c.NewProducer("t", Linger(0))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	go func() {
		time.Sleep(50 * time.Millisecond)
		p.Produce(context.Background(), Record{Value: []byte("new"), Partition: new(int32(0))}, nil)
	}()
	start := time.Now()
	recs, err := tail.Next(context.Background())
	if err != nil || len(recs) != 1 || recs[0].Offset != 100 || string(recs[0].Value) != "new" {
		t.Fatalf("tail: %v %v", recs, err)
	}
	if time.Since(start) > 4*time.Second {
		t.Fatal("the long poll did not wake up")
	}
}

func TestReaderErrors(t *testing.T) {
	_, c := startFake(t, 1)
	_, err := c.NewReader("t", 0, 5, MaxWait(0)).Next(context.Background())
	if connect.CodeOf(err) != connect.CodeOutOfRange {
		t.Fatalf("offset past the end: %v", err)
	}
	_, err = c.NewReader("nope", 0, 0).Next(context.Background())
	if connect.CodeOf(err) != connect.CodeNotFound {
		t.Fatalf("unknown topic: %v", err)
	}
}

func TestReaderRetriesUntilGatewayIsUp(t *testing.T) {
	g := newFakeGateway("t", 1)
	srv := serveFake(t, g, "127.0.0.1:0")
	addr := srv.Listener.Addr().String()
	srv.Close()
	c := newTestClient(t, "http://"+addr)
	// Down: Next retries until its context ends.
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Millisecond)
	_, err := c.NewReader("t", 0, 0).Next(ctx)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("gateway down: %v", err)
	}
	b, _ := batch.Encode([]batch.Record{{Value: []byte("a")}, {Value: []byte("b")}}, batch.EncodeOptions{})
	g.logs[0].batches = append(g.logs[0].batches, b)
	g.logs[0].bases = append(g.logs[0].bases, 0)
	g.logs[0].next = 2
	type result struct {
		recs []batch.Record
		err  error
	}
	r := c.NewReader("t", 0, 1, MaxWait(10*time.Millisecond))
	done := make(chan result, 1)
	ctx, cancel = context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	go func() {
		recs, err := r.Next(ctx)
		done <- result{recs, err}
	}()
	time.Sleep(150 * time.Millisecond)
	serveFake(t, g, addr) // the gateway comes back while Next retries
	res := <-done
	if res.err != nil || len(res.recs) != 1 || string(res.recs[0].Value) != "b" || r.Offset() != 2 {
		t.Fatal(fmt.Sprint(res.recs), res.err, r.Offset())
	}
}

// TestReaderFetchesUncompressed checks that fetches and produce requests do
// not ask for gzip answers (the gateway would compress every answer, its
// main CPU cost on cold reads), and that WithConnectOptions can still turn
// it on.
func TestReaderFetchesUncompressed(t *testing.T) {
	g := newFakeGateway("t", 1)
	var mu sync.Mutex
	var encodings []string
	inner := g.handler()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &httptest.Server{Listener: l, Config: &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/Produce") && r.Header.Get("Accept-Encoding") != "identity" {
			t.Errorf("produce request with Accept-Encoding %q", r.Header.Get("Accept-Encoding"))
		}
		if strings.HasSuffix(r.URL.Path, "/Fetch") {
			mu.Lock()
			encodings = append(encodings, r.Header.Get("Accept-Encoding"))
			mu.Unlock()
		}
		inner.ServeHTTP(w, r)
	})}}
	var protos http.Protocols
	protos.SetHTTP1(true)
	protos.SetUnencryptedHTTP2(true)
	srv.Config.Protocols = &protos
	srv.Start()
	t.Cleanup(srv.Close)

	c := newTestClient(t, srv.URL)
	fill(t, g, c, 1000)
	if recs := readAll(t, c.NewReader("t", 0, 0, MaxWait(0)), 1000); len(recs) != 1000 {
		t.Fatalf("read %d records", len(recs))
	}
	gz := newTestClient(t, srv.URL, WithConnectOptions(connect.WithAcceptCompression("gzip",
		func() connect.Decompressor { return &gzip.Reader{} },
		func() connect.Compressor { return gzip.NewWriter(io.Discard) })))
	if recs := readAll(t, gz.NewReader("t", 0, 0, MaxWait(0)), 1000); len(recs) != 1000 {
		t.Fatalf("gzip: read %d records", len(recs))
	}
	mu.Lock()
	defer mu.Unlock()
	if len(encodings) != 2 || encodings[0] != "identity" || !strings.Contains(encodings[1], "gzip") {
		t.Fatalf("Accept-Encoding of the fetches: %q, want identity then gzip", encodings)
	}
}
