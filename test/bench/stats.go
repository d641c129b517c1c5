package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	"github.com/HdrHistogram/hdrhistogram-go"
)

// Latencies are recorded in microseconds from 1 µs to 10 minutes with 3
// significant digits.
const (
	histMin = 1
	histMax = int64(10 * time.Minute / time.Microsecond)
	histSig = 3
)

// shardedHist is a set of HDR histograms, one per shard (partition or
// goroutine), each behind its own lock so recording stays cheap under
// concurrency. Merge combines them at the end of a run.
type shardedHist struct {
	shards []histShard
}

type histShard struct {
	mu sync.Mutex
	h  *hdrhistogram.Histogram
	_  [40]byte // keep shards on separate cache lines
}

func newShardedHist(n int) *shardedHist {
	s := &shardedHist{shards: make([]histShard, max(n, 1))}
	for i := range s.shards {
		s.shards[i].h = hdrhistogram.New(histMin, histMax, histSig)
	}
	return s
}

func (s *shardedHist) record(shard int, d time.Duration) {
	us := max(d.Microseconds(), histMin)
	sh := &s.shards[shard%len(s.shards)]
	sh.mu.Lock()
	_ = sh.h.RecordValue(min(us, histMax))
	sh.mu.Unlock()
}

func (s *shardedHist) merge() *hdrhistogram.Histogram {
	out := hdrhistogram.New(histMin, histMax, histSig)
	for i := range s.shards {
		s.shards[i].mu.Lock()
		out.Merge(s.shards[i].h)
		s.shards[i].mu.Unlock()
	}
	return out
}

// Latency is a latency distribution in milliseconds.
type Latency struct {
	Count int64   `json:"count"`
	P50   float64 `json:"p50_ms"`
	P90   float64 `json:"p90_ms"`
	P99   float64 `json:"p99_ms"`
	P999  float64 `json:"p99_9_ms"`
	Max   float64 `json:"max_ms"`
	Mean  float64 `json:"mean_ms"`
}

func latencyOf(h *hdrhistogram.Histogram) *Latency {
	if h.TotalCount() == 0 {
		return nil
	}
	ms := func(us int64) float64 { return float64(us) / 1000 }
	return &Latency{
		Count: h.TotalCount(),
		P50:   ms(h.ValueAtQuantile(50)),
		P90:   ms(h.ValueAtQuantile(90)),
		P99:   ms(h.ValueAtQuantile(99)),
		P999:  ms(h.ValueAtQuantile(99.9)),
		Max:   ms(h.Max()),
		Mean:  h.Mean() / 1000,
	}
}

// counters is what a running workload updates; the progress line reads it.
type counters struct {
	records atomic.Int64 // acknowledged (produce) or received (consume)
	bytes   atomic.Int64 // value+key bytes of those records
	errors  atomic.Int64
	lastErr atomic.Value // string

	// byCode counts failures by errCode. A mutex is enough: failures are
	// rare next to acknowledgements, which never take it.
	mu     sync.Mutex
	byCode map[string]int64
}

func (c *counters) fail(err error) {
	c.errors.Add(1)
	c.lastErr.Store(err.Error())
	code := errCode(err)
	c.mu.Lock()
	if c.byCode == nil {
		c.byCode = map[string]int64{}
	}
	c.byCode[code]++
	c.mu.Unlock()
}

// addFailures adds o's failures (count, codes, last message) to c.
func (c *counters) addFailures(o *counters) {
	n := o.errors.Load()
	if n == 0 {
		return
	}
	c.errors.Add(n)
	c.lastErr.Store(o.lastError())
	byCode := o.errorsByCode()
	c.mu.Lock()
	if c.byCode == nil {
		c.byCode = map[string]int64{}
	}
	for code, k := range byCode {
		c.byCode[code] += k
	}
	c.mu.Unlock()
}

// errorsByCode returns a copy of the failure counts by code (nil if none).
func (c *counters) errorsByCode() map[string]int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.byCode) == 0 {
		return nil
	}
	return maps.Clone(c.byCode)
}

// errCode names the kind of a failure: the Connect code of a StreamHouse
// error (what a client would branch on: unavailable and resource_exhausted
// are retried, invalid_argument is a bug), canceled or deadline_exceeded
// for a context, and otherwise "other: " and the start of the message (NATS
// and harness errors have no codes).
func errCode(err error) string {
	var ce *connect.Error
	switch {
	case errors.As(err, &ce):
		return ce.Code().String()
	case errors.Is(err, context.Canceled):
		return "canceled"
	case errors.Is(err, context.DeadlineExceeded):
		return "deadline_exceeded"
	}
	msg := err.Error()
	if len(msg) > 48 {
		msg = msg[:48] + "..."
	}
	return "other: " + msg
}

func (c *counters) lastError() string {
	s, _ := c.lastErr.Load().(string)
	return s
}

// progress prints one line per second on w until stop is called.
func progress(w io.Writer, label string, c *counters) (stop func()) {
	if w == nil {
		return func() {}
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		start := time.Now()
		var lastRecs, lastBytes int64
		for {
			select {
			case <-done:
				return
			case <-t.C:
			}
			r, b := c.records.Load(), c.bytes.Load()
			fmt.Fprintf(w, "%-34s %5.1fs %12s rec/s %8.1f MB/s  total %12s  errors %d\n",
				label, time.Since(start).Seconds(), commas(float64(r-lastRecs)),
				float64(b-lastBytes)/1e6, commas(float64(r)), c.errors.Load())
			lastRecs, lastBytes = r, b
		}
	})
	return func() { close(done); wg.Wait() }
}

// commas formats n rounded to an integer with thousands separators.
func commas(n float64) string {
	if math.IsNaN(n) || math.IsInf(n, 0) {
		return fmt.Sprint(n)
	}
	s := strconv.FormatInt(int64(math.Round(n)), 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

// serverStats is a snapshot of a server's counters (summed over every
// process scraped).
type serverStats struct {
	Puts, Gets, PutBytes, GetBytes float64
	Flushes                        float64
	AppendBytes                    float64
	RSS                            float64
	// CPU is process_cpu_seconds_total: the only CPU figure of a --url
	// deployment, whose processes this harness cannot see in /proc.
	CPU float64
	// Requests is streamhouse_gateway_requests_total by method (all result
	// codes): the gateway counts every unary Connect request it serves.
	Requests map[string]float64
}

func (a serverStats) sub(b serverStats) serverStats {
	d := serverStats{
		Puts: a.Puts - b.Puts, Gets: a.Gets - b.Gets, PutBytes: a.PutBytes - b.PutBytes, GetBytes: a.GetBytes - b.GetBytes,
		Flushes: a.Flushes - b.Flushes, AppendBytes: a.AppendBytes - b.AppendBytes, RSS: a.RSS, CPU: a.CPU - b.CPU,
	}
	for m, n := range a.Requests {
		if x := n - b.Requests[m]; x > 0 {
			if d.Requests == nil {
				d.Requests = map[string]float64{}
			}
			d.Requests[m] = x
		}
	}
	return d
}

// add sums two processes' snapshots (a cluster's gateway, agents and
// controllers each serve their own /metrics).
func (a serverStats) add(b serverStats) serverStats {
	s := serverStats{
		Puts: a.Puts + b.Puts, Gets: a.Gets + b.Gets, PutBytes: a.PutBytes + b.PutBytes, GetBytes: a.GetBytes + b.GetBytes,
		Flushes: a.Flushes + b.Flushes, AppendBytes: a.AppendBytes + b.AppendBytes, RSS: a.RSS + b.RSS, CPU: a.CPU + b.CPU,
	}
	for _, r := range []map[string]float64{a.Requests, b.Requests} {
		for m, n := range r {
			if s.Requests == nil {
				s.Requests = map[string]float64{}
			}
			s.Requests[m] += n
		}
	}
	return s
}

// dataRequests is the number of produce and fetch requests in a delta
// (methods Produce*, Fetch*): the requests a workload itself sends, not
// the admin calls around it.
func dataRequests(byMethod map[string]float64) float64 {
	n := 0.0
	for m, x := range byMethod {
		if strings.HasPrefix(m, "Produce") || strings.HasPrefix(m, "Fetch") {
			n += x
		}
	}
	return n
}

// scrapeMetrics reads a StreamHouse gateway's /metrics (Prometheus text).
func scrapeMetrics(ctx context.Context, baseURL string) (serverStats, error) {
	var s serverStats
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, baseURL+"/metrics", nil)
	if err != nil {
		return s, err
	}
	req.Close = true // no idle keep-alive connection left behind
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return s, fmt.Errorf("scrape %s/metrics: %w", baseURL, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return s, fmt.Errorf("scrape %s/metrics: %s", baseURL, resp.Status)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		name, val := line[:i], line[i+1:]
		v, err := strconv.ParseFloat(val, 64)
		if err != nil {
			continue
		}
		switch {
		case strings.HasPrefix(name, "streamhouse_agent_s3_requests_total{") && strings.Contains(name, `op="put"`):
			s.Puts += v
		case strings.HasPrefix(name, "streamhouse_agent_s3_requests_total{") && strings.Contains(name, `op="get"`):
			s.Gets += v
		case name == `streamhouse_agent_s3_bytes_total{op="put"}`:
			s.PutBytes = v
		case name == `streamhouse_agent_s3_bytes_total{op="get"}`:
			s.GetBytes = v
		case name == "streamhouse_agent_flushes_total":
			s.Flushes = v
		case name == "streamhouse_agent_append_bytes_total":
			s.AppendBytes = v
		case name == "process_resident_memory_bytes":
			s.RSS = v
		case name == "process_cpu_seconds_total":
			s.CPU = v
		case strings.HasPrefix(name, "streamhouse_gateway_requests_total{"):
			if m := label(name, "method"); m != "" {
				if s.Requests == nil {
					s.Requests = map[string]float64{}
				}
				s.Requests[m] += v
			}
		}
	}
	return s, sc.Err()
}

// label returns the value of label key in a Prometheus series name such
// as name{method="Produce",code="ok"} (values here never hold quotes).
func label(series, key string) string {
	_, rest, ok := strings.Cut(series, key+`="`)
	if !ok {
		return ""
	}
	v, _, _ := strings.Cut(rest, `"`)
	return v
}

// rssOf reads a process's resident set size from /proc (NATS has no
// /metrics of its own here).
func rssOf(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/statm", pid))
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) < 2 {
		return 0
	}
	pages, _ := strconv.ParseFloat(f[1], 64)
	return pages * float64(os.Getpagesize())
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
