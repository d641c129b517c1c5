package faultproxy_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/streamhouse/streamhouse/pkg/objstore"
	"github.com/streamhouse/streamhouse/pkg/objstore/faultproxy"
	"github.com/streamhouse/streamhouse/pkg/objstore/s3test"
	"github.com/streamhouse/streamhouse/pkg/objstore/storetest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func start(t *testing.T, target string) *faultproxy.Proxy {
	t.Helper()
	p, err := faultproxy.Start(target)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// through returns the server's config pointed at the proxy, and the proxy.
func through(t *testing.T) (objstore.S3Config, *faultproxy.Proxy) {
	cfg := s3test.Start(t)
	p := start(t, cfg.Endpoint)
	cfg.Endpoint = p.URL()
	return cfg, p
}

func newS3(t *testing.T, cfg objstore.S3Config) *objstore.S3 {
	t.Helper()
	s, err := objstore.NewS3(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// TestConformanceThroughProxy proves the proxy forwards requests unchanged:
// versitygw checks every SigV4 signature (which covers the Host header, the
// path and the payload) and the whole suite passes.
func TestConformanceThroughProxy(t *testing.T) {
	cfg, p := through(t)
	var n atomic.Int64
	storetest.Run(t, func(t *testing.T) objstore.Store {
		c := cfg
		c.Prefix = fmt.Sprintf("c-%d/", n.Add(1))
		return newS3(t, c)
	})
	st := p.Stats()
	if st.Forwarded == 0 || st.Requests[faultproxy.OpPut] < 1100 || st.Requests[faultproxy.OpList] == 0 || st.Requests[faultproxy.OpGet] == 0 {
		t.Fatalf("stats %+v", st)
	}
	if len(st.Injected) != 0 {
		t.Fatalf("injected %v with no faults", st.Injected)
	}
}

// TestHostPreserved checks the backend sees the client's Host header and
// the exact request target.
func TestHostPreserved(t *testing.T) {
	type seen struct{ host, uri string }
	got := make(chan seen, 1)
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- seen{r.Host, r.RequestURI}
	}))
	defer backend.Close()
	p := start(t, backend.URL)
	req, _ := http.NewRequest(http.MethodGet, p.URL()+"/b/a%2Fb%20c?x=1&y=%2F", nil)
	req.Host = "signed.example:9000"
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	http.DefaultClient.CloseIdleConnections()
	s := <-got
	if s.host != "signed.example:9000" || s.uri != "/b/a%2Fb%20c?x=1&y=%2F" {
		t.Fatalf("backend saw Host %q, URI %q", s.host, s.uri)
	}
}

func TestSlowDown(t *testing.T) {
	cfg, p := through(t)
	s := newS3(t, cfg)
	ctx := t.Context()
	if err := s.PutIfAbsent(ctx, "k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	if err := p.Set(faultproxy.Faults{SlowDown: 1, RetryAfter: faultproxy.Duration(2 * time.Second)}); err != nil {
		t.Fatal(err)
	}
	_, err := s.Get(ctx, "k", 0, -1)
	if objstore.S3ErrorCode(err) != "SlowDown" || objstore.S3StatusCode(err) != 503 {
		t.Fatalf("get: %v (code %q status %d)", err, objstore.S3ErrorCode(err), objstore.S3StatusCode(err))
	}
	if d, ok := objstore.RetryAfter(err); !ok || d != 2*time.Second {
		t.Fatalf("RetryAfter = %v, %v", d, ok)
	}
	err = s.PutIfAbsent(ctx, "k2", []byte("v"))
	if objstore.S3ErrorCode(err) != "SlowDown" {
		t.Fatalf("put: %v", err)
	}
	_, err = s.Head(ctx, "k") // no body: the status tells
	if objstore.S3StatusCode(err) != 503 {
		t.Fatalf("head: %v", err)
	}
	if _, err := s.List(ctx, ""); objstore.S3ErrorCode(err) != "SlowDown" {
		t.Fatalf("list: %v", err)
	}

	// Only for some classes.
	if err := p.Set(faultproxy.Faults{SlowDown: 1, Ops: []faultproxy.Op{faultproxy.OpPut}}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(ctx, "k", 0, -1); err != nil {
		t.Fatalf("get with put-only faults: %v", err)
	}
	// For a duration.
	if err := p.Set(faultproxy.Faults{SlowDown: 1, Duration: faultproxy.Duration(300 * time.Millisecond)}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(ctx, "k", 0, -1); objstore.S3ErrorCode(err) != "SlowDown" {
		t.Fatalf("get during the storm: %v", err)
	}
	time.Sleep(350 * time.Millisecond)
	if _, err := s.Get(ctx, "k", 0, -1); err != nil {
		t.Fatalf("get after the storm: %v", err)
	}
	// A fraction.
	if err := p.Set(faultproxy.Faults{SlowDown: 0.3}); err != nil {
		t.Fatal(err)
	}
	failed := 0
	for range 300 {
		if _, err := s.Head(ctx, "k"); err != nil {
			failed++
		}
	}
	if failed < 60 || failed > 120 {
		t.Fatalf("%d of 300 failed at 30%%", failed)
	}
	if st := p.Stats(); st.Injected["slowdown"] < 60 {
		t.Fatalf("stats %+v", st)
	}
	p.Clear()
	if err := s.PutIfAbsent(ctx, "k2", []byte("v")); err != nil {
		t.Fatal(err)
	}
}

func TestResetAndCut(t *testing.T) {
	cfg, p := through(t)
	s := newS3(t, cfg)
	ctx := t.Context()
	if err := s.PutIfAbsent(ctx, "k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	_ = p.Set(faultproxy.Faults{Reset: 1})
	_, err := s.Get(ctx, "k", 0, -1)
	if err == nil || objstore.S3ErrorCode(err) != "" || objstore.S3StatusCode(err) != 0 {
		t.Fatalf("get over a reset connection: %v (want a transport error)", err)
	}
	_ = p.Set(faultproxy.Faults{CutPut: 1})
	err = s.PutIfAbsent(ctx, "cut", make([]byte, 1<<20))
	if err == nil || objstore.S3ErrorCode(err) != "" {
		t.Fatalf("cut put: %v (want a transport error)", err)
	}
	p.Clear()
	if _, err := s.Head(ctx, "cut"); !errors.Is(err, objstore.ErrNotFound) {
		t.Fatalf("a cut PUT left an object: %v", err)
	}
	st := p.Stats()
	if st.Injected["reset"] == 0 || st.Injected["cut_put"] == 0 {
		t.Fatalf("stats %+v", st)
	}
}

func TestLatency(t *testing.T) {
	cfg, p := through(t)
	s := newS3(t, cfg)
	ctx := t.Context()
	_ = p.Set(faultproxy.Faults{Latency: faultproxy.Duration(150 * time.Millisecond)})
	start := time.Now()
	if err := s.PutIfAbsent(ctx, "k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	if el := time.Since(start); el < 150*time.Millisecond {
		t.Fatalf("put took %v with 150ms latency", el)
	}
}

func TestPutRate(t *testing.T) {
	cfg, p := through(t)
	s := newS3(t, cfg)
	ctx, cancel := context.WithTimeout(t.Context(), 1500*time.Millisecond)
	defer cancel()
	const n = 40
	const burst = 4
	_ = p.Set(faultproxy.Faults{PutRate: n, PutBurst: burst})
	var ok, slow atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for w := range 8 {
		wg.Go(func() {
			for i := 0; ctx.Err() == nil; i++ {
				err := s.PutIfAbsent(ctx, fmt.Sprintf("w%d/%d", w, i), []byte("x"))
				switch {
				case err == nil:
					ok.Add(1)
				case objstore.S3ErrorCode(err) == "SlowDown":
					slow.Add(1)
				}
			}
		})
	}
	wg.Wait()
	rate := float64(ok.Load()) / time.Since(start).Seconds()
	t.Logf("accepted %d PUTs (%.1f/s, limit %d/s), refused %d", ok.Load(), rate, n, slow.Load())
	// Never more than the bucket allows; most of it used (8 callers offer
	// more than n/s).
	if limit := n*time.Since(start).Seconds() + burst; float64(ok.Load()) > limit || rate < n*0.5 || slow.Load() == 0 {
		t.Fatalf("accepted %.1f PUT/s with a limit of %d/s (%d refused)", rate, n, slow.Load())
	}
}

func TestControlAPI(t *testing.T) {
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer backend.Close()
	p := start(t, backend.URL)
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	post := func(body string) (int, string) {
		resp, err := client.Post(p.URL()+"/_fault", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	code, body := post(`{"slowdown":0.5,"ops":["put","get"],"latency":"20ms","retry_after":2,"duration":"1m"}`)
	if code != 200 {
		t.Fatalf("%d %s", code, body)
	}
	f := p.Faults()
	if f.SlowDown != 0.5 || len(f.Ops) != 2 || time.Duration(f.Latency) != 20*time.Millisecond ||
		time.Duration(f.RetryAfter) != 2*time.Second || time.Duration(f.Duration) != time.Minute {
		t.Fatalf("faults %+v", f)
	}
	if !strings.Contains(body, `"latency":"20ms"`) {
		t.Fatalf("state %s", body)
	}
	for _, bad := range []string{`{"slowdown":2}`, `{"ops":["nope"]}`, `{"bogus":1}`, `not json`} {
		if code, _ := post(bad); code != http.StatusBadRequest {
			t.Errorf("POST %s: %d, want 400", bad, code)
		}
	}
	req, _ := http.NewRequest(http.MethodDelete, p.URL()+"/_fault", nil)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if f := p.Faults(); f.SlowDown != 0 || f.Latency != 0 {
		t.Fatalf("after DELETE: %+v", f)
	}
	if err := faultproxy.SetURL(t.Context(), p.URL(), faultproxy.Faults{Reset: 0.25}); err != nil {
		t.Fatal(err)
	}
	if p.Faults().Reset != 0.25 {
		t.Fatal("SetURL did not set")
	}
	if err := faultproxy.SetURL(t.Context(), p.URL(), faultproxy.Faults{Reset: 3}); err == nil {
		t.Fatal("SetURL accepted a bad fraction")
	}
}
