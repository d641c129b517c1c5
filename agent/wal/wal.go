package wal

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/bbolt"

	"github.com/streamhouse/streamhouse/pkg/fsutil"
)

// Errors returned by the WAL. Test with errors.Is.
var (
	// ErrClosed is returned by operations on a closed WAL, and by Pending.Wait
	// for an Append made after Close started.
	ErrClosed = errors.New("wal: closed")
	// ErrFailed wraps the I/O error (write or fdatasync) that killed the WAL.
	// Every Append after that error fails with it; reopen the WAL to recover.
	ErrFailed = errors.New("wal: failed")
	// ErrCorrupt is returned (wrapped) when a frame fails its CRC or is malformed.
	ErrCorrupt = errors.New("wal: corrupt frame")
	// ErrSegmentNotFound is returned by Read when the segment of a position no
	// longer exists (deleted after commit, or quarantined).
	ErrSegmentNotFound = errors.New("wal: segment not found")
	// ErrInvalidEntry is returned by Pending.Wait for an Entry that cannot be
	// appended (EndOffset <= BaseOffset, or data too large for a frame).
	ErrInvalidEntry = errors.New("wal: invalid entry")
)

const (
	defaultSegmentBytes  = 64 << 20
	defaultIndexInterval = 100 * time.Millisecond
	// openMarker is the file in Options.Dir that exists while the WAL is open.
	openMarker = "open.marker"
)

// Options configures a WAL. Only Dir is required.
type Options struct {
	// Dir holds the segment files (Dir/segments) and the bbolt index
	// (Dir/index.db). It is created if missing. One WAL per Dir: Open takes
	// bbolt's file lock and fails if another WAL holds it.
	Dir string
	// SegmentBytes is the size past which the writer rolls to a new segment
	// file; default 64 MiB. A frame never spans segments, so a frame larger
	// than SegmentBytes gets a segment of its own.
	SegmentBytes int64
	// NoSync skips every fdatasync. Tests and benchmarks only: with NoSync an
	// acknowledged append survives a process crash but not a power loss.
	NoSync bool
	// IndexInterval is how often the background indexer persists new index
	// entries to bbolt (one transaction each time); default 100ms.
	IndexInterval time.Duration
	// Logger receives recovery warnings and errors; default slog.Default().
	Logger *slog.Logger

	// testSkipIndexPersist makes the indexer and Close skip persisting index
	// entries and the checkpoint (simulates an index lagging the WAL).
	testSkipIndexPersist bool
	// testSyncFile replaces fdatasync on segment files (fault injection).
	testSyncFile func(*os.File) error
}

// Entry is one record batch to append.
type Entry struct {
	Topic          string
	Partition      int32
	BaseOffset     int64 // first offset in Data
	EndOffset      int64 // exclusive; must be > BaseOffset
	MaxTimestampMs int64
	// Data is the RecordBatch, opaque to the WAL. Append does NOT copy it: the
	// caller must not modify Data until the Pending completes.
	Data []byte
}

// Pos is where a frame lives: segment sequence number, byte offset of the
// frame in the segment file, and the frame's total length (header included).
type Pos struct {
	Segment uint64
	Offset  int64
	Length  int32
}

func (p Pos) less(q Pos) bool {
	return p.Segment < q.Segment || (p.Segment == q.Segment && p.Offset < q.Offset)
}

func (p Pos) end() Pos { return Pos{Segment: p.Segment, Offset: p.Offset + int64(p.Length)} }

// IndexEntry describes one durable frame: its partition, offset range,
// maximum timestamp and position. Read(Pos) returns its data.
type IndexEntry struct {
	Topic          string
	Partition      int32
	BaseOffset     int64
	EndOffset      int64 // exclusive
	MaxTimestampMs int64
	Pos            Pos
}

// PartitionState summarises one partition known to the WAL.
type PartitionState struct {
	Topic     string
	Partition int32
	// FirstOffset is the lowest retained BaseOffset, or EndOffset when no
	// entry is retained (everything committed).
	FirstOffset int64
	// EndOffset is the highest durable (fsynced) EndOffset, or CommittedEnd if
	// that is higher.
	EndOffset int64
	// CommittedEnd is the mark set by SetCommitted (0 if never set).
	CommittedEnd int64
}

// Stats are plain counters and gauges, safe to read at any time.
type Stats struct {
	RetainedBytes       int64         // bytes in live segment files
	Segments            int           // live segment files, active one included
	UncommittedBytes    int64         // frame bytes of indexed entries not yet committed
	Appends             int64         // Append calls accepted since Open
	Groups              int64         // commit groups written since Open
	Fsyncs              int64         // fdatasync calls on segment files since Open
	LastFsyncDuration   time.Duration // duration of the last group's fdatasync(s)
	TruncatedBytes      int64         // bytes cut from torn tails by recovery
	QuarantinedSegments int64         // segments renamed to .corrupt by recovery
}

// Pending is the result of an Append. Wait for it to learn whether and where
// the frame became durable.
type Pending struct {
	done chan struct{}
	pos  Pos
	err  error

	// Set by Append, used by the writer and syncer.
	head      []byte
	data      []byte
	topic     string
	partition int32
	base, end int64
	maxTs     int64
}

// Wait returns the frame's position once it is fsynced. It returns an error if
// the append failed: the WAL was closed (ErrClosed), died of an I/O error
// (ErrFailed), or the entry was invalid (ErrInvalidEntry); such a frame is not
// durable and must not be acknowledged. If ctx ends first Wait returns
// ctx.Err(), but the append is still in flight and may become durable.
func (p *Pending) Wait(ctx context.Context) (Pos, error) {
	select {
	case <-p.done:
		return p.pos, p.err
	default:
	}
	select {
	case <-p.done:
		return p.pos, p.err
	case <-ctx.Done():
		return Pos{}, ctx.Err()
	}
}

// Done returns a channel closed when the Pending has completed.
func (p *Pending) Done() <-chan struct{} { return p.done }

func (p *Pending) complete(pos Pos, err error) {
	if err != nil {
		pos = Pos{}
	}
	p.pos, p.err = pos, err
	p.head, p.data = nil, nil
	close(p.done)
}

func failedPending(err error) *Pending {
	p := &Pending{done: make(chan struct{})}
	p.complete(Pos{}, err)
	return p
}

type partKey struct {
	topic     string
	partition int32
}

// partState is the in-memory index of one partition.
type partState struct {
	key          partKey
	entries      []IndexEntry // ascending offsets
	end          int64        // EndOffset of the last indexed entry
	committed    int64
	hasCommitted bool
	forgot       Pos // frames before this position are ignored
}

// segment is a segment file known to the index side.
type segment struct {
	seq    uint64
	path   string
	rf     *os.File // read handle, refcounted
	refs   atomic.Int32
	size   int64
	sealed bool
	parts  map[partKey]int64 // max EndOffset of live frames per partition
}

func (s *segment) release() {
	if s.refs.Add(-1) == 0 {
		_ = s.rf.Close()
	}
}

// segWriter is the writer's handle on a segment.
type segWriter struct {
	seq  uint64
	f    *os.File
	size int64
}

type group struct {
	items []*Pending
	files []*os.File   // to fdatasync, in order
	seal  []*segWriter // rolled away from: close and mark sealed after sync
}

// WAL is a group-committed write-ahead log. All methods are safe for
// concurrent use.
type WAL struct {
	opts   Options
	log    *slog.Logger
	segDir string
	db     *bbolt.DB

	// Append side, guarded by qmu.
	qmu     sync.Mutex
	qcond   *sync.Cond
	queue   []*Pending
	nextSeg uint64
	nextOff int64
	closing bool
	failErr error

	syncCh     chan *group
	syncerDone chan struct{}
	indexStop  chan struct{}
	indexDone  chan struct{}
	active     *segWriter // owned by the writer goroutine
	iovs       [][]byte   // writer scratch

	// Index side. Lock order: dbMu, then mu.
	dbMu       sync.Mutex
	mu         sync.RWMutex
	parts      map[partKey]*partState
	segs       map[uint64]*segment
	pendingIdx []IndexEntry // indexed in memory, not yet in bbolt
	// superseded are the positions of entries addLive dropped for a newer
	// frame of their offsets, and deletedSegs the segments collectGarbage
	// deleted: the next persistIndex deletes their entries from bbolt.
	superseded    []Pos
	deletedSegs   []uint64
	ckpt          Pos // every frame before it is indexed in memory
	persistedCkpt Pos
	uncommitted   int64
	skipPersist   atomic.Bool

	syncFile func(*os.File) error

	closed    atomic.Bool
	closeOnce sync.Once
	closeErr  error

	appends, groups, fsyncs, lastFsync atomic.Int64
	truncated, quarantined             atomic.Int64
	// unclean is set by Open when the previous run did not Close the WAL.
	unclean bool
}

// Open opens (creating if needed) the WAL in opts.Dir and recovers it: an
// index in the earlier per-partition layout is migrated (one transaction,
// logged at Info), the index is loaded, segments are scanned from the index
// checkpoint, torn tails are truncated and corrupt sealed segments
// quarantined, and the result is persisted. When Open returns, Entries and Partitions reflect exactly the
// surviving frames above the committed and forgotten marks, and new appends go
// to a fresh segment.
func Open(opts Options) (*WAL, error) {
	if opts.Dir == "" {
		return nil, errors.New("wal: Options.Dir is required")
	}
	if opts.SegmentBytes <= 0 {
		opts.SegmentBytes = defaultSegmentBytes
	}
	if opts.IndexInterval <= 0 {
		opts.IndexInterval = defaultIndexInterval
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	w := &WAL{
		opts:       opts,
		log:        opts.Logger.With("component", "wal"),
		segDir:     filepath.Join(opts.Dir, "segments"),
		parts:      make(map[partKey]*partState),
		segs:       make(map[uint64]*segment),
		syncCh:     make(chan *group),
		syncerDone: make(chan struct{}),
		indexStop:  make(chan struct{}),
		indexDone:  make(chan struct{}),
	}
	w.qcond = sync.NewCond(&w.qmu)
	w.syncFile = fdatasync
	if opts.testSyncFile != nil {
		w.syncFile = opts.testSyncFile
	}
	w.skipPersist.Store(opts.testSkipIndexPersist)
	if err := os.MkdirAll(w.segDir, 0o755); err != nil {
		return nil, fmt.Errorf("wal: create %s: %w", w.segDir, err)
	}
	db, err := bbolt.Open(filepath.Join(opts.Dir, "index.db"), 0o644, &bbolt.Options{Timeout: 2 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("wal: open index %s: %w", filepath.Join(opts.Dir, "index.db"), err)
	}
	w.db = db
	if err := migrateIndex(db, w.log); err != nil {
		_ = db.Close()
		return nil, err
	}
	// The marker exists from Open to a clean Close: finding it means the
	// last run stopped without closing (a crash), which the recovery metric
	// reports even when the index was fully persisted before the crash.
	marker := filepath.Join(opts.Dir, openMarker)
	_, statErr := os.Stat(marker)
	w.unclean = statErr == nil
	if err := w.recover(); err != nil {
		w.releaseAll()
		_ = db.Close()
		return nil, err
	}
	if err := os.WriteFile(marker, nil, 0o644); err != nil {
		w.log.Warn("create WAL open marker; the next start cannot tell a crash from a clean stop", "path", marker, "err", err)
	}
	go w.writerLoop()
	go w.syncerLoop()
	go w.indexerLoop()
	return w, nil
}

// Append enqueues e and returns at once (it never blocks on I/O). Frames of
// successive Append calls are written in call order. e.Data is not copied: do
// not modify it until the Pending completes. The returned Pending always
// completes, with the frame's position once fsynced or with an error.
func (w *WAL) Append(e Entry) *Pending {
	return w.AppendAll([]Entry{e})[0]
}

// AppendAll is Append for many entries at once: they are enqueued together,
// in order, so the writer takes them in one group (one fsync), which a loop
// of Append calls does not guarantee (the writer may take the first before
// the rest are queued). It returns one Pending per entry.
func (w *WAL) AppendAll(entries []Entry) []*Pending {
	out := make([]*Pending, len(entries))
	sizes := make([]int64, len(entries))
	for i, e := range entries {
		if e.EndOffset <= e.BaseOffset {
			out[i] = failedPending(fmt.Errorf("%w: end offset %d <= base offset %d", ErrInvalidEntry, e.EndOffset, e.BaseOffset))
			continue
		}
		sizes[i] = int64(frameOverhead(e.Topic)) + int64(len(e.Data))
		if sizes[i]-frameHeaderLen > maxPayloadLen {
			out[i] = failedPending(fmt.Errorf("%w: frame of %d bytes exceeds the maximum", ErrInvalidEntry, sizes[i]))
			continue
		}
		p := &Pending{
			done:      make(chan struct{}),
			data:      e.Data,
			topic:     e.Topic,
			partition: e.Partition,
			base:      e.BaseOffset,
			end:       e.EndOffset,
			maxTs:     e.MaxTimestampMs,
		}
		// CRC the data here, in the caller's goroutine, so it runs in parallel.
		p.head = appendFrameHead(make([]byte, 0, frameOverhead(e.Topic)), e.Topic, e.Partition, e.BaseOffset, e.EndOffset, e.MaxTimestampMs, e.Data)
		out[i] = p
	}

	w.qmu.Lock()
	if w.failErr != nil || w.closing {
		err := w.failErr
		if err == nil {
			err = ErrClosed
		}
		w.qmu.Unlock()
		for i := range out {
			if sizes[i] > 0 {
				out[i] = failedPending(err)
			}
		}
		return out
	}
	queued := 0
	for i, p := range out {
		size := sizes[i]
		if size == 0 {
			continue // invalid, failed above
		}
		if w.nextOff > 0 && w.nextOff+size > w.opts.SegmentBytes {
			w.nextSeg++
			w.nextOff = 0
		}
		p.pos = Pos{Segment: w.nextSeg, Offset: w.nextOff, Length: int32(size)}
		w.nextOff += size
		w.queue = append(w.queue, p)
		queued++
	}
	w.qmu.Unlock()
	w.qcond.Signal()
	w.appends.Add(int64(queued))
	appendsTotal.Add(queued)
	return out
}

// fail marks the WAL dead with err (first error wins).
func (w *WAL) fail(err error) {
	w.qmu.Lock()
	if w.failErr == nil {
		w.failErr = fmt.Errorf("%w: %w", ErrFailed, err)
		w.log.Error("WAL failed; all further appends will fail until it is reopened", "err", err)
	}
	w.qmu.Unlock()
}

func (w *WAL) deadErr() error {
	w.qmu.Lock()
	defer w.qmu.Unlock()
	return w.failErr
}

// writerLoop takes everything queued, writes it with pwritev, and hands the
// group to the syncer. While the syncer fsyncs group N, the writer writes N+1.
func (w *WAL) writerLoop() {
	defer close(w.syncCh)
	for {
		w.qmu.Lock()
		for len(w.queue) == 0 && !w.closing {
			w.qcond.Wait()
		}
		batch := w.queue
		w.queue = nil
		dead := w.failErr
		w.qmu.Unlock()
		if len(batch) == 0 {
			return // closing and drained
		}
		if dead != nil {
			for _, p := range batch {
				p.complete(Pos{}, dead)
			}
			continue
		}
		g, err := w.writeGroup(batch)
		if err != nil {
			w.fail(err)
			dead = w.deadErr()
			for _, s := range g.seal {
				_ = s.f.Close()
			}
			for _, p := range batch {
				p.complete(Pos{}, dead)
			}
			continue
		}
		w.syncCh <- g
	}
}

func (w *WAL) writeGroup(batch []*Pending) (*group, error) {
	g := &group{items: batch}
	iovs := w.iovs[:0]
	var runStart int64
	flush := func() error {
		if len(iovs) == 0 {
			return nil
		}
		err := pwritevAll(w.active.f, iovs, runStart)
		clear(iovs)
		iovs = iovs[:0]
		return err
	}
	for _, p := range batch {
		if p.pos.Segment != w.active.seq {
			if err := flush(); err != nil {
				return g, err
			}
			if p.pos.Segment != w.active.seq+1 || p.pos.Offset != 0 {
				return g, fmt.Errorf("internal error: frame at %d/%d after segment %d", p.pos.Segment, p.pos.Offset, w.active.seq)
			}
			nw, err := w.createSegment(p.pos.Segment)
			if err != nil {
				return g, err
			}
			g.files = append(g.files, w.active.f)
			g.seal = append(g.seal, w.active)
			w.active = nw
		}
		if p.pos.Offset != w.active.size {
			return g, fmt.Errorf("internal error: frame at %d/%d but segment size is %d", p.pos.Segment, p.pos.Offset, w.active.size)
		}
		if len(iovs) == 0 {
			runStart = p.pos.Offset
		}
		iovs = append(iovs, p.head, p.data)
		w.active.size += int64(p.pos.Length)
	}
	err := flush()
	w.iovs = iovs
	g.files = append(g.files, w.active.f)
	return g, err
}

// syncerLoop fdatasyncs each written group, indexes it in memory, and wakes
// its waiters.
func (w *WAL) syncerLoop() {
	defer close(w.syncerDone)
	for g := range w.syncCh {
		err := w.deadErr()
		if err == nil && !w.opts.NoSync {
			start := time.Now()
			for _, f := range g.files {
				if e := w.syncFile(f); e != nil {
					w.fail(fmt.Errorf("fdatasync %s: %w", f.Name(), e))
					err = w.deadErr()
					break
				}
				w.fsyncs.Add(1)
				fsyncsTotal.Inc()
			}
			w.lastFsync.Store(int64(time.Since(start)))
			fsyncDuration.UpdateDuration(start)
		}
		w.groups.Add(1)
		if err == nil {
			w.indexGroup(g)
		}
		for _, s := range g.seal {
			_ = s.f.Close()
		}
		for _, p := range g.items {
			p.complete(p.pos, err)
		}
	}
}

// indexGroup adds a durable group to the in-memory index.
func (w *WAL) indexGroup(g *group) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, p := range g.items {
		ie := IndexEntry{Topic: p.topic, Partition: p.partition, BaseOffset: p.base, EndOffset: p.end, MaxTimestampMs: p.maxTs, Pos: p.pos}
		if s := w.segs[p.pos.Segment]; s != nil && s.size < p.pos.end().Offset {
			s.size = p.pos.end().Offset
		}
		if w.addLive(ie) {
			w.pendingIdx = append(w.pendingIdx, ie)
		}
	}
	w.ckpt = g.items[len(g.items)-1].pos.end()
	for _, s := range g.seal {
		if seg := w.segs[s.seq]; seg != nil {
			seg.sealed = true
		}
	}
}

// addLive adds a frame to the in-memory index unless it is forgotten or
// committed. Caller holds mu. It reports whether the entry was added.
func (w *WAL) addLive(ie IndexEntry) bool {
	k := partKey{ie.Topic, ie.Partition}
	ps := w.part(k)
	if ie.Pos.less(ps.forgot) {
		return false
	}
	ie.Topic = ps.key.topic // share one string per partition
	// A frame whose base offset is below the partition's end supersedes the
	// entries it overlaps (the newest write of an offset wins), even when it
	// is committed itself: recovery replays it after its committed mark is
	// known, and it must drop what it dropped when it was first indexed.
	for n := len(ps.entries); n > 0 && ps.entries[n-1].EndOffset > ie.BaseOffset; n-- {
		w.uncommitted -= int64(ps.entries[n-1].Pos.Length)
		w.superseded = append(w.superseded, ps.entries[n-1].Pos)
		ps.entries = ps.entries[:n-1]
	}
	if ps.hasCommitted && ie.EndOffset <= ps.committed {
		if ps.end > ie.BaseOffset {
			ps.end = ie.EndOffset // what it superseded no longer counts
		}
		return false
	}
	ps.entries = append(ps.entries, ie)
	ps.end = ie.EndOffset
	w.uncommitted += int64(ie.Pos.Length)
	if s := w.segs[ie.Pos.Segment]; s != nil {
		if s.parts == nil {
			s.parts = make(map[partKey]int64)
		}
		if cur, ok := s.parts[k]; !ok || ie.EndOffset > cur {
			s.parts[k] = ie.EndOffset
		}
	}
	return true
}

func (w *WAL) part(k partKey) *partState {
	ps := w.parts[k]
	if ps == nil {
		ps = &partState{key: k}
		w.parts[k] = ps
	}
	return ps
}

// dropCommitted removes entries with EndOffset <= ps.committed. Caller holds mu.
func (w *WAL) dropCommitted(ps *partState) {
	i := 0
	for i < len(ps.entries) && ps.entries[i].EndOffset <= ps.committed {
		w.uncommitted -= int64(ps.entries[i].Pos.Length)
		i++
	}
	if i > 0 {
		clear(ps.entries[:i])
		ps.entries = ps.entries[i:]
	}
}

// Read returns the data of the frame at pos (a position from Wait or Entries),
// read from disk and CRC-verified. It returns an error wrapping ErrCorrupt if
// the bytes at pos are not a valid frame of exactly pos.Length bytes, and
// ErrSegmentNotFound if the segment was deleted or quarantined. The returned
// slice is owned by the caller.
func (w *WAL) Read(pos Pos) ([]byte, error) {
	var buf []byte
	return w.ReadInto(&buf, pos)
}

// ReadInto is Read into *buf, which it grows (and keeps grown) when it is
// shorter than the frame, so that a loop reading many frames allocates
// once. The returned bytes alias *buf: they are valid until the next use of
// *buf.
func (w *WAL) ReadInto(buf *[]byte, pos Pos) ([]byte, error) {
	if w.closed.Load() {
		return nil, ErrClosed
	}
	if pos.Length < frameHeaderLen || pos.Offset < 0 || int64(pos.Length)-frameHeaderLen > maxPayloadLen {
		return nil, fmt.Errorf("%w: invalid position %+v", ErrCorrupt, pos)
	}
	w.mu.RLock()
	s := w.segs[pos.Segment]
	if s != nil {
		s.refs.Add(1)
	}
	w.mu.RUnlock()
	if s == nil {
		return nil, fmt.Errorf("%w: %d", ErrSegmentNotFound, pos.Segment)
	}
	defer s.release()
	if cap(*buf) < int(pos.Length) {
		*buf = make([]byte, pos.Length)
	}
	frame := (*buf)[:pos.Length]
	if _, err := s.rf.ReadAt(frame, pos.Offset); err != nil {
		return nil, fmt.Errorf("%w: read %s at %d: %w", ErrCorrupt, s.path, pos.Offset, err)
	}
	f, n, err := decodeFrame(frame)
	if err != nil {
		if errors.Is(err, errShortFrame) {
			err = fmt.Errorf("%w: frame longer than position length", ErrCorrupt)
		}
		noteCorruption()
		return nil, fmt.Errorf("read %s at %d: %w", s.path, pos.Offset, err)
	}
	if n != len(frame) {
		noteCorruption()
		return nil, fmt.Errorf("%w: %s at %d: frame is %d bytes, position says %d", ErrCorrupt, s.path, pos.Offset, n, len(frame))
	}
	return f.Data, nil
}

// Entries returns, in offset order, the durable entries of the partition whose
// EndOffset > from, stopping once maxBytes of data are reached; it returns at
// least one entry if any qualifies, even if larger than maxBytes. Committed
// and forgotten entries are not returned. The slice is the caller's.
func (w *WAL) Entries(topic string, partition int32, from int64, maxBytes int) []IndexEntry {
	w.mu.RLock()
	defer w.mu.RUnlock()
	ps := w.parts[partKey{topic, partition}]
	if ps == nil {
		return nil
	}
	i := sort.Search(len(ps.entries), func(i int) bool { return ps.entries[i].EndOffset > from })
	overhead := frameOverhead(topic)
	var out []IndexEntry
	total := 0
	for ; i < len(ps.entries); i++ {
		sz := int(ps.entries[i].Pos.Length) - overhead
		if len(out) > 0 && total+sz > maxBytes {
			break
		}
		out = append(out, ps.entries[i])
		total += sz
	}
	return out
}

// Partitions returns, sorted by topic and partition, every partition with
// retained entries or a committed mark that has not been forgotten since.
func (w *WAL) Partitions() []PartitionState {
	w.mu.RLock()
	defer w.mu.RUnlock()
	var out []PartitionState
	for _, ps := range w.parts {
		if len(ps.entries) == 0 && !ps.hasCommitted {
			continue
		}
		st := PartitionState{Topic: ps.key.topic, Partition: ps.key.partition, EndOffset: ps.end, CommittedEnd: ps.committed}
		if st.CommittedEnd > st.EndOffset {
			st.EndOffset = st.CommittedEnd
		}
		st.FirstOffset = st.EndOffset
		if len(ps.entries) > 0 {
			st.FirstOffset = ps.entries[0].BaseOffset
		}
		out = append(out, st)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Topic != out[j].Topic {
			return out[i].Topic < out[j].Topic
		}
		return out[i].Partition < out[j].Partition
	})
	return out
}

// SetCommitted records that the partition's data below end is in the object
// store: its entries are dropped from memory, the mark is persisted in bbolt
// (fsynced) before anything is deleted, and then every sealed segment all of
// whose live frames are committed is deleted. Marks only move forward: an end
// below the current mark is ignored.
func (w *WAL) SetCommitted(topic string, partition int32, end int64) error {
	return w.SetCommittedMany([]CommittedMark{{Topic: topic, Partition: partition, End: end}})
}

// CommittedMark is one partition's committed end offset, for
// SetCommittedMany.
type CommittedMark struct {
	Topic     string
	Partition int32
	End       int64
}

// SetCommittedMany is SetCommitted for many partitions at once, with one
// index transaction (one fsync) for all of them: a flush commits the
// sections of every partition it carried, and one transaction per
// partition cost an fsync each (a thousand per flush at 1,000 partitions).
func (w *WAL) SetCommittedMany(marks []CommittedMark) error {
	w.dbMu.Lock()
	defer w.dbMu.Unlock()
	if w.closed.Load() {
		return ErrClosed
	}
	todo := marks[:0:0]
	w.mu.Lock()
	for _, m := range marks {
		ps := w.part(partKey{m.Topic, m.Partition})
		if ps.hasCommitted && m.End <= ps.committed {
			continue
		}
		ps.committed, ps.hasCommitted = m.End, true
		w.dropCommitted(ps)
		todo = append(todo, m)
	}
	w.mu.Unlock()
	if len(todo) == 0 {
		return nil
	}
	if err := w.db.Update(func(tx *bbolt.Tx) error {
		ix, err := openIndexTx(tx)
		if err != nil {
			return err
		}
		for _, m := range todo {
			if err := ix.putCommitted(partKey{m.Topic, m.Partition}, m.End); err != nil {
				return fmt.Errorf("%s/%d: %w", m.Topic, m.Partition, err)
			}
		}
		return nil
	}); err != nil {
		return fmt.Errorf("wal: persist committed marks: %w", err)
	}
	w.collectGarbage()
	return nil
}

// Forget records that the partition is no longer this agent's: every frame
// appended for it before the call is ignored from now on and on recovery
// (persisted as a WAL-position mark), its entries and committed mark are
// dropped, and sealed segments that held only forgotten or committed data are
// deleted. Appends made after Forget returns start the partition afresh.
func (w *WAL) Forget(topic string, partition int32) error {
	w.dbMu.Lock()
	defer w.dbMu.Unlock()
	if w.closed.Load() {
		return ErrClosed
	}
	k := partKey{topic, partition}
	w.qmu.Lock()
	mark := Pos{Segment: w.nextSeg, Offset: w.nextOff}
	w.qmu.Unlock()
	w.mu.Lock()
	ps := w.part(k)
	ps.forgot = mark
	ps.committed, ps.hasCommitted = 0, false
	for _, e := range ps.entries {
		w.uncommitted -= int64(e.Pos.Length)
	}
	ps.entries = nil
	ps.end = 0
	for _, s := range w.segs {
		delete(s.parts, k)
	}
	kept := w.pendingIdx[:0]
	for _, e := range w.pendingIdx {
		if e.Topic != topic || e.Partition != partition {
			kept = append(kept, e)
		}
	}
	w.pendingIdx = kept
	w.mu.Unlock()
	if err := w.db.Update(func(tx *bbolt.Tx) error {
		ix, err := openIndexTx(tx)
		if err != nil {
			return err
		}
		return ix.putForgot(k, mark)
	}); err != nil {
		return fmt.Errorf("wal: persist forgotten mark: %w", err)
	}
	w.collectGarbage()
	return nil
}

// collectGarbage deletes sealed segments whose live frames are all committed.
// Callers persist the marks that justify the deletion first.
func (w *WAL) collectGarbage() {
	var del []*segment
	w.mu.Lock()
	for seq, s := range w.segs {
		if !s.sealed {
			continue
		}
		ok := true
		for k, maxEnd := range s.parts {
			ps := w.parts[k]
			if ps == nil || !ps.hasCommitted || maxEnd > ps.committed {
				ok = false
				break
			}
		}
		if ok {
			delete(w.segs, seq)
			del = append(del, s)
			w.deletedSegs = append(w.deletedSegs, seq)
		}
	}
	w.mu.Unlock()
	for _, s := range del {
		if err := os.Remove(s.path); err != nil && !errors.Is(err, os.ErrNotExist) {
			w.log.Error("delete committed segment", "segment", s.path, "err", err)
		} else {
			w.log.Debug("deleted committed segment", "segment", s.path, "bytes", s.size)
		}
		s.release()
	}
	if len(del) > 0 && !w.opts.NoSync {
		if err := fsutil.SyncDir(w.segDir); err != nil {
			w.log.Warn("fsync segment directory", "err", err)
		}
	}
}

// Stats returns a snapshot of the WAL's counters.
func (w *WAL) Stats() Stats {
	st := Stats{
		Appends:             w.appends.Load(),
		Groups:              w.groups.Load(),
		Fsyncs:              w.fsyncs.Load(),
		LastFsyncDuration:   time.Duration(w.lastFsync.Load()),
		TruncatedBytes:      w.truncated.Load(),
		QuarantinedSegments: w.quarantined.Load(),
	}
	w.mu.RLock()
	st.Segments = len(w.segs)
	for _, s := range w.segs {
		st.RetainedBytes += s.size
	}
	st.UncommittedBytes = w.uncommitted
	w.mu.RUnlock()
	return st
}

// indexerLoop persists new index entries every IndexInterval.
func (w *WAL) indexerLoop() {
	defer close(w.indexDone)
	t := time.NewTicker(w.opts.IndexInterval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			if err := w.persistIndex(); err != nil {
				w.log.Warn("persist WAL index (will retry)", "err", err)
			}
		case <-w.indexStop:
			return
		}
	}
}

// persistIndex writes the entries indexed since the last call and the
// checkpoint in one bbolt transaction, and deletes the entries of frames
// superseded since and of deleted segments. The entries are appended at the
// right edge of their segment's bucket, so the transaction writes about as
// many pages as the entries fill, however many partitions they belong to.
func (w *WAL) persistIndex() error {
	if w.skipPersist.Load() {
		return nil
	}
	w.dbMu.Lock()
	defer w.dbMu.Unlock()
	w.mu.Lock()
	ents, superseded, deletedSegs := w.pendingIdx, w.superseded, w.deletedSegs
	w.pendingIdx, w.superseded, w.deletedSegs = nil, nil, nil
	ckpt := w.ckpt
	kept := ents[:0]
	for _, e := range ents {
		ps := w.parts[partKey{e.Topic, e.Partition}]
		if ps != nil && !e.Pos.less(ps.forgot) && (!ps.hasCommitted || e.EndOffset > ps.committed) {
			kept = append(kept, e)
		}
	}
	ents = kept
	w.mu.Unlock()
	if len(ents) == 0 && len(superseded) == 0 && len(deletedSegs) == 0 && ckpt == w.persistedCkpt {
		return nil
	}
	err := w.db.Update(func(tx *bbolt.Tx) error {
		ix, err := openIndexTx(tx)
		if err != nil {
			return err
		}
		for _, e := range ents {
			if err := ix.putEntry(e); err != nil {
				return fmt.Errorf("%s/%d at %d: %w", e.Topic, e.Partition, e.BaseOffset, err)
			}
		}
		// Deletions after the puts: a frame superseded by one appended in
		// the same interval is put above and must not survive it.
		for _, p := range superseded {
			if err := ix.deleteEntry(p); err != nil {
				return fmt.Errorf("delete superseded entry at %d/%d: %w", p.Segment, p.Offset, err)
			}
		}
		for _, seq := range deletedSegs {
			if err := ix.deleteSegment(seq); err != nil {
				return err
			}
		}
		return putCheckpoint(tx, ckpt)
	})
	if err != nil {
		w.mu.Lock()
		w.pendingIdx = append(ents, w.pendingIdx...)
		w.superseded = append(superseded, w.superseded...)
		w.deletedSegs = append(deletedSegs, w.deletedSegs...)
		w.mu.Unlock()
		return err
	}
	w.persistedCkpt = ckpt
	return nil
}

// Close stops accepting appends, waits for every queued append to complete
// (with success, or with an error if the WAL is dead), stops the writer,
// syncer and indexer, persists the index, and closes the segment files and
// bbolt. It is idempotent; later calls return the first call's result.
func (w *WAL) Close() error {
	w.closeOnce.Do(func() { w.closeErr = w.close() })
	return w.closeErr
}

func (w *WAL) close() error {
	w.qmu.Lock()
	w.closing = true
	w.qmu.Unlock()
	w.qcond.Broadcast()
	<-w.syncerDone
	close(w.indexStop)
	<-w.indexDone
	var errs []error
	if err := w.persistIndex(); err != nil {
		errs = append(errs, fmt.Errorf("wal: persist index: %w", err))
	}
	w.dbMu.Lock()
	w.closed.Store(true)
	w.dbMu.Unlock()
	if w.active != nil {
		if err := w.active.f.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	w.releaseAll()
	if err := w.db.Close(); err != nil {
		errs = append(errs, err)
	}
	if len(errs) == 0 && w.deadErr() == nil {
		if err := os.Remove(filepath.Join(w.opts.Dir, openMarker)); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("wal: remove open marker: %w", err))
		}
	}
	return errors.Join(errs...)
}

func (w *WAL) releaseAll() {
	w.mu.Lock()
	defer w.mu.Unlock()
	for seq, s := range w.segs {
		delete(w.segs, seq)
		s.release()
	}
}
