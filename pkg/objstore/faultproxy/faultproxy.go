// Package faultproxy is an S3 fault-injection proxy for tests and drills: an
// HTTP reverse proxy in front of a real S3-compatible server (versitygw,
// MinIO, ...) that forwards requests unchanged (method, path, query,
// headers, Host, body) so SigV4 signatures still verify at the server, and
// on command answers 503 SlowDown, adds latency, resets connections, cuts
// PUT bodies short, or enforces a PUT rate.
//
// Faults are set from Go (Proxy.Set) or over HTTP on the proxy's own
// listener, under /_fault (no S3 bucket name can start with '_'):
//
//	GET    /_fault   current faults and counters, as JSON
//	POST   /_fault   replace the faults with the JSON body (a Faults)
//	DELETE /_fault   remove all faults
//
// for example
//
//	curl -XPOST localhost:PORT/_fault -d '{"slowdown":1,"duration":"60s","retry_after":"1s"}'
//
// Requests are classified from path-style URLs (/bucket/key), which is what
// minio-go sends to an IP endpoint; virtual-hosted-style requests are
// classified as bucket-level.
package faultproxy

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Op is the S3 operation class of a request.
type Op string

// Operation classes.
const (
	OpPut    Op = "put"    // PUT of an object
	OpGet    Op = "get"    // GET of an object
	OpHead   Op = "head"   // HEAD of an object
	OpList   Op = "list"   // GET of a bucket (ListObjects)
	OpDelete Op = "delete" // DELETE of an object, POST ?delete
	OpOther  Op = "other"  // everything else (bucket creation, ListBuckets, ...)
)

// Faults says what to inject. The zero value injects nothing. Each request
// draws its faults independently: first the PUT rate limit, then SlowDown,
// then Reset, then CutPut; Latency is added before forwarding.
type Faults struct {
	// Ops restricts SlowDown, Latency and Reset to these classes; empty
	// means every class except OpOther (so clients can still start).
	Ops []Op `json:"ops,omitempty"`
	// SlowDown is the fraction (0..1) of requests answered 503 SlowDown.
	SlowDown float64 `json:"slowdown,omitempty"`
	// RetryAfter, if > 0, is sent as a Retry-After header (whole seconds,
	// rounded up) with every SlowDown answer.
	RetryAfter Duration `json:"retry_after,omitempty"`
	// Latency is added to every request; LatencyJitter adds a uniformly
	// random extra in [0, LatencyJitter).
	Latency       Duration `json:"latency,omitempty"`
	LatencyJitter Duration `json:"latency_jitter,omitempty"`
	// Reset is the fraction of requests whose connection is reset (closed
	// with TCP RST) without an answer.
	Reset float64 `json:"reset,omitempty"`
	// CutPut is the fraction of object PUTs whose body is read halfway, then
	// whose connection is reset: the server never sees the request.
	CutPut float64 `json:"cut_put,omitempty"`
	// PutRate, if > 0, admits at most that many object PUTs per second
	// (a token bucket of PutBurst tokens, default max(1, PutRate/10)) and
	// answers the rest 503 SlowDown, as S3 does past a prefix's limit.
	PutRate  float64 `json:"put_rate,omitempty"`
	PutBurst int     `json:"put_burst,omitempty"`
	// Duration, if > 0, removes these faults that long after they were set.
	Duration Duration `json:"duration,omitempty"`
}

// Duration is a time.Duration that reads and writes JSON as a string such as
// "1.5s" (a JSON number is taken as seconds).
type Duration time.Duration

// MarshalJSON implements json.Marshaler.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// UnmarshalJSON implements json.Unmarshaler.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		v, err := time.ParseDuration(s)
		if err != nil {
			return err
		}
		*d = Duration(v)
		return nil
	}
	var f float64
	if err := json.Unmarshal(b, &f); err != nil {
		return fmt.Errorf("duration: want a string like \"1s\" or a number of seconds: %s", b)
	}
	*d = Duration(f * float64(time.Second))
	return nil
}

// Validate reports whether the faults make sense.
func (f Faults) Validate() error {
	for name, p := range map[string]float64{"slowdown": f.SlowDown, "reset": f.Reset, "cut_put": f.CutPut} {
		if p < 0 || p > 1 {
			return fmt.Errorf("%s = %v: want a fraction in [0, 1]", name, p)
		}
	}
	if f.PutRate < 0 || f.PutBurst < 0 || f.Latency < 0 || f.LatencyJitter < 0 || f.RetryAfter < 0 || f.Duration < 0 {
		return errors.New("rates, bursts and durations must not be negative")
	}
	for _, op := range f.Ops {
		switch op {
		case OpPut, OpGet, OpHead, OpList, OpDelete, OpOther:
		default:
			return fmt.Errorf("unknown op %q (want put, get, head, list, delete or other)", op)
		}
	}
	return nil
}

// Stats counts what the proxy did.
type Stats struct {
	// Requests by operation class (control requests excluded).
	Requests map[Op]int64 `json:"requests"`
	// Forwarded requests reached the server.
	Forwarded int64 `json:"forwarded"`
	// Injected faults by kind: slowdown, rate_limited, reset, cut_put, latency.
	Injected map[string]int64 `json:"injected"`
}

// Proxy is a running fault proxy on 127.0.0.1. Safe for concurrent use.
type Proxy struct {
	target *url.URL
	ln     net.Listener
	srv    *http.Server
	rp     *httputil.ReverseProxy
	tr     *http.Transport
	done   chan struct{}

	mu       sync.Mutex
	faults   Faults
	expires  time.Time // zero: never
	tokens   float64   // PUT rate bucket
	lastFill time.Time
	stats    Stats
}

// Start starts a proxy on 127.0.0.1 (a free port) forwarding to target, the
// server's URL ("http://127.0.0.1:7070"). Close stops it.
func Start(target string) (*Proxy, error) {
	return StartOn("127.0.0.1:0", target)
}

// StartOn is Start on a given listen address.
func StartOn(addr, target string) (*Proxy, error) {
	u, err := url.Parse(target)
	if err != nil {
		return nil, fmt.Errorf("faultproxy: target %q: %w", target, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("faultproxy: target %q: want http(s)://host:port", target)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("faultproxy: %w", err)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 256
	p := &Proxy{
		target: u,
		ln:     ln,
		tr:     tr,
		done:   make(chan struct{}),
		stats:  Stats{Requests: map[Op]int64{}, Injected: map[string]int64{}},
	}
	p.rp = &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			// Keep path, raw path, query and headers exactly; only the
			// destination changes. Host stays what the client signed.
			r.Out.URL.Scheme = u.Scheme
			r.Out.URL.Host = u.Host
			r.Out.Host = r.In.Host
		},
		Transport: tr,
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			if r.Context().Err() != nil {
				return
			}
			writeS3Error(w, r, http.StatusBadGateway, "BadGateway", "faultproxy: "+err.Error(), 0)
		},
	}
	p.srv = &http.Server{Handler: p, ReadHeaderTimeout: 30 * time.Second}
	go func() {
		defer close(p.done)
		_ = p.srv.Serve(ln)
	}()
	return p, nil
}

// URL returns the proxy's base URL ("http://127.0.0.1:PORT"): give it to
// S3 clients as their endpoint.
func (p *Proxy) URL() string { return "http://" + p.ln.Addr().String() }

// Addr returns the proxy's listen address.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Close stops the proxy: closes the listener and every connection, and
// waits for the server goroutine.
func (p *Proxy) Close() error {
	err := p.srv.Close()
	<-p.done
	p.tr.CloseIdleConnections()
	return err
}

// Set replaces the faults (validated; see Faults).
func (p *Proxy) Set(f Faults) error {
	if err := f.Validate(); err != nil {
		return fmt.Errorf("faultproxy: %w", err)
	}
	f.Ops = slices.Clone(f.Ops)
	p.mu.Lock()
	defer p.mu.Unlock()
	p.faults = f
	p.expires = time.Time{}
	if f.Duration > 0 {
		p.expires = time.Now().Add(time.Duration(f.Duration))
	}
	p.tokens = float64(p.burstLocked())
	p.lastFill = time.Now()
	return nil
}

// Clear removes every fault.
func (p *Proxy) Clear() { _ = p.Set(Faults{}) }

// Faults returns the faults in force (none once Duration has passed).
func (p *Proxy) Faults() Faults {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.expireLocked(time.Now())
	f := p.faults
	f.Ops = slices.Clone(f.Ops)
	return f
}

// Stats returns a copy of the counters.
func (p *Proxy) Stats() Stats {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := Stats{Requests: map[Op]int64{}, Injected: map[string]int64{}, Forwarded: p.stats.Forwarded}
	for k, v := range p.stats.Requests {
		s.Requests[k] = v
	}
	for k, v := range p.stats.Injected {
		s.Injected[k] = v
	}
	return s
}

func (p *Proxy) expireLocked(now time.Time) {
	if !p.expires.IsZero() && !now.Before(p.expires) {
		p.faults = Faults{}
		p.expires = time.Time{}
	}
}

func (p *Proxy) burstLocked() int {
	if p.faults.PutBurst > 0 {
		return p.faults.PutBurst
	}
	return max(1, int(p.faults.PutRate/10))
}

// classify returns the operation class of an S3 request (path style).
func classify(r *http.Request) Op {
	path := strings.TrimPrefix(r.URL.Path, "/")
	object := false
	if i := strings.IndexByte(path, '/'); i >= 0 && i < len(path)-1 {
		object = true
	}
	switch {
	case r.Method == http.MethodPut && object && r.URL.Query().Get("uploadId") == "":
		return OpPut
	case r.Method == http.MethodGet && object:
		return OpGet
	case r.Method == http.MethodHead && object:
		return OpHead
	case r.Method == http.MethodGet && path != "" && !object && !r.URL.Query().Has("location"):
		return OpList
	case r.Method == http.MethodDelete && object,
		r.Method == http.MethodPost && !object && r.URL.Query().Has("delete"):
		return OpDelete
	}
	return OpOther
}

// decision is what to do to one request.
type decision struct {
	slowDown, rateLimited, reset, cut bool
	retryAfter                        time.Duration
	latency                           time.Duration
}

func (p *Proxy) decide(op Op) decision {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := time.Now()
	p.expireLocked(now)
	f := p.faults
	p.stats.Requests[op]++
	var d decision
	applies := slices.Contains(f.Ops, op) || len(f.Ops) == 0 && op != OpOther
	if op == OpPut && f.PutRate > 0 {
		p.tokens = min(float64(p.burstLocked()), p.tokens+now.Sub(p.lastFill).Seconds()*f.PutRate)
		p.lastFill = now
		if p.tokens >= 1 {
			p.tokens--
		} else {
			d.rateLimited = true
			p.stats.Injected["rate_limited"]++
		}
	}
	if !d.rateLimited && applies && f.SlowDown > 0 && rand.Float64() < f.SlowDown {
		d.slowDown = true
		p.stats.Injected["slowdown"]++
	}
	if d.slowDown || d.rateLimited {
		d.retryAfter = time.Duration(f.RetryAfter)
		return d
	}
	if applies && f.Reset > 0 && rand.Float64() < f.Reset {
		d.reset = true
		p.stats.Injected["reset"]++
	} else if op == OpPut && f.CutPut > 0 && rand.Float64() < f.CutPut {
		d.cut = true
		p.stats.Injected["cut_put"]++
	}
	if applies && (f.Latency > 0 || f.LatencyJitter > 0) {
		d.latency = time.Duration(f.Latency)
		if f.LatencyJitter > 0 {
			d.latency += time.Duration(rand.Int64N(int64(f.LatencyJitter)))
		}
		p.stats.Injected["latency"]++
	}
	return d
}

// ServeHTTP implements http.Handler: the control API under /_fault, and the
// proxy for everything else.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/_fault" || strings.HasPrefix(r.URL.Path, "/_fault/") {
		p.control(w, r)
		return
	}
	op := classify(r)
	d := p.decide(op)
	if d.latency > 0 {
		t := time.NewTimer(d.latency)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			return
		}
	}
	switch {
	case d.slowDown, d.rateLimited:
		_, _ = io.Copy(io.Discard, io.LimitReader(r.Body, 64<<20)) // keep the connection usable
		writeS3Error(w, r, http.StatusServiceUnavailable, "SlowDown", "Please reduce your request rate.", d.retryAfter)
		return
	case d.reset:
		resetConn(w)
		return
	case d.cut:
		if n := r.ContentLength / 2; n > 0 {
			_, _ = io.CopyN(io.Discard, r.Body, n)
		}
		resetConn(w)
		return
	}
	p.mu.Lock()
	p.stats.Forwarded++
	p.mu.Unlock()
	p.rp.ServeHTTP(w, r)
}

// resetConn hijacks the connection and closes it with a TCP RST.
func resetConn(w http.ResponseWriter) {
	hj, ok := w.(http.Hijacker)
	if !ok {
		panic(http.ErrAbortHandler) // HTTP/2: abort the stream
	}
	conn, _, err := hj.Hijack()
	if err != nil {
		panic(http.ErrAbortHandler)
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = conn.Close()
}

// s3Error is the body of an S3 error answer.
type s3Error struct {
	XMLName   xml.Name `xml:"Error"`
	Code      string   `xml:"Code"`
	Message   string   `xml:"Message"`
	Resource  string   `xml:"Resource"`
	RequestID string   `xml:"RequestId"`
}

// writeS3Error writes an S3 error answer (XML body, request id headers, and
// a Retry-After header if retryAfter > 0).
func writeS3Error(w http.ResponseWriter, r *http.Request, status int, code, msg string, retryAfter time.Duration) {
	id := strconv.FormatUint(rand.Uint64(), 16)
	var body bytes.Buffer
	body.WriteString(xml.Header)
	_ = xml.NewEncoder(&body).Encode(s3Error{Code: code, Message: msg, Resource: r.URL.Path, RequestID: id})
	h := w.Header()
	h.Set("Content-Type", "application/xml")
	h.Set("Content-Length", strconv.Itoa(body.Len()))
	h.Set("x-amz-request-id", id)
	if retryAfter > 0 {
		h.Set("Retry-After", strconv.FormatInt(int64((retryAfter+time.Second-1)/time.Second), 10))
	}
	w.WriteHeader(status)
	if r.Method != http.MethodHead {
		_, _ = w.Write(body.Bytes())
	}
}

// controlState is the JSON of GET /_fault.
type controlState struct {
	Faults Faults `json:"faults"`
	Stats  Stats  `json:"stats"`
}

func (p *Proxy) control(w http.ResponseWriter, r *http.Request) {
	switch r.Method {
	case http.MethodGet:
	case http.MethodPost, http.MethodPut:
		var f Faults
		dec := json.NewDecoder(io.LimitReader(r.Body, 1<<20))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&f); err != nil {
			http.Error(w, "faultproxy: bad faults JSON: "+err.Error(), http.StatusBadRequest)
			return
		}
		if err := p.Set(f); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
	case http.MethodDelete:
		p.Clear()
	default:
		w.Header().Set("Allow", "GET, POST, PUT, DELETE")
		http.Error(w, "faultproxy: method not allowed", http.StatusMethodNotAllowed)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(controlState{Faults: p.Faults(), Stats: p.Stats()})
}

// SetURL sets faults on a proxy through its HTTP control API (for tools
// that only know the proxy's address, like a drill script).
func SetURL(ctx context.Context, proxyURL string, f Faults) error {
	b, err := json.Marshal(f)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimSuffix(proxyURL, "/")+"/_fault", bytes.NewReader(b))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Close = true // leave no idle connection behind
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return fmt.Errorf("faultproxy: %s: %s", resp.Status, bytes.TrimSpace(msg))
	}
	return nil
}
