package assign

import (
	"cmp"
	"slices"
)

// Uniform is KIP-848's uniform assignor: balanced first, sticky second.
//
// Balanced: the vector of partitions per member minimises the sum of squared loads over all
// assignments that give every subscribed partition to a member subscribing to its topic.
// For members with identical subscriptions this is max-min <= 1. With different
// subscriptions it is as even as eligibility allows: no sequence of moves, each to a member
// subscribing to the moved partition's topic, can take a partition away from a member with
// L partitions and leave one more with a member that had L-2 or fewer. (For these load
// vectors "minimal sum of squares" and "lexicographically most even" coincide.)
//
// Sticky: among all balanced assignments it returns one that moves the fewest partitions,
// where a partition moves if it is in the Current of a member that still subscribes to its
// topic and ends up with another member. A partition claimed in Current by several members
// counts as owned by the one with the smallest id. With identical subscriptions this means
// every member keeps min(its still-valid current partitions, its new load) of them.
//
// How: members are split into independent components (members linked through shared
// topics). A component whose members all subscribe to the same topics is solved in closed
// form in O(P log P) for P partitions. Other components are a convex min-cost flow over
// topics and members (cost = (P+1) * sum of squared loads - partitions kept); a sticky,
// greedy start is improved by cancelling negative cycles until none is left, which proves
// optimality.
type Uniform struct{}

// Name returns "uniform".
func (Uniform) Name() string { return "uniform" }

// part is a partition by topic index: cheaper to sort and compare than a TopicPartition.
type part struct {
	t int
	p int32
}

// Assign implements Assignor.
func (Uniform) Assign(members []Member, partitions map[string]int32) map[string][]TopicPartition {
	g := normalize(members, partitions)
	owner := g.claims()
	parts := make([][]part, len(g.members))
	for _, c := range g.components() {
		if c.homogeneous(g) {
			uniformHomogeneous(g, c, owner, parts)
		} else {
			uniformHeterogeneous(g, c, owner, parts)
		}
	}
	out := g.result()
	for mi, ps := range parts {
		slices.SortFunc(ps, func(a, b part) int {
			if c := cmp.Compare(a.t, b.t); c != 0 {
				return c
			}
			return cmp.Compare(a.p, b.p)
		})
		tps := make([]TopicPartition, len(ps))
		for i, p := range ps {
			tps[i] = TopicPartition{Topic: g.topics[p.t], Partition: p.p}
		}
		out[g.members[mi].id] = tps
	}
	return out
}

// claims returns owner[t][p]: the index of the member whose Current holds partition p of
// topic t and who still subscribes to t, or -1. A partition in several members' Current goes
// to the one with the smallest id (members are in id order).
func (g *group) claims() [][]int {
	owner := make([][]int, len(g.topics))
	for t, n := range g.counts {
		owner[t] = slices.Repeat([]int{-1}, int(n))
	}
	for mi, m := range g.members {
		for _, tp := range m.current {
			t, ok := g.index[tp.Topic]
			if !ok || tp.Partition < 0 || tp.Partition >= g.counts[t] {
				continue
			}
			if _, sub := slices.BinarySearch(m.topics, t); !sub {
				continue
			}
			if owner[t][tp.Partition] < 0 {
				owner[t][tp.Partition] = mi
			}
		}
	}
	return owner
}

// component is a set of members and topics that no subscription links to the rest: the
// assignment of one component does not constrain another's.
type component struct {
	members []int // member indexes, ascending (id order)
	topics  []int // topic indexes, ascending
}

// components splits the subscribed topics and their members into components. Members with
// no (existing) topics belong to none: they get nothing.
func (g *group) components() []component {
	parent := make([]int, len(g.topics))
	for i := range parent {
		parent[i] = i
	}
	find := func(i int) int {
		for parent[i] != i {
			parent[i] = parent[parent[i]]
			i = parent[i]
		}
		return i
	}
	for _, m := range g.members {
		for _, t := range m.topics[min(1, len(m.topics)):] {
			a, b := find(m.topics[0]), find(t)
			if a != b {
				parent[max(a, b)] = min(a, b)
			}
		}
	}
	byRoot := map[int]int{}
	var comps []component
	for t := range g.topics {
		r := find(t)
		ci, ok := byRoot[r]
		if !ok {
			ci = len(comps)
			byRoot[r] = ci
			comps = append(comps, component{})
		}
		comps[ci].topics = append(comps[ci].topics, t)
	}
	for mi, m := range g.members {
		if len(m.topics) > 0 {
			ci := byRoot[find(m.topics[0])]
			comps[ci].members = append(comps[ci].members, mi)
		}
	}
	return comps
}

// homogeneous reports whether every member of c subscribes to all of c's topics.
func (c component) homogeneous(g *group) bool {
	for _, mi := range c.members {
		if len(g.members[mi].topics) != len(c.topics) {
			return false
		}
	}
	return true
}

// uniformHomogeneous assigns a component whose members all subscribe to the same topics.
//
// With P partitions and M members, a balanced assignment gives r = P mod M members q+1
// partitions and the others q = P/M. A member keeps at most min(k, its load) of its k
// still-valid current partitions, so the most any balanced assignment keeps is reached by
// giving the r larger loads to the members with the most current partitions and letting each
// keep min(k, load): that is what this does. Freed and unowned partitions are then dealt
// round-robin (in id order) to the members below their load.
func uniformHomogeneous(g *group, c component, owner [][]int, parts [][]part) {
	total := 0
	for _, t := range c.topics {
		total += int(g.counts[t])
	}
	m := len(c.members)
	q, r := total/m, total%m

	claimed := map[int][]part{} // by member index, in (topic, partition) order
	for _, t := range c.topics {
		for p, o := range owner[t] {
			if o >= 0 {
				claimed[o] = append(claimed[o], part{t, int32(p)})
			}
		}
	}
	order := slices.Clone(c.members)
	slices.SortStableFunc(order, func(a, b int) int { return cmp.Compare(len(claimed[b]), len(claimed[a])) })
	quota := make(map[int]int, m)
	for i, mi := range order {
		quota[mi] = q
		if i < r {
			quota[mi]++
		}
	}
	for _, mi := range c.members {
		keep := min(len(claimed[mi]), quota[mi])
		parts[mi] = append(parts[mi], claimed[mi][:keep]...)
		for _, p := range claimed[mi][keep:] {
			owner[p.t][p.p] = -1
		}
	}
	var free []part
	for _, t := range c.topics {
		for p, o := range owner[t] {
			if o < 0 {
				free = append(free, part{t, int32(p)})
			}
		}
	}
	need := make([]int, len(c.members))
	for i, mi := range c.members {
		need[i] = quota[mi] - len(parts[mi])
	}
	deal(free, c.members, need, parts)
}

// deal hands out free partitions in order, one per member per round, to the members (in
// the given order) whose need is still positive; need[i] belongs to members[i]. The needs
// must add up to len(free).
func deal(free []part, members []int, need []int, parts [][]part) {
	need = slices.Clone(need)
	needy := make([]int, 0, len(members))
	for i := range members {
		if need[i] > 0 {
			needy = append(needy, i)
		}
	}
	for len(free) > 0 {
		if len(needy) == 0 {
			panic("assign: deal: needs do not cover the free partitions")
		}
		next := needy[:0]
		for _, i := range needy {
			if len(free) == 0 {
				break
			}
			parts[members[i]] = append(parts[members[i]], free[0])
			free = free[1:]
			if need[i]--; need[i] > 0 {
				next = append(next, i)
			}
		}
		needy = next
	}
}

// uniformHeterogeneous assigns a component whose members subscribe to different topics.
// It first decides how many partitions of each topic each member gets (the flow below) and
// then which ones: a member keeps its own current partitions of a topic up to its count and
// the other partitions of the topic are dealt to the members that need more.
func uniformHeterogeneous(g *group, c component, owner [][]int, parts [][]part) {
	f := newFlow(g, c, owner)
	f.start()
	for f.cancelNegativeCycles() {
	}

	for lt, t := range c.topics {
		var subs, need []int
		for _, s := range f.subs[lt] {
			mi := c.members[s.m]
			subs = append(subs, mi)
			x, kept := f.x[s.m][s.k], 0
			for _, p := range f.claimed[s.m][s.k] {
				if kept < x {
					parts[mi] = append(parts[mi], part{t, p})
					kept++
				} else {
					owner[t][p] = -1
				}
			}
			need = append(need, x-kept)
		}
		var free []part
		for p, o := range owner[t] {
			if o < 0 {
				free = append(free, part{t, int32(p)})
			}
		}
		deal(free, subs, need, parts)
	}
}

// flow decides the number of partitions of each topic every member of a component gets, as
// a convex min-cost flow: each partition flows from its topic to a subscribing member; the
// cost is big * sum(load^2) - sum over (member, topic) of min(x, c), where x is the number
// of the topic's partitions the member gets and c the number it currently owns. big exceeds
// any possible difference in the second term, so balance always wins over stickiness.
//
// Members are local indexes 0..M-1 into component.members, topics local indexes 0..T-1
// into component.topics. Graph nodes are members (0..M-1), topics (M..M+T-1) and a sink
// (M+T) through which every member's load flows.
type flow struct {
	g       *group
	c       component
	elig    [][]int     // elig[m]: local topics member m subscribes to, ascending
	claimed [][][]int32 // claimed[m][k]: partitions of topic elig[m][k] that m owns now
	x       [][]int     // x[m][k]: partitions of topic elig[m][k] that m gets
	load    []int       // load[m] = sum(x[m])
	subs    [][]slot    // subs[t]: local members subscribing to local topic t, ascending
	big     int64

	// Bellman-Ford scratch space, reused across cancellations.
	dist   []int64
	pred   []int
	slot   []int // for a member-topic arc into node v: the index k into the member's elig
	mark   []int
	queued []bool
	queue  []int
}

// slot names x[m][k]: member m's count for its k-th subscribed topic.
type slot struct{ m, k int }

func newFlow(g *group, c component, owner [][]int) *flow {
	m, t := len(c.members), len(c.topics)
	f := &flow{g: g, c: c,
		elig: make([][]int, m), claimed: make([][][]int32, m), x: make([][]int, m),
		load: make([]int, m), subs: make([][]slot, t),
	}
	localTopic := make(map[int]int, t)
	for lt, gt := range c.topics {
		localTopic[gt] = lt
	}
	localMember := make(map[int]int, m)
	total := int64(0)
	for lm, mi := range c.members {
		localMember[mi] = lm
		for _, gt := range g.members[mi].topics {
			f.elig[lm] = append(f.elig[lm], localTopic[gt])
		}
		f.claimed[lm] = make([][]int32, len(f.elig[lm]))
		f.x[lm] = make([]int, len(f.elig[lm]))
		for k, lt := range f.elig[lm] {
			f.subs[lt] = append(f.subs[lt], slot{lm, k})
		}
	}
	for lt, gt := range c.topics {
		total += int64(g.counts[gt])
		for p, o := range owner[gt] {
			if o >= 0 {
				lm := localMember[o]
				k, _ := slices.BinarySearch(f.elig[lm], lt)
				f.claimed[lm][k] = append(f.claimed[lm][k], int32(p))
			}
		}
	}
	f.big = total + 1
	v := m + t + 1
	f.dist, f.pred, f.slot, f.mark = make([]int64, v), make([]int, v), make([]int, v), make([]int, v)
	f.queued, f.queue = make([]bool, v), make([]int, 0, 2*v)
	return f
}

// start builds a feasible, nearly optimal flow so that few cycles need cancelling: it
// estimates each member's balanced load by spreading every partition to the least-loaded
// subscriber, lets each member keep its current partitions up to that estimate, and spreads
// the rest the same way.
func (f *flow) start() {
	remaining := make([]int, len(f.subs))
	for lt := range remaining {
		remaining[lt] = int(f.g.counts[f.c.topics[lt]])
	}
	estimate := make([]int, len(f.elig))
	f.spread(slices.Clone(remaining), estimate, nil)
	for lm := range f.elig {
		budget := estimate[lm]
		for k, lt := range f.elig[lm] {
			keep := min(len(f.claimed[lm][k]), budget)
			f.x[lm][k] = keep
			f.load[lm] += keep
			remaining[lt] -= keep
			budget -= keep
		}
	}
	f.spread(remaining, f.load, func(s slot) { f.x[s.m][s.k]++ })
}

// spread gives out remaining[t] units of each topic t, one at a time and interleaving the
// topics (so that no topic fills members up before the others get a chance), each to the
// least-loaded subscriber (ties: lowest index), adding to load and calling add (if not nil)
// for each unit. Topics with fewer subscribers go first in each round: they have fewer
// places to go.
func (f *flow) spread(remaining []int, load []int, add func(slot)) {
	order := make([]int, 0, len(remaining))
	for lt, n := range remaining {
		if n > 0 {
			order = append(order, lt)
		}
	}
	slices.SortStableFunc(order, func(a, b int) int { return cmp.Compare(len(f.subs[a]), len(f.subs[b])) })
	for len(order) > 0 {
		next := order[:0]
		for _, lt := range order {
			best := f.subs[lt][0]
			for _, s := range f.subs[lt][1:] {
				if load[s.m] < load[best.m] {
					best = s
				}
			}
			load[best.m]++
			if add != nil {
				add(best)
			}
			if remaining[lt]--; remaining[lt] > 0 {
				next = append(next, lt)
			}
		}
		order = next
	}
}

// cancelNegativeCycles looks for negative-cost cycles in the residual graph of the current
// flow and, if it finds some, moves one unit around each (lowering the cost) and returns
// true. It returns false when there is none, i.e. the flow is optimal: for separable convex
// costs and integral flows the absence of negative residual cycles, with arc costs taken as
// the marginal cost of one unit, is sufficient.
//
// Residual arcs, with the marginal cost of one unit:
//   - topic t -> member m (m gets one more partition of t): -1 while x < c, else 0;
//   - member m -> topic t (m gives one up), if x > 0: +1 while x <= c, else 0;
//   - member m -> sink (m's load grows): big * (2*load+1);
//   - sink -> member m (m's load shrinks), if load > 0: -big * (2*load-1).
//
// The search is Bellman-Ford with a FIFO queue (SPFA) from a virtual source joined to every
// node at cost 0. Every V relaxations it checks the predecessor graph for cycles: any cycle
// there is a negative cycle (a standard property of label-correcting algorithms), and cycles
// in it are node-disjoint, hence share no arc and no variable, so all of them are cancelled
// at once.
func (f *flow) cancelNegativeCycles() bool {
	m := len(f.elig)
	sink := m + len(f.subs)
	v := sink + 1
	queue := f.queue[:0]
	for i := range v {
		f.dist[i], f.pred[i], f.queued[i] = 0, -1, true
		queue = append(queue, i)
	}
	relaxations := 0
	relax := func(u, w, k int, cost int64) {
		if d := f.dist[u] + cost; d < f.dist[w] {
			f.dist[w], f.pred[w], f.slot[w] = d, u, k
			relaxations++
			if !f.queued[w] {
				f.queued[w] = true
				queue = append(queue, w)
			}
		}
	}
	for head := 0; head < len(queue); head++ {
		u := queue[head]
		f.queued[u] = false
		switch {
		case u < m:
			for k, lt := range f.elig[u] {
				if x := f.x[u][k]; x > 0 {
					cost := int64(0)
					if x <= len(f.claimed[u][k]) {
						cost = 1
					}
					relax(u, m+lt, k, cost)
				}
			}
			relax(u, sink, -1, f.big*(2*int64(f.load[u])+1))
		case u < sink:
			for _, a := range f.subs[u-m] {
				cost := int64(0)
				if f.x[a.m][a.k] < len(f.claimed[a.m][a.k]) {
					cost = -1
				}
				relax(u, a.m, a.k, cost)
			}
		default:
			for lm, l := range f.load {
				if l > 0 {
					relax(sink, lm, -1, -f.big*(2*int64(l)-1))
				}
			}
		}
		if relaxations >= v {
			relaxations = 0
			if f.cancelPredCycles() {
				f.queue = queue
				return true
			}
		}
		// Compact the queue now and then so that it stays within O(V).
		if head >= v {
			queue = append(queue[:0], queue[head+1:]...)
			head = -1
		}
	}
	f.queue = queue
	return f.cancelPredCycles()
}

// cancelPredCycles cancels every cycle of the predecessor graph and reports whether there
// was one.
func (f *flow) cancelPredCycles() bool {
	for i := range f.mark {
		f.mark[i] = -1
	}
	found := false
	for start := range f.pred {
		v := start
		for v >= 0 && f.mark[v] < 0 {
			f.mark[v] = start
			v = f.pred[v]
		}
		if v >= 0 && f.mark[v] == start {
			cycle := []int{v}
			for u := f.pred[v]; u != v; u = f.pred[u] {
				cycle = append(cycle, u)
			}
			f.apply(cycle)
			found = true
		}
	}
	return found
}

// apply moves one unit along the cycle: for each node v, along its arc pred[v] -> v.
func (f *flow) apply(cycle []int) {
	m := len(f.elig)
	sink := m + len(f.subs)
	for _, v := range cycle {
		u := f.pred[v]
		switch {
		case u == sink: // sink -> member: load shrinks
			f.load[v]--
		case v == sink: // member -> sink: load grows
			f.load[u]++
		case u >= m: // topic -> member: member gets one more
			f.x[v][f.slot[v]]++
		default: // member -> topic: member gives one up
			f.x[u][f.slot[v]]--
		}
	}
}
