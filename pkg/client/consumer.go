package client

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"

	streamhousev1 "github.com/streamhouse/streamhouse/api/gen/streamhouse/v1"
	"github.com/streamhouse/streamhouse/pkg/batch"
)

// Group consumer defaults.
const (
	DefaultAutoCommitInterval = 5 * time.Second
	DefaultMaxPollRecords     = 500
)

// Auto offset reset policies: where a newly assigned partition without a
// committed offset starts.
const (
	OffsetResetEarliest = "earliest"
	OffsetResetLatest   = "latest"
)

// ErrFenced reports that the coordinator no longer counts this consumer as
// the owner of its partitions: it left, was evicted after its session
// timeout, or its member epoch is stale. Its uncommitted progress is lost
// (another member re-reads those records); the consumer has dropped its
// partitions and rejoins the group by itself.
var ErrFenced = errors.New("client: group member fenced: rejoining the group")

// groupFencedHeader marks a FailedPrecondition that fences a member.
const groupFencedHeader = "Streamhouse-Group-Fenced"

// TopicPartition names one partition of a topic.
type TopicPartition struct {
	Topic     string
	Partition int32
}

func (tp TopicPartition) String() string { return fmt.Sprintf("%s/%d", tp.Topic, tp.Partition) }

// ConsumerRecord is one record a GroupConsumer returns, with where it came from.
type ConsumerRecord struct {
	Topic     string
	Partition int32
	batch.Record
}

// GroupConsumerConfig configures a GroupConsumer. Group and one of Topics or
// TopicRegex are required.
type GroupConsumerConfig struct {
	// Group is the consumer group id.
	Group string
	// Topics subscribes to topics by name.
	Topics []string
	// TopicRegex subscribes by RE2 regular expression over whole topic
	// names; topics created later that match are assigned within a
	// heartbeat interval or so.
	TopicRegex string
	// Assignor is the server-side assignor to ask for: range, roundrobin or
	// uniform (sticky); empty for the server's default (uniform).
	Assignor string
	// InstanceID makes the member static: Close leaves with epoch -2, and a
	// consumer started again with the same InstanceID within the session
	// timeout takes its partitions back without a rebalance.
	InstanceID string
	// SessionTimeout is how long the coordinator waits for a silent member
	// before it evicts it; 0 for the controller's default.
	SessionTimeout time.Duration
	// ManualCommit turns auto-commit off: the application calls Commit.
	// Either way, a partition's processed offsets (the records Poll
	// returned before) are committed before it is released in auto-commit
	// mode; in manual mode commit in OnRevoked.
	ManualCommit bool
	// AutoCommitInterval is how often Poll commits the offsets of records
	// returned by earlier Polls. Default 5s.
	AutoCommitInterval time.Duration
	// AutoOffsetReset is where a partition without a committed offset
	// starts: OffsetResetLatest (the default, as Kafka) or OffsetResetEarliest.
	AutoOffsetReset string
	// MaxPollRecords caps the records one Poll returns. Default 500.
	MaxPollRecords int
	// OnAssigned is called from Poll when partitions are given to the
	// consumer, before their records are returned.
	OnAssigned func(ctx context.Context, partitions []TopicPartition)
	// OnRevoked is called from Poll (and Close) before partitions are
	// released; in auto-commit mode their offsets are committed just before.
	// In manual mode, call Commit here to keep processing exactly once.
	OnRevoked func(ctx context.Context, partitions []TopicPartition)
	// OnLost is called from Poll when the consumer was fenced and lost its
	// partitions: their uncommitted progress is redelivered to other
	// members (a Commit here is refused with ErrFenced). nil calls
	// OnRevoked instead. The consumer rejoins after it returns.
	OnLost func(ctx context.Context, partitions []TopicPartition, err error)
	// Logger receives the consumer's state changes; nil discards.
	Logger *slog.Logger
	// ReaderOptions tune the fetches: the consumer reads all its partitions
	// with one MultiReader (one FetchPartitions request per round for all
	// of them), so MaxBytes limits each partition, FetchMaxBytes and
	// FetchMinBytes each request, and MaxWait its long-poll.
	ReaderOptions []ReaderOption
}

// GroupConsumer consumes the partitions a consumer group's coordinator
// assigns to it. It heartbeats in the background; Poll applies assignment
// changes, fetches from the owned partitions and returns records.
//
// Poll, Commit and Close must be called from one goroutine (callbacks run
// in it too). Delivery is at least once: after a rebalance the new owner of
// a partition starts at the last committed offset.
type GroupConsumer struct {
	c   *Client
	cfg GroupConsumerConfig
	log *slog.Logger

	ctx    context.Context // lives until Close
	cancel context.CancelFunc
	wg     sync.WaitGroup

	fetched chan []fetchResult // one fetch round's results, for Poll
	wake    chan struct{}      // assignment changed, or lost
	hbNow   chan struct{}      // heartbeat at once (after a release)

	// rpcMu serialises heartbeats and commits, so a commit always carries
	// the member epoch of the latest heartbeat answer.
	rpcMu sync.Mutex

	mu         sync.Mutex
	memberID   string
	epoch      int32
	assignment map[TopicPartition]bool // may own now, per the coordinator
	owned      map[TopicPartition]*ownedPart
	lost       error // fenced: Poll drops everything, then the member rejoins
	rejoin     bool  // lost partitions dropped: join again
	fatal      error
	gen        uint64
	pending    []ConsumerRecord // fetched, not returned yet
	lastCommit time.Time
	closed     bool
	// fetchRound cancels the fetcher's current round (its long-poll): the
	// partitions to fetch changed. Set and called under mu.
	fetchRound context.CancelFunc
}

type ownedPart struct {
	pos       int64  // next offset to return
	committed int64  // last committed offset, -1 if none known
	gen       uint64 // 0 once stopped: the fetcher drops the partition
}

type fetchResult struct {
	tp   TopicPartition
	gen  uint64
	recs []batch.Record
	err  error
}

func newUUID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// NewGroupConsumer joins the group in the background and returns at once;
// the first Poll returns records once partitions are assigned.
func (c *Client) NewGroupConsumer(cfg GroupConsumerConfig) (*GroupConsumer, error) {
	switch {
	case cfg.Group == "":
		return nil, errors.New("client: group consumer: Group is required")
	case len(cfg.Topics) == 0 && cfg.TopicRegex == "":
		return nil, errors.New("client: group consumer: subscribe to Topics or a TopicRegex")
	case len(cfg.Topics) > 0 && cfg.TopicRegex != "":
		return nil, errors.New("client: group consumer: give Topics or TopicRegex, not both")
	case cfg.SessionTimeout < 0 || cfg.AutoCommitInterval < 0 || cfg.MaxPollRecords < 0:
		return nil, errors.New("client: group consumer: SessionTimeout, AutoCommitInterval and MaxPollRecords must not be negative")
	}
	if cfg.TopicRegex != "" {
		if _, err := regexp.Compile(cfg.TopicRegex); err != nil {
			return nil, fmt.Errorf("client: group consumer: TopicRegex: %w", err)
		}
	}
	switch cfg.AutoOffsetReset {
	case "":
		cfg.AutoOffsetReset = OffsetResetLatest
	case OffsetResetEarliest, OffsetResetLatest:
	default:
		return nil, fmt.Errorf("client: group consumer: AutoOffsetReset %q: use %q or %q", cfg.AutoOffsetReset, OffsetResetEarliest, OffsetResetLatest)
	}
	if cfg.AutoCommitInterval == 0 {
		cfg.AutoCommitInterval = DefaultAutoCommitInterval
	}
	if cfg.MaxPollRecords == 0 {
		cfg.MaxPollRecords = DefaultMaxPollRecords
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	gc := &GroupConsumer{
		c: c, cfg: cfg, log: log.With("group", cfg.Group), ctx: ctx, cancel: cancel,
		fetched: make(chan []fetchResult), wake: make(chan struct{}, 1), hbNow: make(chan struct{}, 1),
		memberID: newUUID(), assignment: map[TopicPartition]bool{}, owned: map[TopicPartition]*ownedPart{},
		lastCommit: time.Now(),
	}
	gc.wg.Add(2)
	go gc.heartbeatLoop()
	go gc.fetchLoop()
	return gc, nil
}

func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// MemberID returns the consumer's current member id.
func (gc *GroupConsumer) MemberID() string {
	gc.mu.Lock()
	defer gc.mu.Unlock()
	return gc.memberID
}

// Assignment returns the partitions the consumer owns now, sorted.
func (gc *GroupConsumer) Assignment() []TopicPartition {
	gc.mu.Lock()
	defer gc.mu.Unlock()
	return sortTPs(slices.Collect(maps.Keys(gc.owned)))
}

func sortTPs(tps []TopicPartition) []TopicPartition {
	slices.SortFunc(tps, func(a, b TopicPartition) int {
		if c := strings.Compare(a.Topic, b.Topic); c != 0 {
			return c
		}
		return int(a.Partition) - int(b.Partition)
	})
	return tps
}

func toProto(tps []TopicPartition) []*streamhousev1.TopicPartitions {
	var out []*streamhousev1.TopicPartitions
	for _, tp := range sortTPs(slices.Clone(tps)) {
		if len(out) == 0 || out[len(out)-1].Topic != tp.Topic {
			out = append(out, &streamhousev1.TopicPartitions{Topic: tp.Topic})
		}
		out[len(out)-1].Partitions = append(out[len(out)-1].Partitions, tp.Partition)
	}
	return out
}

// fencedError reports whether err means the member must rejoin.
func fencedError(err error) bool {
	ce, ok := errorsAsConnect(err)
	if !ok || !connect.IsWireError(err) {
		return false
	}
	return ce.Code() == connect.CodeNotFound || (ce.Code() == connect.CodeFailedPrecondition && ce.Meta().Get(groupFencedHeader) != "")
}

// permanentGroupError reports a heartbeat refusal that retrying cannot fix:
// a bad request or configuration, or a server without GroupService.
func permanentGroupError(err error) bool {
	ce, ok := errorsAsConnect(err)
	if !ok || !connect.IsWireError(err) {
		return false
	}
	switch ce.Code() {
	case connect.CodeInvalidArgument, connect.CodeUnimplemented, connect.CodePermissionDenied, connect.CodeUnauthenticated:
		return true
	}
	return false
}

// heartbeatLoop joins, heartbeats and rejoins until Close.
func (gc *GroupConsumer) heartbeatLoop() {
	defer gc.wg.Done()
	next := time.Duration(0)
	attempt := 0
	for {
		t := time.NewTimer(next)
		select {
		case <-gc.ctx.Done():
			t.Stop()
			return
		case <-t.C:
		case <-gc.hbNow:
			t.Stop()
		}
		gc.mu.Lock()
		waiting := gc.lost != nil // Poll has not dropped the lost partitions yet
		gc.mu.Unlock()
		if waiting {
			next = 50 * time.Millisecond
			continue
		}
		interval, err := gc.heartbeat()
		switch {
		case err == nil:
			attempt = 0
			next = interval
		case gc.ctx.Err() != nil:
			return
		case fencedError(err):
			gc.mu.Lock()
			gc.lost = fmt.Errorf("%w: %v", ErrFenced, err)
			gc.mu.Unlock()
			gc.log.Warn("group consumer fenced; dropping its partitions and rejoining", "err", err)
			signal(gc.wake)
			next = 0
		case permanentGroupError(err):
			gc.mu.Lock()
			gc.fatal = fmt.Errorf("client: group %q heartbeat: %w", gc.cfg.Group, err)
			gc.mu.Unlock()
			gc.log.Error("group heartbeat refused; the consumer stops", "err", err)
			signal(gc.wake)
			return
		default:
			// Anything else (no leader, a leader change, timeouts) passes:
			// a heartbeat may be sent again, and the session timeout
			// bounds how long this member may stay silent.
			next = (backoff{base: 100 * time.Millisecond, max: time.Second}).delay(attempt)
			attempt++
			level := slog.LevelDebug
			if attempt%10 == 0 {
				level = slog.LevelWarn
			}
			gc.log.Log(gc.ctx, level, "group heartbeat failed; retrying", "attempts", attempt, "err", err)
		}
	}
}

// heartbeat sends one heartbeat and applies the answer; it returns when to
// send the next.
func (gc *GroupConsumer) heartbeat() (time.Duration, error) {
	gc.rpcMu.Lock()
	defer gc.rpcMu.Unlock()
	gc.mu.Lock()
	if gc.rejoin {
		gc.memberID, gc.epoch, gc.rejoin = newUUID(), 0, false
		gc.assignment = map[TopicPartition]bool{}
	}
	// Owned is what Poll consumes plus everything the coordinator gave us
	// that Poll has not started yet: leaving a partition out tells the
	// coordinator it was released, and Poll may still start it (it checks
	// the assignment, which changes only with this heartbeat's answer).
	owned := maps.Clone(gc.assignment)
	for tp := range gc.owned {
		owned[tp] = true
	}
	req := &streamhousev1.GroupHeartbeatRequest{
		GroupId: gc.cfg.Group, MemberId: gc.memberID, InstanceId: gc.cfg.InstanceID, MemberEpoch: gc.epoch,
		Topics: gc.cfg.Topics, TopicRegex: gc.cfg.TopicRegex, Assignor: gc.cfg.Assignor,
		Owned: toProto(slices.Collect(maps.Keys(owned))), SessionTimeoutMs: int32(gc.cfg.SessionTimeout.Milliseconds()),
	}
	gc.mu.Unlock()
	ctx, cancel := context.WithTimeout(gc.ctx, 10*time.Second)
	resp, err := gc.c.groups.GroupHeartbeat(ctx, connect.NewRequest(req))
	cancel()
	if err != nil {
		return 0, err
	}
	m := resp.Msg
	assigned := map[TopicPartition]bool{}
	for _, tp := range m.GetAssignment() {
		for _, p := range tp.GetPartitions() {
			assigned[TopicPartition{tp.GetTopic(), p}] = true
		}
	}
	gc.mu.Lock()
	if req.MemberEpoch == 0 || gc.epoch != m.GetMemberEpoch() {
		gc.log.Info("group member epoch", "member", m.GetMemberId(), "member_epoch", m.GetMemberEpoch(), "group_epoch", m.GetGroupEpoch(),
			"assigned", len(assigned), "pending", m.GetPendingPartitions())
	}
	gc.memberID, gc.epoch = m.GetMemberId(), m.GetMemberEpoch()
	changed := !maps.Equal(assigned, gc.assignment)
	gc.assignment = assigned
	for tp := range gc.owned {
		changed = changed || !assigned[tp]
	}
	gc.mu.Unlock()
	if changed {
		signal(gc.wake)
	}
	interval := time.Duration(m.GetHeartbeatIntervalMs()) * time.Millisecond
	if interval <= 0 {
		interval = 3 * time.Second
	}
	if m.GetPendingPartitions() > 0 {
		interval = max(interval/4, 20*time.Millisecond) // partitions are on their way
	}
	return interval, nil
}

// Poll applies assignment changes (revoking and assigning partitions,
// running the callbacks), commits when auto-commit is due, and returns the
// next records of the owned partitions, waiting until there are some or ctx
// ends (then it returns ctx's error). Records of one partition come in
// offset order.
func (gc *GroupConsumer) Poll(ctx context.Context) ([]ConsumerRecord, error) {
	for {
		if err := gc.reconcile(ctx); err != nil {
			return nil, err
		}
		if !gc.cfg.ManualCommit && time.Since(gc.lastCommit) >= gc.cfg.AutoCommitInterval {
			if err := gc.Commit(ctx); err != nil && ctx.Err() == nil {
				gc.log.Warn("auto-commit failed", "err", err)
			}
		}
		if recs := gc.take(); len(recs) > 0 {
			return recs, nil
		}
		var autoCommit <-chan time.Time
		var timer *time.Timer
		if !gc.cfg.ManualCommit {
			timer = time.NewTimer(max(gc.cfg.AutoCommitInterval-time.Since(gc.lastCommit), 0))
			autoCommit = timer.C
		}
		select {
		case <-ctx.Done():
		case <-gc.wake:
		case <-autoCommit:
		case frs := <-gc.fetched:
			for _, fr := range frs {
				gc.accept(fr)
			}
		}
		if timer != nil {
			timer.Stop()
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
	}
}

// accept buffers a fetch result of a partition still owned.
func (gc *GroupConsumer) accept(fr fetchResult) {
	gc.mu.Lock()
	defer gc.mu.Unlock()
	ps, ok := gc.owned[fr.tp]
	if !ok || ps.gen != fr.gen {
		return // revoked meanwhile
	}
	if fr.err != nil {
		var te *TruncatedError
		if errors.As(fr.err, &te) {
			ps.pos = te.Offset
		}
		gc.log.Warn("fetch failed", "partition", fr.tp.String(), "err", fr.err)
		return
	}
	for _, r := range fr.recs {
		gc.pending = append(gc.pending, ConsumerRecord{Topic: fr.tp.Topic, Partition: fr.tp.Partition, Record: r})
	}
}

// take returns up to MaxPollRecords buffered records and advances the
// positions past them.
func (gc *GroupConsumer) take() []ConsumerRecord {
	gc.mu.Lock()
	defer gc.mu.Unlock()
	n := min(len(gc.pending), gc.cfg.MaxPollRecords)
	if n == 0 {
		return nil
	}
	out := slices.Clone(gc.pending[:n])
	gc.pending = slices.Delete(gc.pending, 0, n)
	for _, r := range out {
		if ps, ok := gc.owned[TopicPartition{r.Topic, r.Partition}]; ok && r.Offset >= ps.pos {
			ps.pos = r.Offset + 1
		}
	}
	return out
}

// dropPending removes buffered records of tps.
func (gc *GroupConsumer) dropPendingLocked(tps map[TopicPartition]bool) {
	gc.pending = slices.DeleteFunc(gc.pending, func(r ConsumerRecord) bool { return tps[TopicPartition{r.Topic, r.Partition}] })
}

// reconcile brings the owned partitions to the coordinator's assignment.
func (gc *GroupConsumer) reconcile(ctx context.Context) error {
	gc.mu.Lock()
	if gc.fatal != nil {
		err := gc.fatal
		gc.mu.Unlock()
		return err
	}
	if gc.closed {
		gc.mu.Unlock()
		return errors.New("client: group consumer is closed")
	}
	if lost := gc.lost; lost != nil {
		parts := gc.stopLocked(nil)
		gc.mu.Unlock()
		if len(parts) > 0 {
			// The callback runs before the partitions are forgotten: a
			// Commit in it is sent, and refused by the coordinator.
			gc.log.Warn("lost partitions without committing", "partitions", len(parts), "err", lost)
			if gc.cfg.OnLost != nil {
				gc.cfg.OnLost(ctx, parts, lost)
			} else if gc.cfg.OnRevoked != nil {
				gc.cfg.OnRevoked(ctx, parts)
			}
		}
		gc.mu.Lock()
		gc.owned = map[TopicPartition]*ownedPart{}
		gc.lost, gc.rejoin = nil, true
		gc.mu.Unlock()
		signal(gc.hbNow)
		return nil
	}
	revoke := map[TopicPartition]bool{}
	for tp := range gc.owned {
		if !gc.assignment[tp] {
			revoke[tp] = true
		}
	}
	var add []TopicPartition
	for tp := range gc.assignment {
		if _, ok := gc.owned[tp]; !ok {
			add = append(add, tp)
		}
	}
	var revoked []TopicPartition
	if len(revoke) > 0 {
		revoked = gc.stopLocked(revoke)
	}
	gc.mu.Unlock()

	if len(revoked) > 0 {
		if !gc.cfg.ManualCommit {
			if err := gc.commit(ctx, revoke); err != nil {
				gc.log.Warn("commit before releasing partitions failed", "err", err)
			}
		}
		if gc.cfg.OnRevoked != nil {
			gc.cfg.OnRevoked(ctx, revoked)
		}
		gc.mu.Lock()
		for tp := range revoke {
			delete(gc.owned, tp)
		}
		gc.mu.Unlock()
		gc.log.Info("released partitions", "partitions", len(revoked))
		signal(gc.hbNow) // tell the coordinator at once
	}
	if len(add) > 0 {
		return gc.start(ctx, sortTPs(add))
	}
	return nil
}

// stopLocked stops the fetchers of tps (nil: all) and drops their buffered
// records; it returns them sorted. They stay owned (and committable).
func (gc *GroupConsumer) stopLocked(tps map[TopicPartition]bool) []TopicPartition {
	var out []TopicPartition
	if tps == nil {
		tps = map[TopicPartition]bool{}
		for tp := range gc.owned {
			tps[tp] = true
		}
	}
	for tp := range tps {
		if ps, ok := gc.owned[tp]; ok {
			ps.gen = 0
			out = append(out, tp)
		}
	}
	gc.refetchLocked()
	gc.dropPendingLocked(tps)
	return sortTPs(out)
}

// start begins consuming newly assigned partitions at their committed
// offsets (or per AutoOffsetReset).
func (gc *GroupConsumer) start(ctx context.Context, add []TopicPartition) error {
	committed, err := gc.fetchOffsets(ctx, add)
	if err != nil {
		return err
	}
	starts := map[TopicPartition]int64{}
	for _, tp := range add {
		if off, ok := committed[tp]; ok {
			starts[tp] = off
			continue
		}
		desc, err := gc.describe(ctx, tp.Topic)
		if err != nil {
			return err
		}
		for _, pi := range desc.GetPartitions() {
			if pi.GetPartition() == tp.Partition {
				if gc.cfg.AutoOffsetReset == OffsetResetEarliest {
					starts[tp] = pi.GetStartOffset()
				} else {
					starts[tp] = pi.GetHighWatermark()
				}
			}
		}
		if _, ok := starts[tp]; !ok {
			return fmt.Errorf("client: topic %q has no partition %d", tp.Topic, tp.Partition)
		}
	}
	gc.mu.Lock()
	var started []TopicPartition
	for _, tp := range add {
		if !gc.assignment[tp] || gc.lost != nil {
			continue // revoked while we looked up offsets
		}
		gc.gen++
		c, ok := committed[tp]
		if !ok {
			c = -1
		}
		gc.owned[tp] = &ownedPart{pos: starts[tp], committed: c, gen: gc.gen}
		started = append(started, tp)
	}
	if len(started) > 0 {
		gc.refetchLocked()
	}
	gc.mu.Unlock()
	if len(started) > 0 {
		gc.log.Info("assigned partitions", "partitions", len(started))
		if gc.cfg.OnAssigned != nil {
			gc.cfg.OnAssigned(ctx, started)
		}
	}
	return nil
}

func (gc *GroupConsumer) describe(ctx context.Context, topic string) (*streamhousev1.DescribeTopicResponse, error) {
	for attempt := 0; ; attempt++ {
		desc, err := gc.c.describeTopic(ctx, topic)
		if err == nil || permanentGroupError(err) || fencedError(err) || ctx.Err() != nil {
			return desc, err
		}
		if err := sleepCtx(ctx, (backoff{base: 50 * time.Millisecond, max: time.Second}).delay(attempt)); err != nil {
			return nil, err
		}
	}
}

// fetchOffsets returns the committed offsets of tps, retrying transient errors.
func (gc *GroupConsumer) fetchOffsets(ctx context.Context, tps []TopicPartition) (map[TopicPartition]int64, error) {
	req := &streamhousev1.FetchOffsetsRequest{GroupId: gc.cfg.Group, Partitions: toProto(tps)}
	for attempt := 0; ; attempt++ {
		resp, err := gc.c.groups.FetchOffsets(ctx, connect.NewRequest(req))
		if err == nil {
			out := map[TopicPartition]int64{}
			for _, o := range resp.Msg.GetOffsets() {
				out[TopicPartition{o.GetTopic(), o.GetPartition()}] = o.GetOffset()
			}
			return out, nil
		}
		if permanentGroupError(err) || fencedError(err) || ctx.Err() != nil {
			return nil, fmt.Errorf("client: fetch offsets of group %q: %w", gc.cfg.Group, err)
		}
		if err := sleepCtx(ctx, (backoff{base: 50 * time.Millisecond, max: time.Second}).delay(attempt)); err != nil {
			return nil, err
		}
	}
}

// refetchLocked ends the fetcher's current round: the partitions to fetch
// changed. gc.mu is held.
func (gc *GroupConsumer) refetchLocked() {
	if gc.fetchRound != nil {
		gc.fetchRound()
	}
}

// fetchLoop reads every partition Poll consumes with one MultiReader, one
// FetchPartitions request per round for all of them, and hands each round's
// records and partition errors to Poll, until Close. Before each round it
// brings the reader to the owned partitions (a partition started anew, with
// a new generation, is read from its position); a change of them ends the
// round's long-poll early (refetchLocked). A round's results are always
// handed over, since the reader has moved past them; Poll drops those of
// partitions stopped meanwhile.
func (gc *GroupConsumer) fetchLoop() {
	defer gc.wg.Done()
	r := gc.c.NewMultiReader(nil, gc.cfg.ReaderOptions...)
	gens := map[TopicPartition]uint64{} // what r reads, by generation
	for attempt := 0; ; {
		gc.mu.Lock()
		for tp, gen := range gens {
			if ps, ok := gc.owned[tp]; !ok || ps.gen != gen {
				r.Remove(tp)
				delete(gens, tp)
			}
		}
		for tp, ps := range gc.owned {
			if ps.gen != 0 && gens[tp] != ps.gen {
				r.Add(tp, ps.pos)
				gens[tp] = ps.gen
			}
		}
		round, cancel := context.WithCancel(gc.ctx)
		gc.fetchRound = cancel
		gc.mu.Unlock()
		if len(gens) == 0 {
			<-round.Done() // until partitions are started, or Close
			cancel()
			if gc.ctx.Err() != nil {
				return
			}
			continue
		}
		got, err := r.Next(round)
		cut := round.Err() != nil // by refetchLocked (or Close)
		cancel()
		switch {
		case gc.ctx.Err() != nil:
			return
		case err != nil && cut:
			continue // the partitions changed mid-fetch (positions did not move): start over
		case err != nil:
			// The whole request failed in a way retrying did not fix: every
			// partition waits, with backoff.
			attempt++
			gc.log.Warn("fetch failed", "partitions", len(gens), "attempts", attempt, "err", err)
			if sleepCtx(gc.ctx, (backoff{base: 200 * time.Millisecond, max: 5 * time.Second}).delay(attempt)) != nil {
				return
			}
			continue
		}
		attempt = 0
		if len(got) == 0 {
			continue
		}
		results := make([]fetchResult, len(got))
		for i, fp := range got {
			tp := TopicPartition{fp.Topic, fp.Partition}
			results[i] = fetchResult{tp: tp, gen: gens[tp], recs: fp.Records, err: fp.Err}
		}
		select {
		case gc.fetched <- results:
		case <-gc.ctx.Done():
			return
		}
	}
}

// Commit commits the offsets of every owned partition past the records
// Poll has returned, retrying failures (a commit is idempotent) until ctx
// ends. An error
// wrapping ErrFenced means the coordinator rejected the commit: the consumer
// lost its partitions (the next Poll drops them and it rejoins).
func (gc *GroupConsumer) Commit(ctx context.Context) error {
	return gc.commit(ctx, nil)
}

func (gc *GroupConsumer) commit(ctx context.Context, only map[TopicPartition]bool) error {
	for attempt := 0; ; attempt++ {
		err := gc.commitOnce(ctx, only)
		if err == nil {
			return nil
		}
		if fencedError(err) {
			gc.mu.Lock()
			if gc.lost == nil {
				gc.lost = fmt.Errorf("%w: %v", ErrFenced, err)
			}
			gc.mu.Unlock()
			signal(gc.wake)
			return fmt.Errorf("%w: commit rejected: %v", ErrFenced, err)
		}
		// A commit may be sent again whatever became of the last one (it
		// stores the same offsets), so only refusals end the retries.
		if permanentGroupError(err) || ctx.Err() != nil {
			return fmt.Errorf("client: commit offsets of group %q: %w", gc.cfg.Group, err)
		}
		if err := sleepCtx(ctx, (backoff{base: 50 * time.Millisecond, max: time.Second}).delay(attempt)); err != nil {
			return fmt.Errorf("client: commit offsets of group %q: %w", gc.cfg.Group, err)
		}
	}
}

func (gc *GroupConsumer) commitOnce(ctx context.Context, only map[TopicPartition]bool) error {
	gc.rpcMu.Lock()
	defer gc.rpcMu.Unlock()
	gc.mu.Lock()
	gc.lastCommit = time.Now()
	req := &streamhousev1.CommitOffsetsRequest{GroupId: gc.cfg.Group, MemberId: gc.memberID, MemberEpoch: gc.epoch}
	sent := map[TopicPartition]int64{}
	// A fenced consumer sends even unchanged offsets, so the caller learns
	// from the coordinator that it no longer owns them.
	force := gc.lost != nil
	for tp, ps := range gc.owned {
		if (only != nil && !only[tp]) || ps.pos < 0 || (ps.pos == ps.committed && !force) {
			continue
		}
		req.Offsets = append(req.Offsets, &streamhousev1.PartitionOffset{Topic: tp.Topic, Partition: tp.Partition, Offset: ps.pos})
		sent[tp] = ps.pos
	}
	gc.mu.Unlock()
	if len(req.Offsets) == 0 {
		return nil
	}
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := gc.c.groups.CommitOffsets(rctx, connect.NewRequest(req)); err != nil {
		return err
	}
	gc.mu.Lock()
	for tp, off := range sent {
		if ps, ok := gc.owned[tp]; ok {
			ps.committed = off
		}
	}
	gc.mu.Unlock()
	return nil
}

// Close leaves the group gracefully: it stops fetching, commits (in
// auto-commit mode), calls OnRevoked, and sends the leave heartbeat (epoch
// -1, or -2 for a static member, which keeps its partitions for its session
// timeout). It waits for the background goroutines. Close is idempotent.
func (gc *GroupConsumer) Close(ctx context.Context) error {
	gc.mu.Lock()
	if gc.closed {
		gc.mu.Unlock()
		return nil
	}
	gc.closed = true
	parts := gc.stopLocked(nil)
	lost := gc.lost != nil
	gc.mu.Unlock()
	var errs []error
	if len(parts) > 0 && !lost {
		if !gc.cfg.ManualCommit {
			errs = append(errs, gc.commit(ctx, nil))
		}
		if gc.cfg.OnRevoked != nil {
			gc.cfg.OnRevoked(ctx, parts)
		}
	}
	gc.cancel() // stops the heartbeat loop and the fetcher
	gc.wg.Wait()
	if !lost {
		errs = append(errs, gc.leave(ctx))
	}
	return errors.Join(errs...)
}

// leave sends the leave heartbeat, retrying transient errors until ctx ends.
func (gc *GroupConsumer) leave(ctx context.Context) error {
	gc.mu.Lock()
	req := &streamhousev1.GroupHeartbeatRequest{GroupId: gc.cfg.Group, MemberId: gc.memberID, InstanceId: gc.cfg.InstanceID, MemberEpoch: -1}
	joined := gc.epoch > 0
	gc.mu.Unlock()
	if !joined {
		return nil
	}
	if gc.cfg.InstanceID != "" {
		req.MemberEpoch = -2
	}
	for attempt := 0; ; attempt++ {
		_, err := gc.c.groups.GroupHeartbeat(ctx, connect.NewRequest(req))
		if err == nil || fencedError(err) {
			gc.log.Info("left the group", "member", req.MemberId, "static", req.MemberEpoch == -2)
			return nil
		}
		if !transientReadError(err) || ctx.Err() != nil {
			return fmt.Errorf("client: leave group %q: %w", gc.cfg.Group, err)
		}
		if err := sleepCtx(ctx, (backoff{base: 50 * time.Millisecond, max: time.Second}).delay(attempt)); err != nil {
			return fmt.Errorf("client: leave group %q: %w", gc.cfg.Group, err)
		}
	}
}
