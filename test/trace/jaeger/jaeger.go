// Package jaeger runs a real Jaeger v2 (v1.76.0, an OpenTelemetry collector
// distribution with in-memory storage) as a child process for tests and the
// benchmark harness: OTLP in over gRPC and HTTP, the query API out, every
// port a free one on 127.0.0.1.
//
// The binary is found, in order, at $STREAMHOUSE_JAEGER, at
// <repo root>/bin/jaeger (the repo root is the nearest directory above the
// working directory holding go.work; `go tool task tools:jaeger` builds it
// there from tools/jaeger), or as jaeger on PATH.
package jaeger

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// EnvBinary is the environment variable that names the jaeger binary.
const EnvBinary = "STREAMHOUSE_JAEGER"

const (
	startAttempts = 3                // fresh ports tried if a port was taken meanwhile
	readyTimeout  = 60 * time.Second // per attempt (a cold start on a busy machine)
	stopTimeout   = 10 * time.Second // after SIGTERM, before SIGKILL
)

// Server is a running Jaeger.
type Server struct {
	// OTLPGRPC and OTLPHTTP are the OTLP receivers' host:port.
	OTLPGRPC, OTLPHTTP string
	// QueryURL is the query service's base URL (http://host:port), which
	// serves /api/services and /api/traces.
	QueryURL string

	cmd      *exec.Cmd
	out      *syncBuffer
	done     chan struct{}
	stopOnce sync.Once
}

// FindBinary returns the jaeger binary's path (see the package doc).
func FindBinary() (string, error) {
	if p := os.Getenv(EnvBinary); p != "" {
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("%s=%s: %w", EnvBinary, p, err)
		}
		return p, nil
	}
	if dir, err := os.Getwd(); err == nil {
		for ; ; dir = filepath.Dir(dir) {
			if _, err := os.Stat(filepath.Join(dir, "go.work")); err == nil {
				p := filepath.Join(dir, "bin", "jaeger")
				if _, err := os.Stat(p); err == nil {
					return p, nil
				}
				break
			}
			if filepath.Dir(dir) == dir {
				break
			}
		}
	}
	if p, err := exec.LookPath("jaeger"); err == nil {
		return p, nil
	}
	return "", fmt.Errorf("no jaeger binary: set %s, or build bin/jaeger with `go tool task tools:jaeger`", EnvBinary)
}

// Start runs Jaeger with its config file in dir (which must exist) and
// waits until the query API answers. Stop it with Stop.
func Start(dir string) (*Server, error) {
	bin, err := FindBinary()
	if err != nil {
		return nil, err
	}
	var last error
	for range startAttempts {
		s, err := start(bin, dir)
		if err == nil {
			return s, nil
		}
		last = err
	}
	return nil, last
}

// config is the collector configuration: OTLP receivers, memory storage,
// the query extension, and no other listener (no internal metrics port).
const config = `service:
  extensions: [jaeger_storage, jaeger_query]
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [jaeger_storage_exporter]
  telemetry:
    metrics:
      level: none
    logs:
      level: warn
extensions:
  jaeger_storage:
    backends:
      mem:
        memory:
          max_traces: 100000
  jaeger_query:
    # Jaeger's own traces would go to localhost:4317 (a fixed port).
    enable_tracing: false
    storage:
      traces: mem
    http:
      endpoint: %s
    grpc:
      endpoint: %s
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: %s
      http:
        endpoint: %s
processors:
  batch:
    timeout: 100ms
exporters:
  jaeger_storage_exporter:
    trace_storage: mem
`

func start(bin, dir string) (*Server, error) {
	var addrs [4]string
	for i := range addrs {
		a, err := freeAddr()
		if err != nil {
			return nil, err
		}
		addrs[i] = a
	}
	queryHTTP, queryGRPC, otlpGRPC, otlpHTTP := addrs[0], addrs[1], addrs[2], addrs[3]
	cfgPath := filepath.Join(dir, "jaeger.yaml")
	if err := os.WriteFile(cfgPath, fmt.Appendf(nil, config, queryHTTP, queryGRPC, otlpGRPC, otlpHTTP), 0o644); err != nil {
		return nil, fmt.Errorf("jaeger: write config: %w", err)
	}
	out := &syncBuffer{}
	cmd := exec.Command(bin, "--config", cfgPath)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("jaeger: start %s: %w", bin, err)
	}
	s := &Server{OTLPGRPC: otlpGRPC, OTLPHTTP: otlpHTTP, QueryURL: "http://" + queryHTTP, cmd: cmd, out: out, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		close(s.done)
	}()
	if err := s.waitReady(); err != nil {
		s.Stop()
		return nil, fmt.Errorf("%w\njaeger output:\n%s", err, s.Output())
	}
	return s, nil
}

// waitReady polls the query API and the OTLP/HTTP port.
func (s *Server) waitReady() error {
	deadline := time.Now().Add(readyTimeout)
	hc := &http.Client{Timeout: 2 * time.Second}
	defer hc.CloseIdleConnections()
	for {
		err := func() error {
			resp, err := hc.Get(s.QueryURL + "/api/services")
			if err != nil {
				return err
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("query API: %s", resp.Status)
			}
			for _, a := range []string{s.OTLPHTTP, s.OTLPGRPC} {
				c, err := net.DialTimeout("tcp", a, time.Second)
				if err != nil {
					return err
				}
				c.Close()
			}
			return nil
		}()
		if err == nil {
			return nil
		}
		select {
		case <-s.done:
			return errors.New("jaeger exited before it was ready")
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("jaeger not ready within %v: %v", readyTimeout, err)
		}
	}
}

// Env returns the OTEL_* variables that point an OpenTelemetry SDK at this
// Jaeger over OTLP/HTTP.
func (s *Server) Env() []string {
	return []string{"OTEL_EXPORTER_OTLP_ENDPOINT=http://" + s.OTLPHTTP, "OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf"}
}

// Stop terminates Jaeger (SIGTERM, then SIGKILL) and waits for it. Safe
// to call more than once.
func (s *Server) Stop() {
	s.stopOnce.Do(func() {
		_ = s.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-s.done:
		case <-time.After(stopTimeout):
			_ = s.cmd.Process.Kill()
			<-s.done
		}
	})
}

// Output returns what Jaeger printed.
func (s *Server) Output() string { return s.out.String() }

// Span is one span as the query API returns it.
type Span struct {
	TraceID       string `json:"traceID"`
	SpanID        string `json:"spanID"`
	OperationName string `json:"operationName"`
	References    []struct {
		RefType string `json:"refType"` // CHILD_OF or FOLLOWS_FROM (span links)
		TraceID string `json:"traceID"`
		SpanID  string `json:"spanID"`
	} `json:"references"`
	StartTime int64  `json:"startTime"` // µs since the epoch
	Duration  int64  `json:"duration"`  // µs
	ProcessID string `json:"processID"`
	Tags      []struct {
		Key   string `json:"key"`
		Value any    `json:"value"`
	} `json:"tags"`
}

// Parent returns the span's CHILD_OF parent span id, or "".
func (sp Span) Parent() string {
	for _, r := range sp.References {
		if r.RefType == "CHILD_OF" {
			return r.SpanID
		}
	}
	return ""
}

// Trace is one trace as the query API returns it.
type Trace struct {
	TraceID   string `json:"traceID"`
	Spans     []Span `json:"spans"`
	Processes map[string]struct {
		ServiceName string `json:"serviceName"`
	} `json:"processes"`
}

// Traces returns up to limit recent traces of service (the query API's
// /api/traces).
func (s *Server) Traces(ctx context.Context, service string, limit int) ([]Trace, error) {
	q := url.Values{"service": {service}, "limit": {fmt.Sprint(limit)}, "lookback": {"1h"}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.QueryURL+"/api/traces?"+q.Encode(), nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("jaeger query: %w", err)
	}
	defer resp.Body.Close()
	var body struct {
		Data   []Trace `json:"data"`
		Errors []struct {
			Msg string `json:"msg"`
		} `json:"errors"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return nil, fmt.Errorf("jaeger query: decode: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		// An unknown service is a 404 until its first span arrives.
		if resp.StatusCode == http.StatusNotFound {
			return nil, nil
		}
		return nil, fmt.Errorf("jaeger query: %s %v", resp.Status, body.Errors)
	}
	return body.Data, nil
}

func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return strings.Clone(b.b.String())
}
