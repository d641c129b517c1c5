// Package groups is the consumer group coordinator's decision logic, in the
// spirit of Kafka's next-generation consumer group protocol (KIP-848). It is
// pure: it takes a group's replicated state (fsm.GroupMeta), a request, the
// topic metadata and the time, and returns the new state, the history
// events and the answer. It reads no clock and keeps no state, so it is
// tested without sleeps, and the controller leader applies its result
// through Raft with a compare-and-set on the group's version.
//
// # Protocol
//
// The group epoch grows when membership changes (join, leave, eviction) or
// the subscribed metadata changes (a subscribed topic's partition count, a
// topic created or deleted that a regex matches, a member's subscription,
// the group's assignor). Each bump recomputes the target assignment with the
// group's assignor (package assign).
//
// Members converge incrementally, each in its own heartbeat:
//
//  1. Partitions the member owns but that are not in its target are moved to
//     its revoking set: its answer no longer lists them, and the member must
//     commit and release them.
//  2. A heartbeat whose owned list lacks a revoking partition releases it.
//  3. Once nothing is left to revoke, the member epoch becomes the
//     assignment epoch, and the member is given every partition of its
//     target that no other member owns (assigned or revoking). A partition
//     still owned by another member stays pending until that member
//     released it, left or was evicted.
//
// So no partition is ever owned by two members; the history events record
// every change of ownership with the Raft index it happened at.
//
// A member epoch changes only in the member's own heartbeat, so a member
// that serialises its heartbeats and commits always knows its epoch; offset
// commits are accepted only at the member's current epoch (fsm.OffsetCommit).
//
// Static members (instance id) that leave with epoch -2 keep their
// partitions until their session timeout; a join with the same instance id
// takes the old member's place (epoch, partitions) without a group epoch bump.
package groups

import (
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strings"
	"time"

	v1 "github.com/streamhouse/streamhouse/api/gen/streamhouse/v1"
	"github.com/streamhouse/streamhouse/controller/fsm"
	"github.com/streamhouse/streamhouse/controller/groups/assign"
)

// Special member epochs of a heartbeat request.
const (
	// JoinEpoch joins the group.
	JoinEpoch int32 = 0
	// LeaveEpoch leaves the group: the member's partitions are released.
	LeaveEpoch int32 = -1
	// StaticLeaveEpoch leaves a static member temporarily: it keeps its
	// partitions until its session timeout.
	StaticLeaveEpoch int32 = -2
)

// Errors of Heartbeat. The controller maps them to Connect codes.
var (
	// ErrUnknownMember: a heartbeat (epoch > 0) from a member that is not in
	// the group; it must rejoin with epoch 0.
	ErrUnknownMember = errors.New("unknown member")
	// ErrFenced: a heartbeat with a member epoch that is neither the
	// member's current nor its previous one; it must rejoin.
	ErrFenced = errors.New("fenced member epoch")
	// ErrInvalid: a malformed request (bad group id, regex, assignor,
	// session timeout, missing subscription).
	ErrInvalid = errors.New("invalid request")
)

// Config bounds what members may ask for.
type Config struct {
	// HeartbeatInterval is what members are told to heartbeat at.
	HeartbeatInterval time.Duration
	// DefaultSessionTimeout applies when a member asks for none.
	DefaultSessionTimeout time.Duration
	// MinSessionTimeout and MaxSessionTimeout bound what a member may ask for.
	MinSessionTimeout, MaxSessionTimeout time.Duration
}

// Coordinator computes group changes. It is stateless and safe for
// concurrent use; the caller serialises read-compute-apply per group.
type Coordinator struct {
	cfg   Config
	newID func() string
}

// New returns a Coordinator; newID makes member ids for joins without one.
func New(cfg Config, newID func() string) *Coordinator {
	return &Coordinator{cfg: cfg, newID: newID}
}

// Request is one member heartbeat.
type Request struct {
	Group            string
	MemberID         string
	InstanceID       string
	MemberEpoch      int32
	Topics           []string
	Regex            string
	Assignor         string
	Owned            []fsm.PartitionRef
	SessionTimeoutMs int64
}

// Response is what the member is told.
type Response struct {
	MemberID    string
	MemberEpoch int32
	// Assignment is what the member may own now.
	Assignment []fsm.PartitionRef
	GroupEpoch int32
	// Pending counts target partitions still owned by another member.
	Pending int
}

// Result is a computed change of a group.
type Result struct {
	// Meta is the group's new state.
	Meta fsm.GroupMeta
	// Events are the history entries of the change.
	Events []fsm.GroupEvent
	// Changed reports whether Meta differs from the input: only then must
	// it go through Raft.
	Changed bool
	// Response is the heartbeat's answer (Heartbeat only).
	Response Response
	// Removed lists members that left or were evicted.
	Removed []string
}

// EpochEvent is the event type that counts as a rebalance.
const EpochEvent = int32(v1.AssignmentEventType_ASSIGNMENT_EVENT_TYPE_EPOCH)

var idRE = regexp.MustCompile(`^[a-zA-Z0-9._-]{1,249}$`)

// ValidateGroupID checks a group id: 1 to 249 characters of [a-zA-Z0-9._-].
func ValidateGroupID(id string) error {
	if !idRE.MatchString(id) {
		return fmt.Errorf("%w: group id %q must be 1 to 249 characters of [a-zA-Z0-9._-]", ErrInvalid, id)
	}
	return nil
}

// CompileRegex compiles a subscription regex; it must match whole topic names.
func CompileRegex(expr string) (*regexp.Regexp, error) {
	re, err := regexp.Compile(`^(?:` + expr + `)$`)
	if err != nil {
		return nil, fmt.Errorf("%w: topic regex %q: %v", ErrInvalid, expr, err)
	}
	return re, nil
}

// change is one computation in progress.
type change struct {
	meta   fsm.GroupMeta
	events []fsm.GroupEvent
	nowMs  int64
	topics map[string]int32
	bump   bool
	// resolved caches each member's subscribed existing topics.
	resolved map[string][]string
	removed  []string
}

func (c *change) event(t v1.AssignmentEventType, member string, parts []fsm.PartitionRef) {
	c.events = append(c.events, fsm.GroupEvent{TimeMs: c.nowMs, Type: int32(t), Member: member,
		Partitions: sortedRefs(parts), Epoch: c.meta.Epoch})
}

func newChange(meta fsm.GroupMeta, topics map[string]int32, nowMs int64) *change {
	m := meta.Clone()
	if m.Members == nil {
		m.Members = map[string]*fsm.GroupMember{}
	}
	return &change{meta: m, nowMs: nowMs, topics: topics, resolved: map[string][]string{}}
}

// Heartbeat handles one member heartbeat against the group's state (the
// zero GroupMeta for a group that does not exist yet).
func (co *Coordinator) Heartbeat(meta fsm.GroupMeta, req Request, topics map[string]int32, nowMs int64) (Result, error) {
	if err := ValidateGroupID(req.Group); err != nil {
		return Result{}, err
	}
	c := newChange(meta, topics, nowMs)
	switch req.MemberEpoch {
	case LeaveEpoch, StaticLeaveEpoch:
		return co.leave(c, meta, req)
	case JoinEpoch:
		if err := co.join(c, &req); err != nil {
			return Result{}, err
		}
	default:
		if req.MemberEpoch < 0 {
			return Result{}, fmt.Errorf("%w: member epoch %d: use 0 to join, -1 to leave, -2 for a static member's temporary leave", ErrInvalid, req.MemberEpoch)
		}
		m, ok := c.meta.Members[req.MemberID]
		if !ok {
			return Result{}, fmt.Errorf("%w: member %q is not in group %q (it left or was evicted after its session timeout); rejoin with member epoch 0", ErrUnknownMember, req.MemberID, req.Group)
		}
		if req.MemberEpoch != m.Epoch && (req.MemberEpoch != m.PrevEpoch || m.PrevEpoch == 0) {
			return Result{}, fmt.Errorf("%w: member %q of group %q sent epoch %d, its epoch is %d; drop your partitions and rejoin with member epoch 0", ErrFenced, req.MemberID, req.Group, req.MemberEpoch, m.Epoch)
		}
		if err := co.updateSubscription(c, m, req); err != nil {
			return Result{}, err
		}
	}
	m := c.meta.Members[req.MemberID]
	c.refresh()
	c.reconcileMember(m, req.Owned)
	c.checkStable()
	res := c.result(meta)
	res.Response = Response{MemberID: m.ID, MemberEpoch: m.Epoch, Assignment: sortedRefs(m.Assigned), GroupEpoch: c.meta.Epoch,
		Pending: len(m.Target) - countIn(m.Target, m.Assigned)}
	return res, nil
}

func countIn(a, b []fsm.PartitionRef) int {
	n := 0
	for _, p := range a {
		if slices.Contains(b, p) {
			n++
		}
	}
	return n
}

func (co *Coordinator) sessionTimeout(ms int64) (int64, error) {
	if ms == 0 {
		return co.cfg.DefaultSessionTimeout.Milliseconds(), nil
	}
	lo, hi := co.cfg.MinSessionTimeout.Milliseconds(), co.cfg.MaxSessionTimeout.Milliseconds()
	if ms < lo || ms > hi {
		return 0, fmt.Errorf("%w: session timeout %dms must be between %dms and %dms", ErrInvalid, ms, lo, hi)
	}
	return ms, nil
}

func validateSubscription(req Request) error {
	if len(req.Topics) == 0 && req.Regex == "" {
		return fmt.Errorf("%w: subscribe to topics or a topic regex", ErrInvalid)
	}
	if len(req.Topics) > 0 && req.Regex != "" {
		return fmt.Errorf("%w: subscribe to topics or a topic regex, not both", ErrInvalid)
	}
	if req.Regex != "" {
		if _, err := CompileRegex(req.Regex); err != nil {
			return err
		}
	}
	if req.Assignor != "" {
		if _, err := assign.Get(req.Assignor); err != nil {
			return fmt.Errorf("%w: %v", ErrInvalid, err)
		}
	}
	return nil
}

func (co *Coordinator) join(c *change, req *Request) error {
	if err := validateSubscription(*req); err != nil {
		return err
	}
	session, err := co.sessionTimeout(req.SessionTimeoutMs)
	if err != nil {
		return err
	}
	if req.MemberID == "" {
		req.MemberID = co.newID()
	}
	if m, ok := c.meta.Members[req.MemberID]; ok {
		// A retried join whose answer was lost: carry on as a heartbeat.
		m.SessionTimeoutMs = session
		return co.updateSubscription(c, m, *req)
	}
	topics := slices.Clone(req.Topics)
	sort.Strings(topics)
	m := &fsm.GroupMember{ID: req.MemberID, InstanceID: req.InstanceID, Topics: slices.Compact(topics), Regex: req.Regex,
		Assignor: req.Assignor, SessionTimeoutMs: session}
	if req.InstanceID != "" {
		for _, id := range c.meta.MemberIDs() {
			old := c.meta.Members[id]
			if old.InstanceID != req.InstanceID {
				continue
			}
			// The instance comes back (or replaces a process that never
			// left): it takes the old member's place, epoch and partitions.
			m.Epoch, m.PrevEpoch = old.Epoch, old.PrevEpoch
			m.Assigned, m.Revoking, m.Target = old.Assigned, old.Revoking, old.Target
			delete(c.meta.Members, id)
			c.meta.Members[m.ID] = m
			c.events = append(c.events, fsm.GroupEvent{TimeMs: c.nowMs, Type: int32(v1.AssignmentEventType_ASSIGNMENT_EVENT_TYPE_STATIC_REJOINED),
				Member: m.ID, Previous: id, Partitions: sortedRefs(append(slices.Clone(old.Assigned), old.Revoking...)), Epoch: c.meta.Epoch})
			c.removed = append(c.removed, id)
			if !slices.Equal(old.Topics, m.Topics) || old.Regex != m.Regex || old.Assignor != m.Assignor {
				c.bump = true
			}
			return nil
		}
	}
	c.meta.Members[m.ID] = m
	c.event(v1.AssignmentEventType_ASSIGNMENT_EVENT_TYPE_JOINED, m.ID, nil)
	c.bump = true
	return nil
}

func (co *Coordinator) updateSubscription(c *change, m *fsm.GroupMember, req Request) error {
	m.LeftMs = 0
	if len(req.Topics) == 0 && req.Regex == "" && req.Assignor == "" {
		return nil // unchanged
	}
	if err := validateSubscription(req); err != nil {
		return err
	}
	topics := slices.Clone(req.Topics)
	sort.Strings(topics)
	topics = slices.Compact(topics)
	if !slices.Equal(topics, m.Topics) || req.Regex != m.Regex || req.Assignor != m.Assignor {
		m.Topics, m.Regex, m.Assignor = topics, req.Regex, req.Assignor
		c.bump = true
	}
	return nil
}

func (co *Coordinator) leave(c *change, orig fsm.GroupMeta, req Request) (Result, error) {
	m, ok := c.meta.Members[req.MemberID]
	if !ok {
		// Leaving twice (a retried leave) is fine.
		return Result{Meta: orig, Response: Response{MemberID: req.MemberID, MemberEpoch: req.MemberEpoch, GroupEpoch: orig.Epoch}}, nil
	}
	if req.MemberEpoch == StaticLeaveEpoch && m.InstanceID != "" {
		if m.LeftMs == 0 {
			m.LeftMs = c.nowMs
			c.event(v1.AssignmentEventType_ASSIGNMENT_EVENT_TYPE_STATIC_LEFT, m.ID, append(slices.Clone(m.Assigned), m.Revoking...))
		}
	} else {
		c.remove(m.ID, v1.AssignmentEventType_ASSIGNMENT_EVENT_TYPE_LEFT)
		c.refresh()
		c.checkStable()
	}
	res := c.result(orig)
	res.Response = Response{MemberID: req.MemberID, MemberEpoch: req.MemberEpoch, GroupEpoch: c.meta.Epoch}
	return res, nil
}

// remove deletes a member; what it owned is released.
func (c *change) remove(id string, why v1.AssignmentEventType) {
	m := c.meta.Members[id]
	delete(c.meta.Members, id)
	c.event(why, id, append(slices.Clone(m.Assigned), m.Revoking...))
	c.removed = append(c.removed, id)
	c.bump = true
}

// Expire evicts the listed members (their session timed out) and
// re-resolves the subscribed metadata.
func (co *Coordinator) Expire(meta fsm.GroupMeta, expired []string, topics map[string]int32, nowMs int64) Result {
	c := newChange(meta, topics, nowMs)
	for _, id := range expired {
		if _, ok := c.meta.Members[id]; ok {
			c.remove(id, v1.AssignmentEventType_ASSIGNMENT_EVENT_TYPE_EVICTED)
		}
	}
	c.refresh()
	c.checkStable()
	return c.result(meta)
}

func (c *change) result(orig fsm.GroupMeta) Result {
	normalize(&c.meta)
	o := orig.Clone()
	normalize(&o)
	return Result{Meta: c.meta, Events: c.events, Changed: !reflect.DeepEqual(o, c.meta) || len(c.events) > 0, Removed: c.removed}
}

// normalize makes equal states deeply equal (nil, not empty, slices and maps).
func normalize(m *fsm.GroupMeta) {
	if len(m.Members) == 0 {
		m.Members = nil
	}
	if len(m.Subscribed) == 0 {
		m.Subscribed = nil
	}
	for _, mem := range m.Members {
		for _, s := range []*[]fsm.PartitionRef{&mem.Assigned, &mem.Revoking, &mem.Target} {
			if len(*s) == 0 {
				*s = nil
			} else {
				*s = sortedRefs(*s)
			}
		}
		if len(mem.Topics) == 0 {
			mem.Topics = nil
		}
	}
}

func sortedRefs(in []fsm.PartitionRef) []fsm.PartitionRef {
	if len(in) == 0 {
		return nil
	}
	out := slices.Clone(in)
	slices.SortFunc(out, func(a, b fsm.PartitionRef) int {
		if c := strings.Compare(a.Topic, b.Topic); c != 0 {
			return c
		}
		return int(a.Partition) - int(b.Partition)
	})
	return slices.Compact(out)
}

// subscription returns the existing topics a member subscribes to, sorted.
func (c *change) subscription(m *fsm.GroupMember) []string {
	if t, ok := c.resolved[m.ID]; ok {
		return t
	}
	var out []string
	if m.Regex != "" {
		if re, err := CompileRegex(m.Regex); err == nil {
			for t := range c.topics {
				if re.MatchString(t) {
					out = append(out, t)
				}
			}
		}
	} else {
		for _, t := range m.Topics {
			if _, ok := c.topics[t]; ok {
				out = append(out, t)
			}
		}
	}
	sort.Strings(out)
	c.resolved[m.ID] = out
	return out
}

// groupAssignor is the assignor most members ask for (ties: by name).
func (c *change) groupAssignor() string {
	votes := map[string]int{}
	for _, m := range c.meta.Members {
		name := m.Assignor
		if name == "" {
			name = assign.Default
		}
		votes[name]++
	}
	best := c.meta.Assignor
	if best == "" {
		best = assign.Default
	}
	names := make([]string, 0, len(votes))
	for n := range votes {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if votes[n] > votes[best] {
			best = n
		}
	}
	return best
}

// refresh bumps the group epoch when the subscribed metadata or assignor
// changed, recomputes the target assignment after a bump, and moves
// partitions members must give up to their revoking sets.
func (c *change) refresh() {
	sub := map[string]int32{}
	for _, m := range c.meta.Members {
		for _, t := range c.subscription(m) {
			sub[t] = c.topics[t]
		}
	}
	if len(sub) == 0 {
		sub = nil
	}
	old := c.meta.Subscribed
	if len(old) == 0 {
		old = nil
	}
	if !reflect.DeepEqual(sub, old) {
		c.bump = true
		c.meta.Subscribed = sub
	}
	if a := c.groupAssignor(); a != c.meta.Assignor {
		c.meta.Assignor = a
		c.bump = true
	}
	if c.bump {
		c.meta.Epoch++
		c.bump = false
	}
	if c.meta.AssignmentEpoch == c.meta.Epoch {
		return
	}
	a, err := assign.Get(c.meta.Assignor)
	if err != nil {
		a, _ = assign.Get(assign.Default)
	}
	var members []assign.Member
	for _, id := range c.meta.MemberIDs() {
		m := c.meta.Members[id]
		cur := m.Target
		if cur == nil {
			cur = m.Assigned
		}
		members = append(members, assign.Member{ID: id, Topics: c.subscription(m), Current: toAssign(cur)})
	}
	target := a.Assign(members, c.meta.Subscribed)
	c.meta.AssignmentEpoch = c.meta.Epoch
	c.event(v1.AssignmentEventType_ASSIGNMENT_EVENT_TYPE_EPOCH, "", nil)
	for _, id := range c.meta.MemberIDs() {
		m := c.meta.Members[id]
		m.Target = fromAssign(target[id])
		var keep, revoke []fsm.PartitionRef
		for _, p := range m.Assigned {
			if slices.Contains(m.Target, p) {
				keep = append(keep, p)
			} else {
				revoke = append(revoke, p)
			}
		}
		if len(revoke) > 0 {
			m.Assigned = keep
			m.Revoking = sortedRefs(append(m.Revoking, revoke...))
			c.event(v1.AssignmentEventType_ASSIGNMENT_EVENT_TYPE_REVOKING, id, revoke)
		}
	}
}

func toAssign(in []fsm.PartitionRef) []assign.TopicPartition {
	out := make([]assign.TopicPartition, len(in))
	for i, p := range in {
		out[i] = assign.TopicPartition{Topic: p.Topic, Partition: p.Partition}
	}
	return out
}

func fromAssign(in []assign.TopicPartition) []fsm.PartitionRef {
	out := make([]fsm.PartitionRef, len(in))
	for i, p := range in {
		out[i] = fsm.PartitionRef{Topic: p.Topic, Partition: p.Partition}
	}
	return sortedRefs(out)
}

// reconcileMember applies the member's owned report and moves it toward
// its target: releases, epoch, grants.
func (c *change) reconcileMember(m *fsm.GroupMember, owned []fsm.PartitionRef) {
	var still, released []fsm.PartitionRef
	for _, p := range m.Revoking {
		if slices.Contains(owned, p) {
			still = append(still, p)
		} else {
			released = append(released, p)
		}
	}
	if len(released) > 0 {
		m.Revoking = still
		c.event(v1.AssignmentEventType_ASSIGNMENT_EVENT_TYPE_RELEASED, m.ID, released)
	}
	if len(m.Revoking) > 0 {
		return
	}
	if m.Epoch != c.meta.AssignmentEpoch {
		m.PrevEpoch, m.Epoch = m.Epoch, c.meta.AssignmentEpoch
	}
	owner := map[fsm.PartitionRef]string{}
	for id, o := range c.meta.Members {
		for _, p := range o.Assigned {
			owner[p] = id
		}
		for _, p := range o.Revoking {
			owner[p] = id
		}
	}
	var grant []fsm.PartitionRef
	for _, p := range m.Target {
		if _, taken := owner[p]; !taken {
			grant = append(grant, p)
		}
	}
	if len(grant) > 0 {
		m.Assigned = sortedRefs(append(m.Assigned, grant...))
		c.event(v1.AssignmentEventType_ASSIGNMENT_EVENT_TYPE_ASSIGNED, m.ID, grant)
	}
}

// checkStable records when every member owns exactly its target.
func (c *change) checkStable() {
	stable := true
	for _, m := range c.meta.Members {
		if len(m.Revoking) > 0 || m.Epoch != c.meta.AssignmentEpoch || !slices.Equal(sortedRefs(m.Assigned), sortedRefs(m.Target)) {
			stable = false
			break
		}
	}
	if stable && !c.meta.Stable && len(c.meta.Members) > 0 {
		c.event(v1.AssignmentEventType_ASSIGNMENT_EVENT_TYPE_STABLE, "", nil)
	}
	c.meta.Stable = stable && len(c.meta.Members) > 0
}

// State summarises a group for listings.
func State(meta fsm.GroupMeta) v1.GroupState {
	switch {
	case len(meta.Members) == 0:
		return v1.GroupState_GROUP_STATE_EMPTY
	case meta.Stable:
		return v1.GroupState_GROUP_STATE_STABLE
	default:
		return v1.GroupState_GROUP_STATE_RECONCILING
	}
}
