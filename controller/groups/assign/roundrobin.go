package assign

// RoundRobin is Kafka's RoundRobinAssignor. All partitions of the subscribed topics, sorted
// by (topic, partition), are dealt one at a time over the members sorted by id; a member
// that does not subscribe to a partition's topic is skipped for that partition. With
// identical subscriptions the result is balanced overall (max-min <= 1); with different
// subscriptions it is not necessarily (Kafka's documented behaviour). RoundRobin ignores
// Member.Current.
type RoundRobin struct{}

// Name returns "roundrobin".
func (RoundRobin) Name() string { return "roundrobin" }

// Assign implements Assignor.
func (RoundRobin) Assign(members []Member, partitions map[string]int32) map[string][]TopicPartition {
	g := normalize(members, partitions)
	out := g.result()
	if len(g.members) == 0 {
		return out
	}
	// subscribed[mi][t] answers "does member mi subscribe to topic t" in O(1).
	subscribed := make([][]bool, len(g.members))
	for mi, m := range g.members {
		subscribed[mi] = make([]bool, len(g.topics))
		for _, t := range m.topics {
			subscribed[mi][t] = true
		}
	}
	// Every topic in g.topics has at least one subscriber, so the skip loop ends. Partitions
	// are dealt in sorted order, so each member's slice is built already sorted.
	next := 0
	for t, topic := range g.topics {
		for p := int32(0); p < g.counts[t]; p++ {
			for !subscribed[next][t] {
				next = (next + 1) % len(g.members)
			}
			id := g.members[next].id
			out[id] = append(out[id], TopicPartition{Topic: topic, Partition: p})
			next = (next + 1) % len(g.members)
		}
	}
	return out
}
