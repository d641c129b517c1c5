module github.com/streamhouse/streamhouse/gateway

go 1.26.8

require (
	connectrpc.com/connect v1.21.1
	github.com/VictoriaMetrics/metrics v1.45.0
	github.com/streamhouse/streamhouse/api v0.0.0
	github.com/streamhouse/streamhouse/pkg v0.0.0
	go.uber.org/goleak v1.3.0
	google.golang.org/protobuf v1.36.12
)

require (
	github.com/cespare/xxhash/v2 v2.3.0 // indirect
	github.com/go-logr/logr v1.4.4 // indirect
	github.com/go-logr/stdr v1.2.2 // indirect
	github.com/klauspost/compress v1.20.4 // indirect
	github.com/pierrec/lz4/v4 v4.1.33 // indirect
	github.com/twmb/franz-go/pkg/kmsg v1.15.1 // indirect
	github.com/valyala/fastrand v1.1.0 // indirect
	github.com/valyala/histogram v1.2.0 // indirect
	go.opentelemetry.io/auto/sdk v1.2.1 // indirect
	go.opentelemetry.io/otel v1.47.0
	go.opentelemetry.io/otel/log v1.47.0 // indirect
	go.opentelemetry.io/otel/metric v1.47.0 // indirect
	go.opentelemetry.io/otel/trace v1.47.0
	golang.org/x/sys v0.48.0 // indirect
)

replace github.com/streamhouse/streamhouse/api => ../api

replace github.com/streamhouse/streamhouse/pkg => ../pkg
