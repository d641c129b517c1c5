// Package client is the Go SDK for StreamHouse: a batching Producer and a
// partition Reader that talk to a gateway over Connect.
//
// # Connection
//
// New builds one HTTP client for all services. For http:// base URLs it speaks
// HTTP/2 cleartext (h2c, prior knowledge), so every produce and fetch request
// of the process multiplexes over one TCP connection; for https:// URLs it
// negotiates HTTP/2 over TLS (or falls back to HTTP/1.1).
//
// # Producer
//
// A Producer buffers records per partition and sends each partition's batch as
// ONE pre-encoded Kafka RecordBatch v2 (ProduceRequest.batch with partition
// set), which is several times cheaper for client and server than per-record
// protobuf. Placement follows Kafka's default partitioner: an explicit
// Record.Partition wins; otherwise a non-nil key goes to
// partition.ForKey(key, partitions) (murmur2, identical to Kafka); keyless
// records stick to one partition until BatchBytes of them went to it, then
// move to another one chosen at random (Kafka's uniform sticky partitioner,
// KIP-794): batches stay large whatever the linger, and over time every
// partition gets the same share.
//
// Per partition, batches are sent in order with one request in flight by
// default, and the callbacks of a partition fire in Produce order, which is
// offset order as long as MaxInFlightPerPartition is 1.
//
// Latency with ACKS_DURABLE: the server acknowledges a batch only once the
// agent's next flush (every flush interval, 250 ms by default) is uploaded
// and committed. With one request in flight, records that arrive while a
// batch waits for its flush are not sent until it returns, and then wait
// for the following flush: about two flush intervals in all. Where order
// under retries matters less than latency, MaxInFlightPerPartition(16) with
// Linger(25*time.Millisecond) keeps sending while earlier batches wait,
// which brings it to about one interval (the benchmark's p99 at 650,000
// records/s: 306 ms against 926 ms).
//
// # Retries: no acknowledged duplicates
//
// There is no idempotent producer yet: the server cannot recognise a batch it
// has already appended. So the Producer retries a batch ONLY when the batch
// provably was not appended:
//
//   - the server answered ResourceExhausted (it sheds load before appending;
//     a Retry-After response header, in seconds or as an HTTP date, is
//     honoured),
//   - the server answered Unavailable or FailedPrecondition AND marked the
//     error "not applied" (rpcerr.IsNotApplied: no agent holds the
//     partition, or the holder changed, before anything was appended); an
//     unmarked Unavailable, such as a proxy's 503, is an unknown outcome,
//   - the request never left the process: the connection could not be
//     dialled (connection refused, DNS failure, dial timeout).
//
// "The server answered" means the error is a Connect wire error
// (connect.IsWireError): an error body sent by the server, not one synthesised
// by the client from a transport failure.
//
// Server-answered permanent errors (InvalidArgument, NotFound, OutOfRange,
// PermissionDenied, Unauthenticated, Unimplemented, AlreadyExists) fail the
// batch's records at once; those records were not written.
//
// EVERYTHING ELSE is not retried, because the batch may have been appended:
// request timeouts, connections reset or closed mid-request, HTTP/2 stream
// resets, and server-answered Internal, Unknown, DeadlineExceeded, Canceled,
// Aborted or DataLoss. The records of such a batch fail with an
// *UnknownOutcomeError (errors.Is(err, ErrUnknownOutcome) is true): they may
// or may not have been written, and the application decides whether to
// produce them again (accepting a possible duplicate) or not.
//
// Retries back off exponentially with full jitter (base 50 ms, cap 2 s) and
// give up after MaxRetryDuration (30 s by default); a batch that gives up that
// way fails with the last server error, and was not written.
//
// # Reader
//
// A Reader fetches one partition with raw=true (the stored batches), decodes
// them client-side and returns records from the requested offset on, long
// polling when it has caught up.
//
// # MultiReader
//
// A MultiReader reads many partitions, of one or more topics, with one
// FetchPartitions request per Next (Kafka's Fetch shape): one long-poll for
// all of them, so request count does not grow with partition count. Each
// partition keeps its own position, and its errors are its own.
//
// # GroupConsumer
//
// A GroupConsumer is a member of a consumer group: the controller assigns it
// partitions (KIP-848 style, server-side assignors), it heartbeats in the
// background, reads all its partitions with one MultiReader from their
// committed offsets, commits before it releases a partition, and rejoins
// when it is fenced. See NewGroupConsumer.
package client

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"time"

	"connectrpc.com/connect"

	streamhousev1 "github.com/streamhouse/streamhouse/api/gen/streamhouse/v1"
	"github.com/streamhouse/streamhouse/api/gen/streamhouse/v1/streamhousev1connect"
)

// Client is a connection to a StreamHouse gateway. It is safe for concurrent
// use; create one per process and share it between producers and readers.
type Client struct {
	admin   streamhousev1connect.AdminServiceClient
	produce streamhousev1connect.ProduceServiceClient
	consume streamhousev1connect.ConsumeServiceClient
	groups  streamhousev1connect.GroupServiceClient

	// transport is set when the Client built its own HTTP client.
	transport *http.Transport
}

type clientConfig struct {
	httpClient  connect.HTTPClient
	connectOpts []connect.ClientOption
}

// Option configures a Client.
type Option func(*clientConfig)

// WithHTTPClient makes the Client use hc instead of building its own HTTP
// client. Close then leaves hc alone. hc should speak HTTP/2 (h2c for http://
// URLs) so requests multiplex.
func WithHTTPClient(hc connect.HTTPClient) Option {
	return func(c *clientConfig) { c.httpClient = hc }
}

// WithConnectOptions adds Connect client options (interceptors, protocol,
// compression, read limits) to every service client.
func WithConnectOptions(opts ...connect.ClientOption) Option {
	return func(c *clientConfig) { c.connectOpts = append(c.connectOpts, opts...) }
}

// New returns a Client for the gateway at baseURL (for example
// "http://localhost:9092"). It does not connect; the first request does.
func New(baseURL string, opts ...Option) (*Client, error) {
	u, err := url.Parse(baseURL)
	if err != nil {
		return nil, fmt.Errorf("client: bad base URL %q: %w", baseURL, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("client: base URL %q: scheme must be http or https", baseURL)
	}
	if u.Host == "" {
		return nil, fmt.Errorf("client: base URL %q has no host", baseURL)
	}
	var cfg clientConfig
	for _, o := range opts {
		o(&cfg)
	}
	c := &Client{}
	hc := cfg.httpClient
	if hc == nil {
		c.transport = newTransport(u.Scheme == "https")
		hc = &http.Client{Transport: c.transport}
	}
	// Do not ask for gzip answers: fetch answers are record batches (already
	// compressed when the producer chose a codec) and produce answers are a
	// few bytes, so gzip costs the gateway more CPU than it saves bytes (it
	// was 80 % of the server's CPU on cold reads, and 8 % on produce answers
	// at 50k records/s). Options given with WithConnectOptions come after:
	// connect.WithAcceptCompression("gzip", ...) there turns it back on.
	copts := append([]connect.ClientOption{connect.WithAcceptCompression("gzip", nil, nil)}, cfg.connectOpts...)
	c.admin = streamhousev1connect.NewAdminServiceClient(hc, baseURL, copts...)
	c.produce = streamhousev1connect.NewProduceServiceClient(hc, baseURL, copts...)
	c.consume = streamhousev1connect.NewConsumeServiceClient(hc, baseURL, copts...)
	c.groups = streamhousev1connect.NewGroupServiceClient(hc, baseURL, copts...)
	return c, nil
}

func newTransport(tls bool) *http.Transport {
	var protos http.Protocols
	if tls {
		protos.SetHTTP1(true)
		protos.SetHTTP2(true)
	} else {
		protos.SetUnencryptedHTTP2(true)
	}
	return &http.Transport{
		DialContext: (&net.Dialer{
			Timeout:   10 * time.Second,
			KeepAlive: 30 * time.Second,
		}).DialContext,
		Protocols:           &protos,
		ForceAttemptHTTP2:   true,
		MaxIdleConnsPerHost: 4,
		IdleConnTimeout:     90 * time.Second,
		TLSHandshakeTimeout: 10 * time.Second,
		HTTP2: &http.HTTP2Config{
			// Detect dead connections: ping after 30 s without frames.
			SendPingTimeout: 30 * time.Second,
			PingTimeout:     15 * time.Second,
		},
	}
}

// Admin returns the raw AdminService client (create, delete, list and
// describe topics).
func (c *Client) Admin() streamhousev1connect.AdminServiceClient { return c.admin }

// Produce returns the raw ProduceService client.
func (c *Client) Produce() streamhousev1connect.ProduceServiceClient { return c.produce }

// Consume returns the raw ConsumeService client.
func (c *Client) Consume() streamhousev1connect.ConsumeServiceClient { return c.consume }

// Groups returns the raw GroupService client (consumer groups: heartbeats,
// offsets, and the admin calls shctl uses).
func (c *Client) Groups() streamhousev1connect.GroupServiceClient { return c.groups }

// Close closes the idle connections of the HTTP client the Client built. Close
// producers and stop readers first; Close does not wait for them.
func (c *Client) Close() error {
	if c.transport != nil {
		c.transport.CloseIdleConnections()
	}
	return nil
}

// describeTopic fetches a topic's settings and partitions.
func (c *Client) describeTopic(ctx context.Context, topic string) (*streamhousev1.DescribeTopicResponse, error) {
	resp, err := c.admin.DescribeTopic(ctx, connect.NewRequest(&streamhousev1.DescribeTopicRequest{Name: topic}))
	if err != nil {
		return nil, fmt.Errorf("client: describe topic %q: %w", topic, err)
	}
	if resp.Msg.GetTopic() == nil {
		return nil, fmt.Errorf("client: describe topic %q: response has no topic", topic)
	}
	return resp.Msg, nil
}

// errorsAsConnect returns err's *connect.Error, if any.
func errorsAsConnect(err error) (*connect.Error, bool) {
	var ce *connect.Error
	if errors.As(err, &ce) {
		return ce, true
	}
	return nil, false
}
