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
//	streamhouse_gateway_request_duration_seconds{method}          histogram
//	streamhouse_gateway_produce_requests_total{topic,code}
//	streamhouse_gateway_produce_records_total{topic}, streamhouse_gateway_produce_bytes_total{topic}
//	streamhouse_gateway_produce_duration_seconds                   histogram
//	streamhouse_gateway_produce_batch_records                      histogram: records per request
//	streamhouse_gateway_fetch_requests_total{topic,code}
//	streamhouse_gateway_fetch_records_total{topic}, streamhouse_gateway_fetch_bytes_total{topic}
//
// Histograms have Prometheus le buckets, so histogram_quantile works on
// them. Labels stay bounded: topic names only for requests that named an
// existing topic (see topicLabel), never producer ids or partitions.
var (
	produceDuration = metrics.NewPrometheusHistogramExt("streamhouse_gateway_produce_duration_seconds", latencyBuckets)
	produceBatch    = metrics.NewPrometheusHistogramExt("streamhouse_gateway_produce_batch_records", recordBuckets)
)

// latencyBuckets are the upper bounds of request latency histograms, from
// half a millisecond (a WAL-acked produce) to 30 s (a stuck S3 call).
var latencyBuckets = []float64{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30}

// recordBuckets are the upper bounds of records-per-request histograms.
var recordBuckets = []float64{1, 10, 100, 1000, 10000, 100000}

// unknownTopic labels requests whose topic name cannot be trusted as a label
// value (a name that does not exist or is invalid): without it, a client
// sending random names would grow one series per name.
const unknownTopic = "_unknown"

// topicLabel is the topic label value for a request that ended with err.
func topicLabel(topic string, err error) string {
	if err != nil {
		switch connect.CodeOf(err) {
		case connect.CodeNotFound, connect.CodeInvalidArgument:
			return unknownTopic
		}
	}
	if topic == "" {
		return unknownTopic
	}
	return topic
}

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
			metrics.GetOrCreatePrometheusHistogramExt(fmt.Sprintf(`streamhouse_gateway_request_duration_seconds{method=%q}`, method), latencyBuckets).UpdateDuration(start)
			switch m := req.Any().(type) {
			case *v1.ProduceRequest:
				metrics.GetOrCreateCounter(fmt.Sprintf(`streamhouse_gateway_produce_requests_total{topic=%q,code=%q}`, topicLabel(m.GetTopic(), err), code)).Inc()
				produceDuration.UpdateDuration(start)
			case *v1.FetchRequest:
				metrics.GetOrCreateCounter(fmt.Sprintf(`streamhouse_gateway_fetch_requests_total{topic=%q,code=%q}`, topicLabel(m.GetTopic(), err), code)).Inc()
			}
			if err == nil {
				countPayload(req.Any(), resp.Any())
			}
			return resp, err
		}
	}
}

// countPayload counts the records and bytes of a successful produce or
// fetch, by topic.
func countPayload(req, resp any) {
	switch m := resp.(type) {
	case *v1.ProduceResponse:
		pr, ok := req.(*v1.ProduceRequest)
		if !ok {
			return
		}
		n := 0
		for _, r := range m.GetResults() {
			n += int(r.GetRecordCount())
		}
		size := len(pr.GetBatch())
		for _, r := range pr.GetRecords() {
			size += len(r.GetKey()) + len(r.GetValue())
		}
		topic := topicLabel(pr.GetTopic(), nil)
		metrics.GetOrCreateCounter(fmt.Sprintf(`streamhouse_gateway_produce_records_total{topic=%q}`, topic)).Add(n)
		metrics.GetOrCreateCounter(fmt.Sprintf(`streamhouse_gateway_produce_bytes_total{topic=%q}`, topic)).Add(size)
		produceBatch.Update(float64(n))
	case *v1.FetchResponse:
		fr, ok := req.(*v1.FetchRequest)
		if !ok {
			return
		}
		size := len(m.GetBatches())
		for _, r := range m.GetRecords() {
			size += len(r.GetKey()) + len(r.GetValue())
		}
		topic := topicLabel(fr.GetTopic(), nil)
		metrics.GetOrCreateCounter(fmt.Sprintf(`streamhouse_gateway_fetch_records_total{topic=%q}`, topic)).Add(fetchedRecords(fr, m))
		metrics.GetOrCreateCounter(fmt.Sprintf(`streamhouse_gateway_fetch_bytes_total{topic=%q}`, topic)).Add(size)
	}
}

// fetchedRecords is the number of records a fetch delivered: the records of
// a decoded fetch, or for a raw fetch the offsets from the requested one to
// the next (whole batches may start below the requested offset).
func fetchedRecords(req *v1.FetchRequest, resp *v1.FetchResponse) int {
	if len(resp.GetBatches()) > 0 {
		return int(max(resp.GetNextOffset()-req.GetOffset(), 0))
	}
	return len(resp.GetRecords())
}

// serveMetrics writes the process's metrics (Go runtime and process metrics
// included) in the Prometheus text format.
func serveMetrics(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	metrics.WritePrometheus(w, true)
}
