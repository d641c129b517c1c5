package fsm

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/hashicorp/raft"
)

// Business errors returned (as values) from Apply.
var (
	// ErrTopicExists: CreateTopic of a name that is taken.
	ErrTopicExists = errors.New("topic already exists")
	// ErrTopicNotFound: the command names a topic that does not exist.
	ErrTopicNotFound = errors.New("topic not found")
	// ErrPartitionNotFound: the command names a partition that does not exist.
	ErrPartitionNotFound = errors.New("partition not found")
	// ErrAgentNotFound: the command names an agent the controller never saw.
	ErrAgentNotFound = errors.New("agent not found")
)

// FSM implements raft.FSM over State.
//
// Concurrency: Apply, Restore and Snapshot are called by Raft's FSM
// goroutine; Read may be called from any goroutine. mu guards state: Apply and
// Restore hold it for writing, Read and Snapshot for reading.
type FSM struct {
	mu      sync.RWMutex
	state   *State
	changed chan struct{} // closed and replaced after every Apply and Restore
}

// New returns an FSM with empty state.
func New() *FSM { return &FSM{state: newState(), changed: make(chan struct{})} }

// Changed returns a channel that is closed at the next change of the state.
func (f *FSM) Changed() <-chan struct{} {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.changed
}

// notifyLocked wakes Changed waiters; f.mu is held for writing.
func (f *FSM) notifyLocked() {
	close(f.changed)
	f.changed = make(chan struct{})
}

// Read calls fn with the state under a read lock. fn must not keep references
// to the state or modify it.
func (f *FSM) Read(fn func(s *State)) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	fn(f.state)
}

// Apply applies one log entry. It returns the command's result: an error
// value for business errors, []SectionResult for CommitObject, nil otherwise.
func (f *FSM) Apply(l *raft.Log) any {
	if l.Type != raft.LogCommand {
		return nil
	}
	if len(l.Data) == 0 {
		panic(fmt.Sprintf("fsm: empty log entry at index %d", l.Index))
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.state.Index = l.Index
	defer f.notifyLocked()
	return f.state.apply(MessageType(l.Data[0]), l.Data[1:], l.Index)
}

func decode[T any](data []byte, index uint64) T {
	var cmd T
	if err := json.Unmarshal(data, &cmd); err != nil {
		panic(fmt.Sprintf("fsm: decode %T at index %d: %v", cmd, index, err))
	}
	return cmd
}

func (s *State) apply(t MessageType, data []byte, index uint64) any {
	switch t {
	case CreateTopicType:
		return s.createTopic(decode[CreateTopic](data, index))
	case DeleteTopicType:
		return s.deleteTopic(decode[DeleteTopic](data, index))
	case GrantLeasesType:
		return s.grantLeases(decode[GrantLeases](data, index))
	case CommitObjectType:
		return s.commitObject(decode[CommitObject](data, index))
	case ReleaseLeasesType:
		return s.releaseLeases(decode[ReleaseLeases](data, index))
	case SetDrainingType:
		c := decode[SetDraining](data, index)
		ag, ok := s.Agents[c.AgentID]
		if !ok {
			return fmt.Errorf("%w: %q", ErrAgentNotFound, c.AgentID)
		}
		ag.Draining = c.Draining
		return nil
	case ForceReleaseType:
		c := decode[ForceRelease](data, index)
		p := s.partition(c.Topic, c.Partition)
		if p == nil {
			return fmt.Errorf("%w: %s/%d", ErrPartitionNotFound, c.Topic, c.Partition)
		}
		prev := p.Holder
		p.Holder, p.Incarnation, p.ExpiresMs = "", "", 0
		return prev
	case AlterTopicType:
		c := decode[AlterTopic](data, index)
		t, ok := s.Topics[c.Name]
		if !ok {
			return fmt.Errorf("%w: %q", ErrTopicNotFound, c.Name)
		}
		if c.RetentionMs != nil {
			t.Config.RetentionMs = *c.RetentionMs
		}
		if c.RetentionBytes != nil {
			t.Config.RetentionBytes = *c.RetentionBytes
		}
		if c.MaxRecordBytes != nil {
			t.Config.MaxRecordBytes = *c.MaxRecordBytes
		}
		if c.MaxBatchBytes != nil {
			t.Config.MaxBatchBytes = *c.MaxBatchBytes
		}
		return nil
	case SetControllerType:
		c := decode[SetController](data, index)
		if c.APIAddress == "" {
			delete(s.Controllers, c.ID)
		} else {
			s.Controllers[c.ID] = c.APIAddress
		}
		return nil
	case GroupUpdateType:
		return s.groupUpdate(decode[GroupUpdate](data, index), index)
	case OffsetCommitType:
		return s.offsetCommit(decode[OffsetCommit](data, index))
	case DeleteGroupType:
		return s.deleteGroup(decode[DeleteGroup](data, index))
	default:
		panic(fmt.Sprintf("fsm: unknown message type %d at index %d", t, index))
	}
}

func (s *State) createTopic(c CreateTopic) any {
	if _, ok := s.Topics[c.Name]; ok {
		return fmt.Errorf("%w: %q", ErrTopicExists, c.Name)
	}
	t := &Topic{Name: c.Name, Config: c.Config, CreatedMs: c.NowMs}
	for i := int32(0); i < c.Config.Partitions; i++ {
		t.Partitions = append(t.Partitions, &Partition{})
	}
	s.Topics[c.Name] = t
	return nil
}

func (s *State) deleteTopic(c DeleteTopic) any {
	if _, ok := s.Topics[c.Name]; !ok {
		return fmt.Errorf("%w: %q", ErrTopicNotFound, c.Name)
	}
	delete(s.Topics, c.Name)
	return nil
}

// partition returns the named partition or nil.
func (s *State) partition(topic string, partition int32) *Partition {
	t, ok := s.Topics[topic]
	if !ok || partition < 0 || int(partition) >= len(t.Partitions) {
		return nil
	}
	return t.Partitions[partition]
}

func (s *State) grantLeases(c GrantLeases) any {
	draining := false
	if old, ok := s.Agents[c.AgentID]; ok {
		draining = old.Draining
	}
	s.Agents[c.AgentID] = &Agent{ID: c.AgentID, Address: c.Address, Zone: c.Zone, Incarnation: c.Incarnation, Draining: draining}
	for _, ref := range c.Partitions {
		p := s.partition(ref.Topic, ref.Partition)
		if p == nil {
			continue // deleted since the leader decided
		}
		switch {
		case p.Holder == c.AgentID && p.Incarnation == c.Incarnation:
			// Renewal: same holder, same process, same epoch.
		case p.Holder == c.AgentID || !p.LeaseValid(c.NowMs):
			// A restarted holder, or a free or lapsed lease: new epoch.
			p.Holder, p.Incarnation = c.AgentID, c.Incarnation
			p.Epoch++
		default:
			continue // another agent holds a valid lease
		}
		p.ExpiresMs = c.ExpiresMs
	}
	return nil
}

// releaseLeases returns the number of leases released. No partitions listed
// means every lease of the agent process.
func (s *State) releaseLeases(c ReleaseLeases) any {
	released := 0
	release := func(p *Partition) {
		if p == nil || p.Holder != c.AgentID || p.Incarnation != c.Incarnation {
			return
		}
		p.Holder, p.Incarnation, p.ExpiresMs = "", "", 0
		released++
	}
	if len(c.Partitions) == 0 {
		for _, name := range s.TopicNames() {
			for _, p := range s.Topics[name].Partitions {
				release(p)
			}
		}
	}
	for _, ref := range c.Partitions {
		release(s.partition(ref.Topic, ref.Partition))
	}
	return released
}

func (s *State) commitObject(c CommitObject) any {
	results := make([]SectionResult, len(c.Sections))
	for i, cs := range c.Sections {
		p := s.partition(cs.Topic, cs.Partition)
		r := &results[i]
		sec := cs.Section
		sec.Key = c.Key
		switch {
		case p == nil:
			r.Error = fmt.Sprintf("partition %s/%d does not exist", cs.Topic, cs.Partition)
			r.Fenced = true
			continue
		case p.Holder != c.AgentID || p.Epoch != sec.Epoch:
			r.Error = fmt.Sprintf("fenced: partition %s/%d is at epoch %d held by %q, commit has epoch %d from %q",
				cs.Topic, cs.Partition, p.Epoch, p.Holder, sec.Epoch, c.AgentID)
			r.Fenced = true
		case sec.BaseOffset != p.CommittedEnd:
			r.Error = fmt.Sprintf("not contiguous: partition %s/%d committed end is %d, section starts at %d",
				cs.Topic, cs.Partition, p.CommittedEnd, sec.BaseOffset)
		case sec.EndOffset <= sec.BaseOffset:
			r.Error = fmt.Sprintf("empty section [%d, %d)", sec.BaseOffset, sec.EndOffset)
		default:
			p.Sections = append(p.Sections, sec)
			p.CommittedEnd = sec.EndOffset
			r.Committed = true
		}
		r.CommittedEnd = p.CommittedEnd
	}
	return results
}

// Snapshot captures the state. It encodes under the read lock so Persist can
// run concurrently with later Apply calls.
func (f *FSM) Snapshot() (raft.FSMSnapshot, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	data, err := json.Marshal(f.state)
	if err != nil {
		return nil, fmt.Errorf("snapshot state: %w", err)
	}
	return snapshot(data), nil
}

// Restore replaces the state with a snapshot's: it decodes into a new State
// and swaps it in.
func (f *FSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	s := newState()
	if err := json.NewDecoder(rc).Decode(s); err != nil {
		return fmt.Errorf("restore snapshot: %w", err)
	}
	if s.Topics == nil {
		s.Topics = map[string]*Topic{}
	}
	if s.Agents == nil {
		s.Agents = map[string]*Agent{}
	}
	if s.Controllers == nil {
		s.Controllers = map[string]string{}
	}
	if s.Groups == nil {
		s.Groups = map[string]*Group{}
	}
	f.mu.Lock()
	f.state = s
	f.notifyLocked()
	f.mu.Unlock()
	return nil
}

type snapshot []byte

func (s snapshot) Persist(sink raft.SnapshotSink) error {
	if _, err := sink.Write(s); err != nil {
		_ = sink.Cancel()
		return fmt.Errorf("persist snapshot: %w", err)
	}
	return sink.Close()
}

func (s snapshot) Release() {}
