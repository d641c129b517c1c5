package objstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/VictoriaMetrics/metrics"
)

// Metered wraps a Store and counts every request in the process's metrics
// registry (github.com/VictoriaMetrics/metrics, served at /metrics):
//
//	<prefix>_s3_requests_total{op,outcome}     requests by operation and outcome
//	<prefix>_s3_request_duration_seconds{op}   request latency (Prometheus le buckets)
//	<prefix>_s3_bytes_total{op}                bytes written (put) and read (get)
//
// op is put, get, head, list or delete; outcome is ok, not_found, exists,
// range or error. prefix names the component, e.g. "streamhouse_agent". The
// benchmark harness reads these counters to report requests per GiB.
func Metered(s Store, prefix string) Store { return &metered{s: s, prefix: prefix} }

// requestBuckets are the latency histogram's upper bounds in seconds: from a
// local-disk request (sub-millisecond) to a stalled S3 call.
var requestBuckets = []float64{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30}

type metered struct {
	s      Store
	prefix string
}

func (m *metered) observe(op string, start time.Time, bytes int, err error) {
	outcome := "ok"
	switch {
	case err == nil:
	case errors.Is(err, ErrNotFound):
		outcome = "not_found"
	case errors.Is(err, ErrExists):
		outcome = "exists"
	case errors.Is(err, ErrRange):
		outcome = "range"
	default:
		outcome = "error"
	}
	metrics.GetOrCreateCounter(fmt.Sprintf(`%s_s3_requests_total{op=%q,outcome=%q}`, m.prefix, op, outcome)).Inc()
	metrics.GetOrCreatePrometheusHistogramExt(fmt.Sprintf(`%s_s3_request_duration_seconds{op=%q}`, m.prefix, op), requestBuckets).UpdateDuration(start)
	if bytes > 0 {
		metrics.GetOrCreateCounter(fmt.Sprintf(`%s_s3_bytes_total{op=%q}`, m.prefix, op)).Add(bytes)
	}
}

func (m *metered) PutIfAbsent(ctx context.Context, key string, data []byte) error {
	start := time.Now()
	err := m.s.PutIfAbsent(ctx, key, data)
	n := 0
	if err == nil {
		n = len(data)
	}
	m.observe("put", start, n, err)
	return err
}

func (m *metered) Get(ctx context.Context, key string, offset, length int64) ([]byte, error) {
	start := time.Now()
	b, err := m.s.Get(ctx, key, offset, length)
	m.observe("get", start, len(b), err)
	return b, err
}

func (m *metered) Head(ctx context.Context, key string) (Info, error) {
	start := time.Now()
	i, err := m.s.Head(ctx, key)
	m.observe("head", start, 0, err)
	return i, err
}

func (m *metered) List(ctx context.Context, prefix string) ([]Info, error) {
	start := time.Now()
	l, err := m.s.List(ctx, prefix)
	m.observe("list", start, 0, err)
	return l, err
}

func (m *metered) Delete(ctx context.Context, key string) error {
	start := time.Now()
	err := m.s.Delete(ctx, key)
	m.observe("delete", start, 0, err)
	return err
}
