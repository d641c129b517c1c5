// Package agent is StreamHouse's data plane: it holds partition leases from
// the controller, appends record batches to its write-ahead log (package
// wal), uploads one object per flush holding every partition's new batches,
// commits the object's sections to the controller with the lease epochs, and
// serves reads from the WAL tail and from objects.
//
// Acknowledgement (DESIGN.md, invariant 1): acks=wal returns after the WAL
// fsync; acks=durable after the section holding the records is committed
// through Raft. A topic's high watermark (what consumers may read) is the
// committed end offset for durable topics and the fsynced WAL end for wal
// topics.
//
// Errors that mean "nothing was appended, retry" use Unavailable,
// FailedPrecondition or ResourceExhausted; an error after the batch reached
// the WAL never uses those codes (it uses Aborted, Internal, Canceled or
// DeadlineExceeded), so clients can retry the former safely.
package agent

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"

	"github.com/streamhouse/streamhouse/agent/wal"
	v1 "github.com/streamhouse/streamhouse/api/gen/streamhouse/v1"
	"github.com/streamhouse/streamhouse/api/gen/streamhouse/v1/streamhousev1connect"
	"github.com/streamhouse/streamhouse/pkg/admission"
	"github.com/streamhouse/streamhouse/pkg/objfile"
	"github.com/streamhouse/streamhouse/pkg/objstore"
	"github.com/streamhouse/streamhouse/pkg/objstore/guard"
)

// Config configures an agent. Zero values take the defaults noted.
type Config struct {
	// ID is the agent's stable id. Default: read from DataDir/agent-id, or
	// generated and stored there on first start.
	ID string
	// DataDir holds the WAL. Required.
	DataDir string
	// Address is where gateways reach this agent (advertised to the controller).
	Address string
	// Zone is the agent's availability zone, optional.
	Zone string
	// Controller is the controller's internal API.
	Controller streamhousev1connect.ControllerServiceClient
	// Store is the object store.
	Store objstore.Store
	// KeyRoot prefixes every object key, optional (e.g. "streamhouse").
	KeyRoot string
	// PrefixCount spreads object keys over this many shard prefixes. Default 16.
	PrefixCount int
	// FlushInterval is the longest time new data waits before upload. Default 250ms.
	FlushInterval time.Duration
	// FlushBytes starts an upload early once this much new data is waiting,
	// and caps one object's size. Default 16 MiB (at most 64 PUTs per GiB).
	FlushBytes int
	// HeartbeatInterval is how often leases are renewed. Default 1s.
	HeartbeatInterval time.Duration
	// LeaseSafetyMargin: the agent stops writing a partition this long before
	// its lease could expire on the controller's clock. Default 2s.
	LeaseSafetyMargin time.Duration
	// CacheBytes bounds the object section cache. Default 64 MiB.
	CacheBytes int64
	// NoSync skips WAL fsyncs (tests only).
	NoSync bool
	// Guard protects the object store: per-operation rate limits, retries
	// with backoff, a circuit breaker and an adaptive PUT rate. Zero fields
	// take guard's defaults.
	Guard guard.Config
	// NoGuard talks to the store directly (no limits, retries or breaker);
	// for measuring what the guard costs.
	NoGuard bool
	// WALBudget is the disk the WAL may use for data not yet uploaded.
	// Past HighWatermark of it the agent refuses writes with
	// ResourceExhausted (HTTP 429) until it is back under LowWatermark.
	// Default 1 GiB, 0.8 and 0.6.
	WALBudget     int64
	HighWatermark float64
	LowWatermark  float64
	// BackpressureMinDwell is the least time WAL backpressure stays on (or
	// off) once it turned on (or off), so a crowd of retries arriving the
	// moment writes are accepted again does not flap it; past halfway from
	// HighWatermark to the budget it turns on regardless. Refusals for
	// backpressure carry it as their Retry-After. Default 2s; 1ns
	// effectively disables it.
	BackpressureMinDwell time.Duration
	// MaxInFlightBytes bounds the batch bytes of Append requests held at
	// once, from admission to answer (a durable ack holds its request until
	// the next flush is committed). Past it requests get ResourceExhausted
	// (HTTP 429) with a Retry-After, so memory follows this limit rather
	// than the offered load. Default 128 MiB.
	MaxInFlightBytes int64
	// DurableAckTimeout bounds how long an admitted durable write waits for
	// its commit before it is answered (DeadlineExceeded: the records are in
	// the WAL and may or may not become visible). Default 10s.
	DurableAckTimeout time.Duration
	// Logger receives structured logs. Default slog.Default().
	Logger *slog.Logger
}

func (c *Config) setDefaults() error {
	switch {
	case c.DataDir == "":
		return errors.New("agent: DataDir is required")
	case c.Controller == nil:
		return errors.New("agent: Controller is required")
	case c.Store == nil:
		return errors.New("agent: Store is required")
	}
	if c.PrefixCount == 0 {
		c.PrefixCount = 16
	}
	if c.PrefixCount < 1 || c.PrefixCount > 65536 {
		return fmt.Errorf("agent: prefix count %d must be between 1 and 65536", c.PrefixCount)
	}
	if c.FlushInterval == 0 {
		c.FlushInterval = 250 * time.Millisecond
	}
	if c.FlushBytes == 0 {
		c.FlushBytes = 16 << 20
	}
	if c.HeartbeatInterval == 0 {
		c.HeartbeatInterval = time.Second
	}
	if c.LeaseSafetyMargin == 0 {
		c.LeaseSafetyMargin = 2 * time.Second
	}
	if c.CacheBytes == 0 {
		c.CacheBytes = 64 << 20
	}
	if c.WALBudget == 0 {
		c.WALBudget = 1 << 30
	}
	if c.HighWatermark == 0 {
		c.HighWatermark = 0.8
	}
	if c.LowWatermark == 0 {
		c.LowWatermark = 0.6
	}
	if c.BackpressureMinDwell == 0 {
		c.BackpressureMinDwell = 2 * time.Second
	}
	if c.BackpressureMinDwell < 0 {
		return fmt.Errorf("agent: backpressure min dwell %v must not be negative", c.BackpressureMinDwell)
	}
	if c.MaxInFlightBytes == 0 {
		c.MaxInFlightBytes = 128 << 20
	}
	if c.DurableAckTimeout == 0 {
		c.DurableAckTimeout = 10 * time.Second
	}
	if c.MaxInFlightBytes < 0 || c.DurableAckTimeout < 0 {
		return errors.New("agent: MaxInFlightBytes and DurableAckTimeout must not be negative")
	}
	if c.WALBudget < 0 || c.LowWatermark <= 0 || c.HighWatermark > 1 || c.LowWatermark >= c.HighWatermark {
		return fmt.Errorf("agent: WAL budget %d with watermarks %.2f/%.2f: need a positive budget and 0 < low < high <= 1", c.WALBudget, c.LowWatermark, c.HighWatermark)
	}
	if c.FlushInterval < 0 || c.FlushBytes < 0 || c.HeartbeatInterval < 0 || c.LeaseSafetyMargin < 0 || c.CacheBytes < 0 {
		return errors.New("agent: intervals and sizes must not be negative")
	}
	if c.KeyRoot != "" {
		if err := objstore.ValidateKey(c.KeyRoot); err != nil {
			return fmt.Errorf("agent: key root: %w", err)
		}
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Guard.Logger == nil {
		c.Guard.Logger = c.Logger.With("component", "s3guard")
	}
	return nil
}

// Agent is one running agent. Its methods are safe for concurrent use.
type Agent struct {
	cfg         Config
	log         *slog.Logger
	wal         *wal.WAL
	incarnation string
	cache       *sectionCache

	mu    sync.RWMutex
	parts map[partKey]*partition

	unuploaded atomic.Int64 // bytes appended and not yet uploaded (a flush trigger, approximate)
	guard      *guard.Store
	// backpressure is set while the WAL's uncommitted bytes are past the
	// high watermark (cleared below the low one): writes get 429.
	backpressure atomic.Bool
	// inflight is the admission budget of Append requests (MaxInFlightBytes).
	inflight *admission.Budget

	hbMu     sync.Mutex // serialises heartbeats
	lastHB   time.Time  // when the last successful heartbeat was sent
	flushNow chan struct{}
	// builder assembles each flush's object. Only the upload loop uses it;
	// it is kept across flushes so its buffer (up to FlushBytes) is
	// allocated once rather than regrown from empty at every flush.
	builder *objfile.Builder
	// walScratch is the upload loop's buffer for reading WAL frames back
	// (each is copied into the builder), kept for the same reason.
	walScratch []byte
	// flushStart is where (in the sorted partition list) the next flush
	// begins when the last one ran out of FlushBytes. Upload loop only.
	flushStart int

	ctx     context.Context // cancelled by Close after the final flush
	cancel  context.CancelFunc
	closing chan struct{} // closed when Close starts: appends are refused
	// closeMu is read-held by each Append from its last closing check to the
	// end of its WAL wait; Close write-locks it once to wait for those.
	closeMu sync.RWMutex
	// draining is set while the controller has the agent hand over its
	// partitions: appends are refused (retryably).
	draining atomic.Bool
	// drained is closed by Close once no append can reach the WAL any more;
	// the upload loop then runs the final flush.
	drained chan struct{}
	wg      sync.WaitGroup

	uploadDone chan struct{}
	closeOnce  sync.Once
	closeErr   error
}

type partKey struct {
	topic     string
	partition int32
}

func (k partKey) String() string { return fmt.Sprintf("%s/%d", k.topic, k.partition) }

// Open recovers the WAL under cfg.DataDir, registers with the controller,
// takes its leases, and starts the heartbeat and upload loops. Data the WAL
// holds beyond a partition's committed end is uploaded again.
func Open(ctx context.Context, cfg Config) (*Agent, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.DataDir, 0o755); err != nil {
		return nil, fmt.Errorf("agent: create data dir: %w", err)
	}
	if cfg.ID == "" {
		id, err := loadOrCreateID(filepath.Join(cfg.DataDir, "agent-id"))
		if err != nil {
			return nil, err
		}
		cfg.ID = id
	}
	log := cfg.Logger.With("component", "agent", "agent_id", cfg.ID)
	// Metered inside the guard: the counters see every real request,
	// retries included (what the S3 bill counts). Traced innermost, for
	// the same reason: one span per real request (the S3 PUT of a flush).
	metered := objstore.Metered(objstore.Traced(cfg.Store), "streamhouse_agent")
	g := guard.New(metered, cfg.Guard, nil)
	cfg.Store = g
	if cfg.NoGuard {
		cfg.Store = metered
	}
	// Segments of at most an eighth of the budget: sealed segments are
	// deleted once their data is committed, so the files on disk stay near
	// the budget even right after the store recovers.
	segment := min(int64(64<<20), max(cfg.WALBudget/8, 256<<10))
	w, err := wal.Open(wal.Options{Dir: filepath.Join(cfg.DataDir, "wal"), NoSync: cfg.NoSync, Logger: log, SegmentBytes: segment})
	if err != nil {
		return nil, fmt.Errorf("agent: open WAL: %w", err)
	}
	a := &Agent{
		cfg: cfg, log: log, wal: w, incarnation: randomHex(8), guard: g,
		cache: newSectionCache(cfg.CacheBytes), parts: map[partKey]*partition{},
		flushNow: make(chan struct{}, 1), builder: objfile.NewBuilder(), closing: make(chan struct{}), drained: make(chan struct{}), uploadDone: make(chan struct{}),
	}
	a.inflight = admission.New(cfg.MaxInFlightBytes, func(held int64) { inflightBytes.Set(float64(held)) })
	a.ctx, a.cancel = context.WithCancel(context.Background())
	if st := w.Stats(); st.TruncatedBytes > 0 || st.QuarantinedSegments > 0 {
		log.Warn("WAL recovery cut damaged data", "truncated_bytes", st.TruncatedBytes, "quarantined_segments", st.QuarantinedSegments)
	}
	if err := a.heartbeat(ctx, true); err != nil {
		a.cancel()
		_ = w.Close()
		return nil, fmt.Errorf("agent: first heartbeat: %w", err)
	}
	a.wg.Add(3)
	go a.heartbeatLoop()
	go a.uploadLoop()
	go a.backpressureLoop()
	log.Info("agent started", "incarnation", a.incarnation, "partitions", len(a.parts))
	return a, nil
}

// ID returns the agent's stable id.
func (a *Agent) ID() string { return a.cfg.ID }

// Close shuts the agent down gracefully: it refuses new appends, uploads and
// commits everything the WAL holds, then stops its loops and closes the WAL.
// ctx bounds the final upload; what is not uploaded by then stays in the WAL
// and is uploaded on the next start. Close is idempotent.
func (a *Agent) Close(ctx context.Context) error {
	a.closeOnce.Do(func() {
		close(a.closing)
		// Wait for appends already past their closing check, so the final
		// flush sees (and commits) everything they acknowledge.
		a.closeMu.Lock()
		close(a.drained)
		a.closeMu.Unlock()
		flushed := false
		select {
		case <-a.uploadDone:
			flushed = true
		case <-ctx.Done():
			a.log.Warn("final upload did not finish; the WAL keeps the data for the next start", "err", ctx.Err())
		}
		a.cancel() // stops heartbeats first, so nothing renews what we release
		a.wg.Wait()
		if flushed {
			// Everything is committed: hand the partitions over now rather
			// than after the leases expire. When the upload did not finish
			// the leases stay, so this agent gets its WAL data back on restart.
			res, err := a.cfg.Controller.ReleaseLeases(ctx, connect.NewRequest(&v1.ReleaseLeasesRequest{AgentId: a.cfg.ID, Incarnation: a.incarnation}))
			if err != nil {
				a.log.Warn("release leases; they expire on their own", "err", err)
			} else {
				a.log.Info("released leases", "partitions", res.Msg.GetReleased())
			}
		}
		a.mu.Lock()
		for _, p := range a.parts {
			p.fail(errors.New("agent shut down before the records were committed; they are kept in the WAL and committed on restart"))
		}
		a.mu.Unlock()
		a.closeErr = a.wal.Close()
	})
	return a.closeErr
}

func (a *Agent) isClosing() bool {
	select {
	case <-a.closing:
		return true
	default:
		return false
	}
}

func loadOrCreateID(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err == nil {
		id := strings.TrimSpace(string(b))
		if id == "" {
			return "", fmt.Errorf("agent: %s is empty; remove it to get a new id", path)
		}
		return id, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("agent: read id: %w", err)
	}
	id := "agent-" + randomHex(6)
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(id+"\n"), 0o644); err != nil {
		return "", fmt.Errorf("agent: write id: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return "", fmt.Errorf("agent: write id: %w", err)
	}
	return id, nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand never fails on Linux
	}
	return hex.EncodeToString(b)
}
