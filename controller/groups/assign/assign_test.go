package assign

import (
	"fmt"
	"maps"
	"reflect"
	"slices"
	"testing"

	"go.uber.org/goleak"
	"pgregory.net/rapid"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func tp(topic string, p int32) TopicPartition { return TopicPartition{Topic: topic, Partition: p} }

// parse turns "t0p1" style names into partitions, to keep the table tests close to the way
// Kafka's documentation writes its examples.
func parse(names ...string) []TopicPartition {
	out := []TopicPartition{}
	for _, n := range names {
		var t string
		var p int32
		i := len(n) - 1
		for n[i] != 'p' {
			i--
		}
		t = n[:i]
		if _, err := fmt.Sscanf(n[i+1:], "%d", &p); err != nil {
			panic(err)
		}
		out = append(out, tp(t, p))
	}
	return out
}

func TestGetAndNames(t *testing.T) {
	if got, want := Names(), []string{"range", "roundrobin", "uniform"}; !slices.Equal(got, want) {
		t.Fatalf("Names() = %v, want %v", got, want)
	}
	for _, n := range Names() {
		a, err := Get(n)
		if err != nil || a.Name() != n {
			t.Fatalf("Get(%q) = %v, %v", n, a, err)
		}
	}
	if _, err := Get(Default); err != nil {
		t.Fatalf("Get(Default): %v", err)
	}
	_, err := Get("sticky")
	if err == nil || err.Error() != `unknown assignor "sticky": valid assignors are range, roundrobin, uniform` {
		t.Fatalf("Get(sticky) error = %v", err)
	}
}

// TestKafkaExamples checks the examples of Kafka's assignor documentation (RangeAssignor
// and RoundRobinAssignor javadoc) and of the sticky assignor (KIP-54).
func TestKafkaExamples(t *testing.T) {
	two := map[string]int32{"t0": 3, "t1": 3}
	both := []string{"t0", "t1"}
	cases := []struct {
		name       string
		assignor   Assignor
		members    []Member
		partitions map[string]int32
		want       map[string][]TopicPartition
	}{{
		name:       "range, two consumers, two topics of three partitions",
		assignor:   Range{},
		members:    []Member{{ID: "C0", Topics: both}, {ID: "C1", Topics: both}},
		partitions: two,
		want: map[string][]TopicPartition{
			"C0": parse("t0p0", "t0p1", "t1p0", "t1p1"),
			"C1": parse("t0p2", "t1p2"),
		},
	}, {
		name:       "roundrobin, two consumers, two topics of three partitions",
		assignor:   RoundRobin{},
		members:    []Member{{ID: "C0", Topics: both}, {ID: "C1", Topics: both}},
		partitions: two,
		want: map[string][]TopicPartition{
			"C0": parse("t0p0", "t0p2", "t1p1"),
			"C1": parse("t0p1", "t1p0", "t1p2"),
		},
	}, {
		name:     "roundrobin, unequal subscriptions",
		assignor: RoundRobin{},
		members: []Member{
			{ID: "C0", Topics: []string{"t0"}},
			{ID: "C1", Topics: []string{"t0", "t1"}},
			{ID: "C2", Topics: []string{"t0", "t1", "t2"}},
		},
		partitions: map[string]int32{"t0": 1, "t1": 2, "t2": 3},
		want: map[string][]TopicPartition{
			"C0": parse("t0p0"),
			"C1": parse("t1p0"),
			"C2": parse("t1p1", "t2p0", "t2p1", "t2p2"),
		},
	}, {
		// KIP-54: C1 leaves; a sticky assignor keeps every partition of C0 and C2 and hands
		// C1's three out so that the result is balanced (4 and 4).
		name:     "uniform, KIP-54 example, C1 leaves",
		assignor: Uniform{},
		members: []Member{
			{ID: "C0", Topics: []string{"t0", "t1", "t2", "t3"}, Current: parse("t0p0", "t1p1", "t3p0")},
			{ID: "C2", Topics: []string{"t0", "t1", "t2", "t3"}, Current: parse("t1p0", "t2p1")},
		},
		partitions: map[string]int32{"t0": 2, "t1": 2, "t2": 2, "t3": 2},
		want: map[string][]TopicPartition{
			"C0": parse("t0p0", "t0p1", "t1p1", "t3p0"),
			"C2": parse("t1p0", "t2p0", "t2p1", "t3p1"),
		},
	}, {
		// KIP-54's unequal-subscription example: t0 has 1 partition, t1 2, t2 3; C0
		// subscribes to t0, C1 to t0 and t1, C2 to all. Round-robin gives C2 four
		// partitions and C0/C1 one each; the balanced answer is 1, 2, 3.
		name:     "uniform, KIP-54 unequal subscriptions",
		assignor: Uniform{},
		members: []Member{
			{ID: "C0", Topics: []string{"t0"}},
			{ID: "C1", Topics: []string{"t0", "t1"}},
			{ID: "C2", Topics: []string{"t0", "t1", "t2"}},
		},
		partitions: map[string]int32{"t0": 1, "t1": 2, "t2": 3},
		want: map[string][]TopicPartition{
			"C0": parse("t0p0"),
			"C1": parse("t1p0", "t1p1"),
			"C2": parse("t2p0", "t2p1", "t2p2"),
		},
	}, {
		name:     "uniform, KIP-54 unequal subscriptions, C0 leaves",
		assignor: Uniform{},
		members: []Member{
			{ID: "C1", Topics: []string{"t0", "t1"}, Current: parse("t1p0", "t1p1")},
			{ID: "C2", Topics: []string{"t0", "t1", "t2"}, Current: parse("t2p0", "t2p1", "t2p2")},
		},
		partitions: map[string]int32{"t0": 1, "t1": 2, "t2": 3},
		want: map[string][]TopicPartition{
			"C1": parse("t0p0", "t1p0", "t1p1"),
			"C2": parse("t2p0", "t2p1", "t2p2"),
		},
	}, {
		name:     "every member appears, unknown and empty topics are ignored",
		assignor: Uniform{},
		members: []Member{
			{ID: "a", Topics: []string{"missing", "empty"}},
			{ID: "b", Topics: []string{"t"}, Current: parse("t0p0", "tp7", "missingp0")},
		},
		partitions: map[string]int32{"t": 2, "empty": 0, "other": 4},
		want: map[string][]TopicPartition{
			"a": {},
			"b": parse("tp0", "tp1"),
		},
	}}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := tc.assignor.Assign(tc.members, tc.partitions)
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got  %v\nwant %v", got, tc.want)
			}
		})
	}
}

// TestUniformDoubleClaim: a partition in two members' Current stays with the smaller id.
func TestUniformDoubleClaim(t *testing.T) {
	got := Uniform{}.Assign([]Member{
		{ID: "b", Topics: []string{"t"}, Current: parse("tp0", "tp1")},
		{ID: "a", Topics: []string{"t"}, Current: parse("tp1")},
	}, map[string]int32{"t": 2})
	want := map[string][]TopicPartition{"a": parse("tp1"), "b": parse("tp0")}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
}

// scenario is the state of a group across a sequence of membership changes.
type scenario struct {
	members    map[string][]string // id -> subscribed topics
	partitions map[string]int32
	prev       map[string][]TopicPartition // last assignment, fed back as Current
}

// universe holds the topic names scenarios draw from; "ghost" is never created, so members
// that subscribe to it exercise unknown topics.
var universe = []string{"a", "b", "c", "d", "ghost"}

// sizes bounds a scenario: the exact optimum check (oracle) needs small groups.
type sizes struct {
	members, partitions, steps int
}

var (
	small  = sizes{members: 6, partitions: 6, steps: 25}
	medium = sizes{members: 14, partitions: 12, steps: 10}
	large  = sizes{members: 40, partitions: 60, steps: 15}
)

// run drives a random sequence of membership changes through assignor a, feeding each
// result back as the next Current, and calls check after each step.
func run(t *rapid.T, a Assignor, sz sizes, sameSubscription bool, check func(t *rapid.T, s *scenario, in []Member, out map[string][]TopicPartition)) {
	s := &scenario{members: map[string][]string{}, partitions: map[string]int32{}, prev: map[string][]TopicPartition{}}
	for _, topic := range universe[:3] {
		s.partitions[topic] = int32(rapid.IntRange(0, sz.partitions).Draw(t, "partitions "+topic))
	}
	subscription := rapid.SliceOfNDistinct(rapid.SampledFrom(universe), 1, 3, rapid.ID[string])
	groupSub := subscription.Draw(t, "group subscription")
	next := 0
	// Start from a populated group (rapid favours small numbers, and a group grown one join
	// at a time would rarely get big), then apply the changes one by one.
	initial := rapid.IntRange(1, sz.members).Draw(t, "initial members")
	steps := rapid.IntRange(initial, initial+sz.steps).Draw(t, "steps")
	for step := range steps {
		ids := slices.Sorted(maps.Keys(s.members))
		action := 0 // join
		if step >= initial {
			action = rapid.IntRange(0, 5).Draw(t, "action")
		}
		switch {
		case action <= 1 && len(s.members) < sz.members: // join
			id := fmt.Sprintf("m%02d", next)
			next++
			if sameSubscription {
				s.members[id] = groupSub
			} else {
				s.members[id] = subscription.Draw(t, "subscription "+id)
			}
		case action == 2 && len(ids) > 0: // leave
			delete(s.members, rapid.SampledFrom(ids).Draw(t, "leaver"))
		case action == 3 && len(ids) > 0: // change subscription
			if sameSubscription {
				groupSub = subscription.Draw(t, "group subscription")
				for id := range s.members {
					s.members[id] = groupSub
				}
			} else {
				id := rapid.SampledFrom(ids).Draw(t, "resubscriber")
				s.members[id] = subscription.Draw(t, "subscription "+id)
			}
		case action == 4: // a topic gains partitions (or is created)
			topic := rapid.SampledFrom(universe[:4]).Draw(t, "grown topic")
			s.partitions[topic] += int32(rapid.IntRange(1, sz.partitions/2+1).Draw(t, "added partitions"))
		default: // nothing changes: a stable group must keep its assignment
		}
		in := s.input()
		out := a.Assign(in, s.partitions)
		checkValid(t, s, out)
		checkDeterministic(t, a, in, s.partitions, out)
		check(t, s, in, out)
		s.prev = out
	}
}

// input returns the members in id order with the previous assignment as Current.
func (s *scenario) input() []Member {
	var in []Member
	for _, id := range slices.Sorted(maps.Keys(s.members)) {
		in = append(in, Member{ID: id, Topics: slices.Clone(s.members[id]), Current: slices.Clone(s.prev[id])})
	}
	return in
}

// subscribes reports whether member id subscribes to topic.
func (s *scenario) subscribes(id, topic string) bool { return slices.Contains(s.members[id], topic) }

// effective returns a member's subscribed topics that exist with partitions, sorted.
func (s *scenario) effective(id string) []string {
	var ts []string
	for _, topic := range s.members[id] {
		if s.partitions[topic] > 0 {
			ts = append(ts, topic)
		}
	}
	slices.Sort(ts)
	return ts
}

// identical reports whether all members have the same effective subscription.
func (s *scenario) identical() bool {
	var first []string
	i := 0
	for id := range s.members {
		if i == 0 {
			first = s.effective(id)
		} else if !slices.Equal(first, s.effective(id)) {
			return false
		}
		i++
	}
	return true
}

// checkValid: every member appears, slices are sorted without duplicates, every partition
// of a subscribed topic is owned by exactly one member that subscribes to its topic, and
// nothing else is assigned.
func checkValid(t *rapid.T, s *scenario, out map[string][]TopicPartition) {
	if len(out) != len(s.members) {
		t.Fatalf("result has %d members, group has %d: %v", len(out), len(s.members), out)
	}
	owner := map[TopicPartition]string{}
	for id, ps := range out {
		if _, ok := s.members[id]; !ok {
			t.Fatalf("result names unknown member %q", id)
		}
		if ps == nil {
			t.Fatalf("member %q has a nil slice", id)
		}
		for i, p := range ps {
			if i > 0 && Compare(ps[i-1], p) >= 0 {
				t.Fatalf("member %q: partitions not sorted or repeated: %v", id, ps)
			}
			if !s.subscribes(id, p.Topic) {
				t.Fatalf("member %q got %v but does not subscribe to %q", id, p, p.Topic)
			}
			if p.Partition < 0 || p.Partition >= s.partitions[p.Topic] {
				t.Fatalf("member %q got %v, which does not exist (%d partitions)", id, p, s.partitions[p.Topic])
			}
			if o, dup := owner[p]; dup {
				t.Fatalf("%v owned by both %q and %q", p, o, id)
			}
			owner[p] = id
		}
	}
	for topic, n := range s.partitions {
		subscribed := false
		for id := range s.members {
			subscribed = subscribed || s.subscribes(id, topic)
		}
		for p := range n {
			if _, ok := owner[tp(topic, p)]; subscribed && !ok {
				t.Fatalf("%s/%d of a subscribed topic is not assigned", topic, p)
			}
		}
	}
}

// checkDeterministic: shuffling members, their topics and their current partitions does
// not change the result.
func checkDeterministic(t *rapid.T, a Assignor, in []Member, partitions map[string]int32, want map[string][]TopicPartition) {
	shuffled := rapid.Permutation(in).Draw(t, "member order")
	for i := range shuffled {
		shuffled[i].Topics = rapid.Permutation(shuffled[i].Topics).Draw(t, "topic order")
		shuffled[i].Current = rapid.Permutation(shuffled[i].Current).Draw(t, "current order")
	}
	if got := a.Assign(shuffled, partitions); !reflect.DeepEqual(got, want) {
		t.Fatalf("shuffled input changed the result:\n%v\nvs\n%v", got, want)
	}
}

func loads(out map[string][]TopicPartition) (lo, hi int) {
	lo = int(^uint(0) >> 1)
	for _, ps := range out {
		lo, hi = min(lo, len(ps)), max(hi, len(ps))
	}
	return lo, hi
}

// checkOverallBalance: with identical subscriptions, max - min <= 1 over all members.
func checkOverallBalance(t *rapid.T, s *scenario, out map[string][]TopicPartition) {
	if len(out) == 0 || !s.identical() {
		return
	}
	if lo, hi := loads(out); hi-lo > 1 {
		t.Fatalf("identical subscriptions but loads range from %d to %d: %v", lo, hi, out)
	}
}

func TestRangeProperties(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		run(t, Range{}, small, rapid.Bool().Draw(t, "same subscription"), func(t *rapid.T, s *scenario, _ []Member, out map[string][]TopicPartition) {
			// Per topic, among its subscribers: max - min <= 1, and each gets a contiguous
			// range, lower ids first.
			for topic, n := range s.partitions {
				var subs []string
				for _, id := range slices.Sorted(maps.Keys(s.members)) {
					if s.subscribes(id, topic) {
						subs = append(subs, id)
					}
				}
				next := int32(0)
				lo, hi := int(n), 0
				for _, id := range subs {
					var got []int32
					for _, p := range out[id] {
						if p.Topic == topic {
							got = append(got, p.Partition)
						}
					}
					for i, p := range got {
						if p != next+int32(i) {
							t.Fatalf("topic %s: member %s has %v, not a range starting at %d", topic, id, got, next)
						}
					}
					next += int32(len(got))
					lo, hi = min(lo, len(got)), max(hi, len(got))
				}
				if len(subs) > 0 && hi-lo > 1 {
					t.Fatalf("topic %s: subscribers own from %d to %d partitions", topic, lo, hi)
				}
			}
		})
	})
}

func TestRoundRobinProperties(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		run(t, RoundRobin{}, small, rapid.Bool().Draw(t, "same subscription"), func(t *rapid.T, s *scenario, _ []Member, out map[string][]TopicPartition) {
			checkOverallBalance(t, s, out)
		})
	})
}

// TestUniformProperties checks, after every change, that the uniform assignor's result is
// valid, deterministic, balanced and sticky, against an exact optimum computed independently
// (minCost): its sum of squared loads is the minimum possible (for identical subscriptions:
// max-min <= 1), and the number of partitions it moves is the minimum among all assignments
// with that sum. With identical subscriptions it also checks the closed form: every member
// keeps min(its still-valid current partitions, its new load).
func TestUniformProperties(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		sz := small
		if rapid.IntRange(0, 3).Draw(t, "medium") == 0 {
			sz = medium // fewer, larger groups: longer chains of moves in the flow
		}
		run(t, Uniform{}, sz, rapid.Bool().Draw(t, "same subscription"), func(t *rapid.T, s *scenario, in []Member, out map[string][]TopicPartition) {
			checkOverallBalance(t, s, out)
			checkKeepsWhatItCan(t, s, out)
			wantSq, wantMoves := minCost(s, in)
			if sq := sumSquares(out); sq != wantSq {
				t.Fatalf("sum of squared loads %d, minimum is %d: not balanced as eligibility allows: %v", sq, wantSq, out)
			}
			if moved := moves(s, out); moved != wantMoves {
				t.Fatalf("moved %d partitions, a balanced assignment can move only %d:\ncurrent %v\ngot     %v", moved, wantMoves, s.prev, out)
			}
		})
	})
}

// TestUniformPropertiesLarge runs larger groups with identical subscriptions, where the
// minimum is known in closed form: moves = valid current partitions - the most any balanced
// assignment keeps (sum of min(k, q) plus one for each of the r = P mod M members with
// k > q, at most r of them).
func TestUniformPropertiesLarge(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		run(t, Uniform{}, large, true, func(t *rapid.T, s *scenario, _ []Member, out map[string][]TopicPartition) {
			checkOverallBalance(t, s, out)
			checkKeepsWhatItCan(t, s, out)
			if len(s.members) == 0 {
				return
			}
			total := 0
			for _, topic := range s.effective(slices.Sorted(maps.Keys(s.members))[0]) {
				total += int(s.partitions[topic])
			}
			q, r := total/len(s.members), total%len(s.members)
			keepable, above, valid := 0, 0, 0
			for id := range s.members {
				k := len(stillValid(s, id))
				valid += k
				keepable += min(k, q)
				if k > q {
					above++
				}
			}
			keepable += min(r, above)
			if moved := moves(s, out); moved != valid-keepable+forced(s) {
				t.Fatalf("moved %d, lower bound %d", moved, valid-keepable+forced(s))
			}
		})
	})
}

// stillValid returns the partitions of member id's previous assignment it may keep: they
// exist and it still subscribes to their topic.
func stillValid(s *scenario, id string) []TopicPartition {
	var ps []TopicPartition
	for _, p := range s.prev[id] {
		if s.subscribes(id, p.Topic) && p.Partition < s.partitions[p.Topic] {
			ps = append(ps, p)
		}
	}
	return ps
}

// forced counts partitions whose previous owner is still in the group but no longer
// subscribes to their topic: they move whatever the assignor does.
func forced(s *scenario) int {
	n := 0
	for id, ps := range s.prev {
		if _, ok := s.members[id]; !ok {
			continue
		}
		for _, p := range ps {
			if !s.subscribes(id, p.Topic) && p.Partition < s.partitions[p.Topic] {
				for other := range s.members {
					if s.subscribes(other, p.Topic) {
						n++
						break
					}
				}
			}
		}
	}
	return n
}

// checkKeepsWhatItCan: with identical subscriptions every member keeps
// min(|Current ∩ still valid|, its new load) of its partitions.
func checkKeepsWhatItCan(t *rapid.T, s *scenario, out map[string][]TopicPartition) {
	if !s.identical() {
		return
	}
	for id := range s.members {
		valid := stillValid(s, id)
		kept := 0
		for _, p := range valid {
			if _, ok := slices.BinarySearchFunc(out[id], p, Compare); ok {
				kept++
			}
		}
		if want := min(len(valid), len(out[id])); kept != want {
			t.Fatalf("member %s kept %d of its %d valid partitions with a load of %d", id, kept, len(valid), len(out[id]))
		}
	}
}

// moves counts partitions that were assigned to a member still in the group and are now
// assigned to another one.
func moves(s *scenario, out map[string][]TopicPartition) int {
	n := 0
	for id, ps := range s.prev {
		if _, ok := s.members[id]; !ok {
			continue
		}
		for _, p := range ps {
			if p.Partition >= s.partitions[p.Topic] {
				continue
			}
			if _, kept := slices.BinarySearchFunc(out[id], p, Compare); !kept {
				// Only a move if someone owns it now; a partition of a topic nobody
				// subscribes to any more is dropped, not moved.
				for other := range s.members {
					if _, ok := slices.BinarySearchFunc(out[other], p, Compare); ok {
						n++
						break
					}
				}
			}
		}
	}
	return n
}

func sumSquares(out map[string][]TopicPartition) int {
	sq := 0
	for _, ps := range out {
		sq += len(ps) * len(ps)
	}
	return sq
}

// minCost computes, independently of the assignor, the minimum sum of squared loads of any
// valid assignment and the fewest moves among the assignments that reach it: a min-cost
// flow, one node per partition and per member, solved by successive shortest paths
// (Bellman-Ford). A unit from partition p to member m costs 1 if p's previous owner is in the
// group and is not m; member m's k-th unit costs big*(2k+1), so the total is
// big*sum(load^2) + moves with big larger than any number of moves.
func minCost(s *scenario, in []Member) (sq, moved int) {
	prevOwner := map[TopicPartition]string{}
	for id, ps := range s.prev {
		if _, ok := s.members[id]; ok {
			for _, p := range ps {
				prevOwner[p] = id
			}
		}
	}
	var parts []TopicPartition
	for _, topic := range slices.Sorted(maps.Keys(s.partitions)) {
		for _, m := range in {
			if s.subscribes(m.ID, topic) {
				for p := range s.partitions[topic] {
					parts = append(parts, tp(topic, p))
				}
				break
			}
		}
	}
	big := len(parts) + 1
	source, sink := 0, 1+len(parts)+len(in)
	g := newGraph(sink + 1)
	for i, p := range parts {
		g.add(source, 1+i, 1, 0)
		for j, m := range in {
			if s.subscribes(m.ID, p.Topic) {
				cost := 0
				if o, ok := prevOwner[p]; ok && o != m.ID {
					cost = 1
				}
				g.add(1+i, 1+len(parts)+j, 1, cost)
			}
		}
	}
	for j := range in {
		for k := range parts {
			g.add(1+len(parts)+j, sink, 1, big*(2*k+1))
		}
	}
	total := 0
	for range parts {
		cost, ok := g.augment(source, sink)
		if !ok {
			panic("minCost: a subscribed partition cannot be assigned")
		}
		total += cost
	}
	return total / big, total % big
}

// graph is a residual graph for minCost.
type graph struct {
	n     int
	edges []edge // edge i and i^1 are each other's reverse
	out   [][]int
}

type edge struct{ to, cap, cost int }

func newGraph(n int) *graph { return &graph{n: n, out: make([][]int, n)} }

func (g *graph) add(from, to, cap, cost int) {
	g.out[from] = append(g.out[from], len(g.edges))
	g.edges = append(g.edges, edge{to, cap, cost})
	g.out[to] = append(g.out[to], len(g.edges))
	g.edges = append(g.edges, edge{from, 0, -cost})
}

// augment sends one unit along a cheapest source-sink path and returns its cost.
func (g *graph) augment(source, sink int) (int, bool) {
	const inf = int(^uint(0) >> 2)
	dist := slices.Repeat([]int{inf}, g.n)
	via := slices.Repeat([]int{-1}, g.n)
	dist[source] = 0
	for changed := true; changed; {
		changed = false
		for u := range g.n {
			if dist[u] == inf {
				continue
			}
			for _, e := range g.out[u] {
				if ed := g.edges[e]; ed.cap > 0 && dist[u]+ed.cost < dist[ed.to] {
					dist[ed.to], via[ed.to], changed = dist[u]+ed.cost, e, true
				}
			}
		}
	}
	if dist[sink] == inf {
		return 0, false
	}
	for v := sink; v != source; v = g.edges[via[v]^1].to {
		g.edges[via[v]].cap--
		g.edges[via[v]^1].cap++
	}
	return dist[sink], true
}
