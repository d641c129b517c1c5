// Package assign computes consumer-group target assignments: which member of a group owns
// which partition of the topics the members subscribe to.
//
// Three assignors follow Kafka's semantics (a group picks one by name, Default otherwise):
//
//   - "range" (Kafka's RangeAssignor): per topic, the members subscribed to it are sorted by
//     id and each gets a contiguous range of partitions; the first (partitions mod members)
//     members get one more.
//   - "roundrobin" (Kafka's RoundRobinAssignor): all subscribed partitions, sorted by
//     (topic, partition), are dealt in turn over the members sorted by id, skipping members
//     that do not subscribe to the partition's topic.
//   - "uniform" (KIP-848's uniform assignor): balanced and sticky. The load vector (partitions
//     per member) is as even as eligibility allows: it minimises the sum of squared loads,
//     which for members with identical subscriptions means max-min <= 1, and in general means
//     that no chain of moves between eligible members can take a partition from a member
//     with L partitions to one with L-2 or fewer. Among all such balanced assignments it
//     moves the fewest partitions away from the members in Member.Current.
//
// Assignors are pure functions of their inputs: no clocks, no randomness, no dependence on
// the order of members, topics or current partitions, so every controller replaying the
// same inputs computes the same assignment.
package assign

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
)

// TopicPartition names one partition of a topic.
type TopicPartition struct {
	Topic     string `json:"topic"`
	Partition int32  `json:"partition"`
}

// String renders the partition as topic/partition, for logs and test failures.
func (tp TopicPartition) String() string { return fmt.Sprintf("%s/%d", tp.Topic, tp.Partition) }

// Compare orders partitions by topic, then partition number: the order of every slice an
// assignor returns.
func Compare(a, b TopicPartition) int {
	if c := strings.Compare(a.Topic, b.Topic); c != 0 {
		return c
	}
	return cmp.Compare(a.Partition, b.Partition)
}

// Member is one group member as an assignor sees it.
type Member struct {
	ID     string   // unique member id
	Topics []string // topics it subscribes to (already resolved from a regex), any order
	// Current is the member's current target assignment (what it owns or is being given);
	// sticky assignors keep as much of it as balance allows.
	Current []TopicPartition
}

// Assignor computes a group's target assignment.
type Assignor interface {
	// Name is the name a group selects the assignor by ("range", "roundrobin", "uniform").
	Name() string
	// Assign returns, for every member ID, its partitions sorted by (topic, partition).
	// partitions gives each topic's partition count; subscribed topics missing from it are
	// ignored. Every member appears in the result (possibly with no partitions). The result
	// depends only on the inputs, not on the order of members or of their topic lists.
	Assign(members []Member, partitions map[string]int32) map[string][]TopicPartition
}

// Default is the assignor name used when a group does not choose one: "uniform".
const Default = "uniform"

// assignors is the registry Get and Names read; every entry is stateless.
var assignors = map[string]Assignor{
	Range{}.Name():      Range{},
	RoundRobin{}.Name(): RoundRobin{},
	Uniform{}.Name():    Uniform{},
}

// Get returns the assignor with that name, or an error naming the valid ones.
func Get(name string) (Assignor, error) {
	if a, ok := assignors[name]; ok {
		return a, nil
	}
	return nil, fmt.Errorf("unknown assignor %q: valid assignors are %s", name, strings.Join(Names(), ", "))
}

// Names lists the valid assignor names, sorted.
func Names() []string {
	names := make([]string, 0, len(assignors))
	for n := range assignors {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// member is a Member in canonical form: the order-independent view every assignor works on.
type member struct {
	id string
	// topics holds the indexes (into group.topics) of the subscribed topics that exist with
	// at least one partition, ascending and without duplicates.
	topics []int
	// current is Member.Current without duplicates, sorted.
	current []TopicPartition
}

// group is the canonical input of an assignment.
type group struct {
	members []member // sorted by id, ids unique
	topics  []string // subscribed topics that exist with >= 1 partition, sorted
	counts  []int32  // counts[t] is the partition count of topics[t]
	index   map[string]int
}

// normalize puts the input in canonical form so that no assignor depends on input order.
// Members that repeat an id are merged (union of their topics and current partitions): ids
// are meant to be unique, and merging keeps the result order-independent if they are not.
// Subscribed topics absent from partitions, or with a count <= 0, are dropped.
func normalize(members []Member, partitions map[string]int32) *group {
	byID := make(map[string]*Member, len(members))
	ids := make([]string, 0, len(members))
	for i := range members {
		m := &members[i]
		if prev, ok := byID[m.ID]; ok {
			merged := Member{
				ID:      m.ID,
				Topics:  append(slices.Clone(prev.Topics), m.Topics...),
				Current: append(slices.Clone(prev.Current), m.Current...),
			}
			byID[m.ID] = &merged
			continue
		}
		byID[m.ID] = m
		ids = append(ids, m.ID)
	}
	slices.Sort(ids)

	g := &group{index: make(map[string]int)}
	for _, id := range ids {
		for _, t := range byID[id].Topics {
			if n, ok := partitions[t]; ok && n > 0 {
				g.index[t] = -1
			}
		}
	}
	for t := range g.index {
		g.topics = append(g.topics, t)
	}
	slices.Sort(g.topics)
	g.counts = make([]int32, len(g.topics))
	for i, t := range g.topics {
		g.index[t] = i
		g.counts[i] = partitions[t]
	}

	g.members = make([]member, len(ids))
	for i, id := range ids {
		m := byID[id]
		ts := make([]int, 0, len(m.Topics))
		for _, t := range m.Topics {
			if ti, ok := g.index[t]; ok {
				ts = append(ts, ti)
			}
		}
		slices.Sort(ts)
		cur := slices.Clone(m.Current)
		slices.SortFunc(cur, Compare)
		g.members[i] = member{id: id, topics: slices.Compact(ts), current: slices.Compact(cur)}
	}
	return g
}

// result returns the empty assignment of g: every member present with a non-nil, empty slice
// (so a member without partitions encodes as [] rather than null).
func (g *group) result() map[string][]TopicPartition {
	out := make(map[string][]TopicPartition, len(g.members))
	for _, m := range g.members {
		out[m.id] = []TopicPartition{}
	}
	return out
}

// subscribers returns, per topic index, the indexes of the members subscribed to it, in id
// order.
func (g *group) subscribers() [][]int {
	subs := make([][]int, len(g.topics))
	for mi, m := range g.members {
		for _, t := range m.topics {
			subs[t] = append(subs[t], mi)
		}
	}
	return subs
}
