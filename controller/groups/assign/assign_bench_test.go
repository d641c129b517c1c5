package assign

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// benchGroup builds a group of m members over topics x perTopic partitions. With sub = 0
// every member subscribes to every topic; otherwise each subscribes to sub topics drawn
// with a fixed seed (so runs compare).
func benchGroup(m, topics, perTopic, sub int) ([]Member, map[string]int32) {
	partitions := make(map[string]int32, topics)
	names := make([]string, topics)
	for i := range names {
		names[i] = fmt.Sprintf("topic-%03d", i)
		partitions[names[i]] = int32(perTopic)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	members := make([]Member, m)
	for i := range members {
		members[i].ID = fmt.Sprintf("member-%04d", i)
		if sub == 0 {
			members[i].Topics = names
			continue
		}
		for _, j := range rng.Perm(topics)[:sub] {
			members[i].Topics = append(members[i].Topics, names[j])
		}
	}
	return members, partitions
}

// withCurrent returns members whose Current is a's assignment of them.
func withCurrent(a Assignor, members []Member, partitions map[string]int32) []Member {
	out := a.Assign(members, partitions)
	next := make([]Member, len(members))
	for i, m := range members {
		next[i] = Member{ID: m.ID, Topics: m.Topics, Current: out[m.ID]}
	}
	return next
}

// BenchmarkAssign measures 1000 members x 10,000 partitions (10 topics of 1000). Events:
// "initial" assigns with no current assignment; "join" adds a member to a group that holds
// the previous assignment; "leave" removes one; "double" adds 500 members to a group of 500
// that holds its assignment. subscriptions=same has every member on every
// topic; subscriptions=mixed has 100 topics of 100 partitions and each member on 10 of them.
// moved reports the partitions that changed owner.
func BenchmarkAssign(b *testing.B) {
	const members = 1000
	for _, subs := range []string{"same", "mixed"} {
		for _, name := range Names() {
			a, _ := Get(name)
			for _, event := range []string{"initial", "join", "leave", "double"} {
				b.Run(fmt.Sprintf("subscriptions=%s/assignor=%s/event=%s", subs, name, event), func(b *testing.B) {
					var group []Member
					var partitions map[string]int32
					if subs == "same" {
						group, partitions = benchGroup(members+1, 10, 1000, 0)
					} else {
						group, partitions = benchGroup(members+1, 100, 100, 10)
					}
					var in []Member
					switch event {
					case "initial":
						in = group[:members]
					case "join":
						in = append(withCurrent(a, group[:members], partitions), group[members])
					case "leave":
						in = withCurrent(a, group, partitions)[1:]
					case "double":
						in = append(withCurrent(a, group[:members/2], partitions), group[members/2:members]...)
					}
					var out map[string][]TopicPartition
					b.ReportAllocs()
					for b.Loop() {
						out = a.Assign(in, partitions)
					}
					moved := 0
					for _, m := range in {
						owned := map[TopicPartition]bool{}
						for _, p := range out[m.ID] {
							owned[p] = true
						}
						for _, p := range m.Current {
							if !owned[p] {
								moved++
							}
						}
					}
					lo, hi := loads(out)
					b.ReportMetric(float64(moved), "moved")
					b.ReportMetric(float64(hi-lo), "max-min")
				})
			}
		}
	}
}
