// Package fsm is the controller's replicated state machine: topics,
// partitions, partition leases with epochs, the object index and each
// partition's committed end offset.
//
// Every Raft log entry is one command: a type byte (MessageType) followed by
// the command encoded as JSON. Apply is deterministic: it reads no clock and
// no randomness; the leader stamps the time into the commands that need it.
// Business errors (a topic that exists, a stale epoch) are returned as values
// in the command's result; an entry that cannot be decoded or has an unknown
// type panics, because replicas that diverge are worse than a crash.
package fsm

import (
	"sort"
)

// TopicConfig is a topic's settings as stored in the FSM.
type TopicConfig struct {
	Partitions     int32 `json:"partitions"`
	Durability     int32 `json:"durability"` // streamhousev1.Durability value
	RetentionMs    int64 `json:"retention_ms"`
	RetentionBytes int64 `json:"retention_bytes"`
	MaxRecordBytes int32 `json:"max_record_bytes"`
	MaxBatchBytes  int32 `json:"max_batch_bytes"`
}

// Topic is one topic and its partitions.
type Topic struct {
	Name       string       `json:"name"`
	Config     TopicConfig  `json:"config"`
	CreatedMs  int64        `json:"created_ms"`
	Partitions []*Partition `json:"partitions"`
}

// Partition is one partition's lease and committed log.
type Partition struct {
	// Holder is the agent holding the write lease; empty when none does.
	Holder string `json:"holder,omitempty"`
	// Incarnation is the holder process's random id; a new one bumps Epoch.
	Incarnation string `json:"incarnation,omitempty"`
	// Epoch grows with every grant to a new holder or incarnation. Commits
	// carry it; a commit with another epoch is fenced.
	Epoch int64 `json:"epoch"`
	// ExpiresMs is when the lease lapses, on the leader's clock as stamped in
	// the grant entry.
	ExpiresMs int64 `json:"expires_ms"`
	// StartOffset is the first readable offset.
	StartOffset int64 `json:"start_offset"`
	// CommittedEnd is the end offset of the object index: the next commit
	// must start exactly here (offsets are dense).
	CommittedEnd int64 `json:"committed_end"`
	// Sections is the object index, ordered by offset and contiguous.
	Sections []Section `json:"sections,omitempty"`
}

// Section is one committed run of a partition's batches inside an object.
type Section struct {
	Key            string `json:"key"`
	Epoch          int64  `json:"epoch"`
	BaseOffset     int64  `json:"base"`
	EndOffset      int64  `json:"end"`
	Position       int64  `json:"pos"`
	Length         int64  `json:"len"`
	MaxTimestampMs int64  `json:"max_ts"`
}

// Agent is what the FSM remembers about an agent that has held leases.
type Agent struct {
	ID          string `json:"id"`
	Address     string `json:"address"`
	Zone        string `json:"zone,omitempty"`
	Incarnation string `json:"incarnation"`
	// Draining agents get no new partitions and hand over the ones they hold.
	Draining bool `json:"draining,omitempty"`
}

// State is the whole replicated state. It is only mutated by Apply.
type State struct {
	Topics map[string]*Topic `json:"topics"`
	Agents map[string]*Agent `json:"agents"`
	// Controllers maps a controller's Raft id to its API address, so any
	// node can forward to the leader.
	Controllers map[string]string `json:"controllers,omitempty"`
	// Groups are the consumer groups: coordinator state, offsets and
	// assignment history.
	Groups map[string]*Group `json:"groups,omitempty"`
	// Index is the Raft index of the last applied entry.
	Index uint64 `json:"index"`
}

func newState() *State {
	return &State{Topics: map[string]*Topic{}, Agents: map[string]*Agent{}, Controllers: map[string]string{}, Groups: map[string]*Group{}}
}

// TopicNames returns the topic names in sorted order.
func (s *State) TopicNames() []string {
	names := make([]string, 0, len(s.Topics))
	for n := range s.Topics {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Lookup returns up to max sections of p that hold offset or come after it.
func (p *Partition) Lookup(offset int64, max int) []Section {
	i := sort.Search(len(p.Sections), func(i int) bool { return p.Sections[i].EndOffset > offset })
	end := i + max
	if end > len(p.Sections) {
		end = len(p.Sections)
	}
	out := make([]Section, end-i)
	copy(out, p.Sections[i:end])
	return out
}

// LeaseValid reports whether p's lease is held and unexpired at nowMs.
func (p *Partition) LeaseValid(nowMs int64) bool {
	return p.Holder != "" && p.ExpiresMs > nowMs
}

// Leader returns the agent holding p's lease at nowMs, its address and the
// lease epoch; all zero when no valid lease exists.
func (s *State) Leader(p *Partition, nowMs int64) (agentID, address string, epoch int64) {
	if !p.LeaseValid(nowMs) {
		return "", "", 0
	}
	if ag, ok := s.Agents[p.Holder]; ok {
		address = ag.Address
	}
	return p.Holder, address, p.Epoch
}
