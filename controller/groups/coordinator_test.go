package groups

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	v1 "github.com/streamhouse/streamhouse/api/gen/streamhouse/v1"
	"github.com/streamhouse/streamhouse/controller/fsm"
)

// harness plays the leader (applying results as Raft would) and well
// behaved clients, and checks after every step that no partition is owned
// by two members: from the state, from the clients' view, and by replaying
// the history events.
type harness struct {
	t      *testing.T
	co     *Coordinator
	meta   fsm.GroupMeta
	topics map[string]int32
	now    int64
	events []fsm.GroupEvent
	// clients: member id -> what the client owns (it releases revoked
	// partitions at once unless slow says otherwise).
	owned  map[string][]fsm.PartitionRef
	epochs map[string]int32
	slow   map[string]bool
	ids    int
}

func newHarness(t *testing.T, topics map[string]int32) *harness {
	h := &harness{t: t, topics: topics, now: 1000, owned: map[string][]fsm.PartitionRef{}, epochs: map[string]int32{}, slow: map[string]bool{}}
	h.co = New(Config{HeartbeatInterval: time.Second, DefaultSessionTimeout: 10 * time.Second, MinSessionTimeout: 2 * time.Second, MaxSessionTimeout: time.Minute},
		func() string { h.ids++; return fmt.Sprintf("m%d", h.ids) })
	return h
}

func (h *harness) apply(res Result) {
	h.t.Helper()
	h.meta = res.Meta
	h.events = append(h.events, res.Events...)
	for _, id := range res.Removed {
		delete(h.owned, id) // a fenced client's partitions are no longer its to consume
		delete(h.epochs, id)
	}
	h.now += 10
	h.check()
}

// heartbeat sends req for member id with its client state.
func (h *harness) heartbeat(req Request) (Response, error) {
	h.t.Helper()
	req.Group = "g"
	if req.MemberEpoch == 0 && req.MemberID != "" {
		// a join by a client that picked its id
	} else if req.MemberEpoch > 0 || req.MemberEpoch == -1 || req.MemberEpoch == -2 {
		req.Owned = h.owned[req.MemberID]
	}
	res, err := h.co.Heartbeat(h.meta, req, h.topics, h.now)
	if err != nil {
		return Response{}, err
	}
	h.apply(res)
	r := res.Response
	switch req.MemberEpoch {
	case LeaveEpoch, StaticLeaveEpoch:
		delete(h.owned, req.MemberID)
		delete(h.epochs, req.MemberID)
		return r, nil
	}
	h.epochs[r.MemberID] = r.MemberEpoch
	if h.slow[r.MemberID] {
		// Keep revoked partitions until a later heartbeat; take new ones.
		h.owned[r.MemberID] = sortedRefs(append(slices.Clone(h.owned[r.MemberID]), r.Assignment...))
	} else {
		h.owned[r.MemberID] = r.Assignment
	}
	h.check()
	return r, nil
}

func (h *harness) join(topics ...string) Response {
	h.t.Helper()
	r, err := h.heartbeat(Request{Topics: topics})
	if err != nil {
		h.t.Fatalf("join: %v", err)
	}
	return r
}

func (h *harness) hb(id string) Response {
	h.t.Helper()
	r, err := h.heartbeat(Request{MemberID: id, MemberEpoch: h.epochs[id]})
	if err != nil {
		h.t.Fatalf("heartbeat %s: %v", id, err)
	}
	return r
}

// settle heartbeats every member until the group is stable.
func (h *harness) settle() {
	h.t.Helper()
	for range 20 {
		if h.meta.Stable {
			return
		}
		for _, id := range h.meta.MemberIDs() {
			if h.meta.Members[id].LeftMs == 0 {
				h.hb(id)
			}
		}
	}
	h.t.Fatalf("group did not become stable: %+v", h.meta)
}

func (h *harness) check() {
	h.t.Helper()
	owner := map[fsm.PartitionRef]string{}
	for id, m := range h.meta.Members {
		for _, p := range append(slices.Clone(m.Assigned), m.Revoking...) {
			if o, ok := owner[p]; ok {
				h.t.Fatalf("%v owned by %s and %s", p, o, id)
			}
			owner[p] = id
		}
	}
	for id, parts := range h.owned {
		m, ok := h.meta.Members[id]
		for _, p := range parts {
			if !ok || !m.Owns(p) {
				h.t.Fatalf("client %s consumes %v, which the coordinator does not count as its (%+v)", id, p, m)
			}
		}
	}
	replay := replayOwnership(h.t, h.events)
	if !mapsEqual(replay, owner) {
		h.t.Fatalf("history replay %v differs from the state %v", replay, owner)
	}
}

func mapsEqual(a, b map[fsm.PartitionRef]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// replayOwnership rebuilds partition ownership from history events, failing
// if a partition is ever given to a member while another owns it.
func replayOwnership(t *testing.T, events []fsm.GroupEvent) map[fsm.PartitionRef]string {
	t.Helper()
	owner := map[fsm.PartitionRef]string{}
	for i, e := range events {
		switch v1.AssignmentEventType(e.Type) {
		case v1.AssignmentEventType_ASSIGNMENT_EVENT_TYPE_ASSIGNED:
			for _, p := range e.Partitions {
				if o, ok := owner[p]; ok {
					t.Fatalf("event %d: %v assigned to %s while %s owns it", i, p, e.Member, o)
				}
				owner[p] = e.Member
			}
		case v1.AssignmentEventType_ASSIGNMENT_EVENT_TYPE_RELEASED, v1.AssignmentEventType_ASSIGNMENT_EVENT_TYPE_LEFT,
			v1.AssignmentEventType_ASSIGNMENT_EVENT_TYPE_EVICTED:
			for _, p := range e.Partitions {
				if owner[p] != e.Member {
					t.Fatalf("event %d: %s released %v owned by %q", i, e.Member, p, owner[p])
				}
				delete(owner, p)
			}
		case v1.AssignmentEventType_ASSIGNMENT_EVENT_TYPE_STATIC_REJOINED:
			for _, p := range e.Partitions {
				if owner[p] != e.Previous {
					t.Fatalf("event %d: static rejoin moves %v from %s, owned by %q", i, p, e.Previous, owner[p])
				}
				owner[p] = e.Member
			}
		}
	}
	return owner
}

func count(events []fsm.GroupEvent, t v1.AssignmentEventType) int {
	n := 0
	for _, e := range events {
		if e.Type == int32(t) {
			n++
		}
	}
	return n
}

func TestJoinGetsEveryPartition(t *testing.T) {
	h := newHarness(t, map[string]int32{"orders": 6, "other": 2})
	r := h.join("orders")
	if r.MemberEpoch != 1 || r.GroupEpoch != 1 || len(r.Assignment) != 6 || r.Pending != 0 {
		t.Fatalf("join: %+v", r)
	}
	if !h.meta.Stable {
		t.Fatal("a single member owning its target is stable")
	}
	// A heartbeat that changes nothing changes nothing (no Raft entry).
	res, err := h.co.Heartbeat(h.meta, Request{Group: "g", MemberID: r.MemberID, MemberEpoch: 1, Topics: []string{"orders"}, Owned: r.Assignment}, h.topics, h.now)
	if err != nil || res.Changed {
		t.Fatalf("idle heartbeat: changed=%v err=%v", res.Changed, err)
	}
}

func TestIncrementalMoveWaitsForRelease(t *testing.T) {
	h := newHarness(t, map[string]int32{"orders": 6})
	a := h.join("orders").MemberID
	h.slow[a] = true // a keeps revoked partitions until told twice
	b := h.join("orders")
	if len(b.Assignment) != 0 || b.Pending != 3 {
		t.Fatalf("b must wait for a to release: %+v", b)
	}
	ra := h.hb(a) // a learns its new assignment; still owns the rest
	if len(ra.Assignment) != 3 || len(h.meta.Members[a].Revoking) != 3 {
		t.Fatalf("a: %+v, revoking %v", ra, h.meta.Members[a].Revoking)
	}
	if ra.MemberEpoch != 1 {
		t.Fatalf("a keeps its epoch until it released: %d", ra.MemberEpoch)
	}
	if rb := h.hb(b.MemberID); len(rb.Assignment) != 0 {
		t.Fatalf("b got partitions a still owns: %+v", rb)
	}
	h.slow[a] = false
	h.owned[a] = ra.Assignment // a releases
	ra = h.hb(a)
	if ra.MemberEpoch != 2 || len(h.meta.Members[a].Revoking) != 0 {
		t.Fatalf("after releasing a converges to epoch 2: %+v", ra)
	}
	rb := h.hb(b.MemberID)
	if len(rb.Assignment) != 3 || rb.MemberEpoch != 2 || !h.meta.Stable {
		t.Fatalf("b gets the released partitions: %+v stable=%v", rb, h.meta.Stable)
	}
	if n := count(h.events, v1.AssignmentEventType_ASSIGNMENT_EVENT_TYPE_RELEASED); n != 1 {
		t.Fatalf("released events: %d", n)
	}
}

func TestLeaveAndEviction(t *testing.T) {
	h := newHarness(t, map[string]int32{"orders": 4})
	a := h.join("orders").MemberID
	b := h.join("orders").MemberID
	c := h.join("orders").MemberID
	h.settle()
	epoch := h.meta.Epoch
	if _, err := h.heartbeat(Request{MemberID: a, MemberEpoch: LeaveEpoch}); err != nil {
		t.Fatal(err)
	}
	if h.meta.Epoch != epoch+1 || h.meta.Members[a] != nil {
		t.Fatalf("leave bumps the epoch and removes the member: %+v", h.meta)
	}
	h.settle()
	res := h.co.Expire(h.meta, []string{b}, h.topics, h.now)
	h.apply(res)
	delete(h.owned, b)
	if h.meta.Members[b] != nil || count(res.Events, v1.AssignmentEventType_ASSIGNMENT_EVENT_TYPE_EVICTED) != 1 || !slices.Equal(res.Removed, []string{b}) {
		t.Fatalf("eviction: %+v", res)
	}
	h.settle()
	if got := len(h.meta.Members[c].Assigned); got != 4 {
		t.Fatalf("the last member owns everything: %d", got)
	}
	// The evicted member is told to rejoin.
	if _, err := h.co.Heartbeat(h.meta, Request{Group: "g", MemberID: b, MemberEpoch: 3}, h.topics, h.now); !errors.Is(err, ErrUnknownMember) {
		t.Fatalf("evicted member heartbeat: %v", err)
	}
	// A leave repeated is harmless.
	if res, err := h.co.Heartbeat(h.meta, Request{Group: "g", MemberID: a, MemberEpoch: LeaveEpoch}, h.topics, h.now); err != nil || res.Changed {
		t.Fatalf("second leave: %v %v", res.Changed, err)
	}
}

func TestFencing(t *testing.T) {
	h := newHarness(t, map[string]int32{"orders": 2})
	a := h.join("orders")
	h.join("orders")
	h.settle()
	cur := h.meta.Members[a.MemberID].Epoch
	_, err := h.co.Heartbeat(h.meta, Request{Group: "g", MemberID: a.MemberID, MemberEpoch: cur + 5}, h.topics, h.now)
	if !errors.Is(err, ErrFenced) {
		t.Fatalf("future epoch: %v", err)
	}
	// The previous epoch is accepted once (a lost answer).
	prev := h.meta.Members[a.MemberID].PrevEpoch
	if _, err := h.co.Heartbeat(h.meta, Request{Group: "g", MemberID: a.MemberID, MemberEpoch: prev, Owned: h.owned[a.MemberID]}, h.topics, h.now); err != nil {
		t.Fatalf("previous epoch %d: %v", prev, err)
	}
	for _, bad := range []Request{
		{Group: "bad group"}, {Group: "g"}, {Group: "g", Topics: []string{"x"}, Regex: "y"},
		{Group: "g", Regex: "("}, {Group: "g", Topics: []string{"x"}, Assignor: "nope"},
		{Group: "g", Topics: []string{"x"}, SessionTimeoutMs: 1}, {Group: "g", MemberEpoch: -3},
	} {
		if _, err := h.co.Heartbeat(h.meta, bad, h.topics, h.now); !errors.Is(err, ErrInvalid) {
			t.Errorf("%+v: want ErrInvalid, got %v", bad, err)
		}
	}
}

func TestStaticMembership(t *testing.T) {
	h := newHarness(t, map[string]int32{"orders": 4})
	a, err := h.heartbeat(Request{Topics: []string{"orders"}, InstanceID: "host-a"})
	if err != nil {
		t.Fatal(err)
	}
	h.join("orders")
	h.settle()
	before := slices.Clone(h.meta.Members[a.MemberID].Assigned)
	epoch, rebalances := h.meta.Epoch, count(h.events, v1.AssignmentEventType_ASSIGNMENT_EVENT_TYPE_EPOCH)
	if _, err := h.heartbeat(Request{MemberID: a.MemberID, MemberEpoch: StaticLeaveEpoch}); err != nil {
		t.Fatal(err)
	}
	if h.meta.Epoch != epoch || h.meta.Members[a.MemberID].LeftMs == 0 || !slices.Equal(h.meta.Members[a.MemberID].Assigned, before) {
		t.Fatalf("a static leave keeps the partitions without a rebalance: %+v", h.meta.Members[a.MemberID])
	}
	// Another member's heartbeat does not take them.
	h.settle()
	r, err := h.heartbeat(Request{Topics: []string{"orders"}, InstanceID: "host-a"})
	if err != nil {
		t.Fatal(err)
	}
	if r.MemberID == a.MemberID || !slices.Equal(r.Assignment, before) || h.meta.Epoch != epoch ||
		count(h.events, v1.AssignmentEventType_ASSIGNMENT_EVENT_TYPE_EPOCH) != rebalances {
		t.Fatalf("rejoin takes the partitions back without a rebalance: %+v (before %v) epoch %d->%d", r, before, epoch, h.meta.Epoch)
	}
	if _, ok := h.meta.Members[a.MemberID]; ok {
		t.Fatal("the old member id is gone")
	}
	// A static member that left and never came back is evicted by its session timeout.
	if _, err := h.heartbeat(Request{MemberID: r.MemberID, MemberEpoch: StaticLeaveEpoch}); err != nil {
		t.Fatal(err)
	}
	h.apply(h.co.Expire(h.meta, []string{r.MemberID}, h.topics, h.now))
	h.settle()
	if len(h.meta.Members) != 1 {
		t.Fatalf("members: %v", h.meta.MemberIDs())
	}
}

func TestRegexPicksUpNewTopics(t *testing.T) {
	h := newHarness(t, map[string]int32{"orders.eu": 2, "payments": 2})
	r, err := h.heartbeat(Request{Regex: `orders\..*`})
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Assignment) != 2 {
		t.Fatalf("regex matches orders.eu only: %v", r.Assignment)
	}
	h.topics["orders.us"] = 3
	res := h.co.Expire(h.meta, nil, h.topics, h.now)
	if !res.Changed || res.Meta.Epoch != h.meta.Epoch+1 {
		t.Fatalf("a new matching topic bumps the epoch: %+v", res.Meta)
	}
	h.apply(res)
	if r = h.hb(r.MemberID); len(r.Assignment) != 5 {
		t.Fatalf("after the refresh: %v", r.Assignment)
	}
	delete(h.topics, "orders.eu")
	h.apply(h.co.Expire(h.meta, nil, h.topics, h.now))
	h.settle()
	if r = h.hb(r.MemberID); len(r.Assignment) != 3 {
		t.Fatalf("a deleted topic's partitions are revoked: %v", r.Assignment)
	}
	// Nothing changed: no update.
	if res := h.co.Expire(h.meta, nil, h.topics, h.now); res.Changed {
		t.Fatalf("idle refresh changed the group: %+v", res.Events)
	}
}

// TestRandomMembershipNeverDoubleOwns drives random joins, leaves,
// evictions, static leaves and rejoins, slow and fast clients, and checks
// the ownership invariant after every step; at the end the group converges.
func TestRandomMembershipNeverDoubleOwns(t *testing.T) {
	for seed := range uint64(20) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 7))
			h := newHarness(t, map[string]int32{"a": 7, "b": 5})
			instances := 0
			for step := range 300 {
				ids := h.meta.MemberIDs()
				switch op := rng.IntN(10); {
				case op == 0 || len(ids) == 0:
					req := Request{Topics: [][]string{{"a"}, {"b"}, {"a", "b"}}[rng.IntN(3)], Assignor: []string{"", "range", "roundrobin", "uniform"}[rng.IntN(4)]}
					if rng.IntN(3) == 0 {
						instances++
						req.InstanceID = fmt.Sprintf("i%d", rng.IntN(instances))
					}
					r, err := h.heartbeat(req)
					if err != nil {
						t.Fatalf("step %d join: %v", step, err)
					}
					h.slow[r.MemberID] = rng.IntN(2) == 0
				case op == 1:
					id := ids[rng.IntN(len(ids))]
					if h.meta.Members[id].LeftMs != 0 {
						continue
					}
					epoch := LeaveEpoch
					if h.meta.Members[id].InstanceID != "" && rng.IntN(2) == 0 {
						epoch = StaticLeaveEpoch
					}
					if _, err := h.heartbeat(Request{MemberID: id, MemberEpoch: epoch}); err != nil {
						t.Fatalf("step %d leave: %v", step, err)
					}
				case op == 2:
					id := ids[rng.IntN(len(ids))]
					h.apply(h.co.Expire(h.meta, []string{id}, h.topics, h.now))
					delete(h.owned, id)
				default:
					id := ids[rng.IntN(len(ids))]
					if h.meta.Members[id].LeftMs != 0 {
						continue
					}
					if h.slow[id] && rng.IntN(2) == 0 {
						h.owned[id] = h.meta.Members[id].Assigned // the slow client finally releases
					}
					h.hb(id)
				}
			}
			for id := range h.slow {
				h.slow[id] = false
			}
			for _, id := range h.meta.MemberIDs() {
				if m := h.meta.Members[id]; m.LeftMs != 0 {
					h.apply(h.co.Expire(h.meta, []string{id}, h.topics, h.now))
					delete(h.owned, id)
				} else {
					h.owned[id] = m.Assigned
				}
			}
			if len(h.meta.Members) > 0 {
				h.settle()
			}
		})
	}
}
