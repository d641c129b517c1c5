package assign

// Range is Kafka's RangeAssignor. Each topic is assigned on its own: the members subscribed
// to it, sorted by id, get contiguous ranges of its partitions in order, and the first
// (partitions mod members) of them get one partition more. Balance therefore holds per topic
// (max-min <= 1 among a topic's subscribers) but not across topics: with several topics the
// members that sort first can carry one extra partition of each. Range ignores
// Member.Current.
type Range struct{}

// Name returns "range".
func (Range) Name() string { return "range" }

// Assign implements Assignor.
func (Range) Assign(members []Member, partitions map[string]int32) map[string][]TopicPartition {
	g := normalize(members, partitions)
	out := g.result()
	// Topics are visited in sorted order and partitions ascending, so each member's slice is
	// built already sorted by (topic, partition).
	for t, subs := range g.subscribers() {
		if len(subs) == 0 {
			continue
		}
		n, m := int(g.counts[t]), len(subs)
		per, extra := n/m, n%m
		next := 0
		for i, mi := range subs {
			size := per
			if i < extra {
				size++
			}
			id := g.members[mi].id
			for p := next; p < next+size; p++ {
				out[id] = append(out[id], TopicPartition{Topic: g.topics[t], Partition: int32(p)})
			}
			next += size
		}
	}
	return out
}
