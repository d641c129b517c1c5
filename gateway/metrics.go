package gateway

import (
	"context"
	"fmt"
	"net/http"
	"path"
	"time"

	"connectrpc.com/connect"
	"github.com/VictoriaMetrics/metrics"

	v1 "github.com/streamhouse/streamhouse/api/gen/streamhouse/v1"
)

// Gateway metrics, in the process-wide registry served at GET /metrics:
//
//	streamhouse_gateway_requests_total{method,code}
//	streamhouse_gateway_request_duration_seconds{method}
//	streamhouse_gateway_produce_records_total, streamhouse_gateway_produce_bytes_total
//	streamhouse_gateway_fetch_records_total, streamhouse_gateway_fetch_bytes_total
var (
	produceRecords = metrics.NewCounter("streamhouse_gateway_produce_records_total")
	produceBytes   = metrics.NewCounter("streamhouse_gateway_produce_bytes_total")
	fetchRecords   = metrics.NewCounter("streamhouse_gateway_fetch_records_total")
	fetchBytes     = metrics.NewCounter("streamhouse_gateway_fetch_bytes_total")
)

// metricsInterceptor counts every unary request by method and result code.
func metricsInterceptor() connect.UnaryInterceptorFunc {
	return func(next connect.UnaryFunc) connect.UnaryFunc {
		return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
			start := time.Now()
			resp, err := next(ctx, req)
			method := path.Base(req.Spec().Procedure)
			code := "ok"
			if err != nil {
				code = connect.CodeOf(err).String()
			}
			metrics.GetOrCreateCounter(fmt.Sprintf(`streamhouse_gateway_requests_total{method=%q,code=%q}`, method, code)).Inc()
			metrics.GetOrCreateHistogram(fmt.Sprintf(`streamhouse_gateway_request_duration_seconds{method=%q}`, method)).UpdateDuration(start)
			if err == nil {
				countPayload(req.Any(), resp.Any())
			}
			return resp, err
		}
	}
}

func countPayload(req, resp any) {
	switch m := resp.(type) {
	case *v1.ProduceResponse:
		n := 0
		for _, r := range m.GetResults() {
			n += int(r.GetRecordCount())
		}
		produceRecords.Add(n)
		if pr, ok := req.(*v1.ProduceRequest); ok {
			size := len(pr.GetBatch())
			for _, r := range pr.GetRecords() {
				size += len(r.GetKey()) + len(r.GetValue())
			}
			produceBytes.Add(size)
		}
	case *v1.FetchResponse:
		fetchRecords.Add(len(m.GetRecords()))
		size := len(m.GetBatches())
		for _, r := range m.GetRecords() {
			size += len(r.GetKey()) + len(r.GetValue())
		}
		fetchBytes.Add(size)
	}
}

// serveMetrics writes the process's metrics (Go runtime and process metrics
// included) in the Prometheus text format.
func serveMetrics(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	metrics.WritePrometheus(w, true)
}
