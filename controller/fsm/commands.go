package fsm

import (
	"encoding/json"
	"fmt"
)

// MessageType tags each Raft log entry. New types go at the end; existing
// values never change meaning.
type MessageType uint8

const (
	// CreateTopicType creates a topic (CreateTopic).
	CreateTopicType MessageType = 1
	// DeleteTopicType deletes a topic (DeleteTopic).
	DeleteTopicType MessageType = 2
	// GrantLeasesType grants or renews an agent's leases (GrantLeases).
	GrantLeasesType MessageType = 3
	// CommitObjectType adds an object's sections to the index (CommitObject).
	CommitObjectType MessageType = 4
	// ReleaseLeasesType gives up an agent's leases (ReleaseLeases).
	ReleaseLeasesType MessageType = 5
	// SetControllerType records a controller's API address (SetController).
	SetControllerType MessageType = 6
	// SetDrainingType marks an agent draining or not (SetDraining).
	SetDrainingType MessageType = 7
	// ForceReleaseType takes a partition's lease away (ForceRelease).
	ForceReleaseType MessageType = 8
	// AlterTopicType changes a topic's settings (AlterTopic).
	AlterTopicType MessageType = 9
	// GroupUpdateType replaces a consumer group's coordinator state,
	// compare-and-set on its version (GroupUpdate).
	GroupUpdateType MessageType = 10
	// OffsetCommitType stores a group's offsets, fenced by member epoch
	// (OffsetCommit).
	OffsetCommitType MessageType = 11
	// DeleteGroupType deletes a group without members (DeleteGroup).
	DeleteGroupType MessageType = 12
)

// SetDraining marks an agent draining: it gets no new partitions, and its
// heartbeats are told to hand over the ones it has.
type SetDraining struct {
	AgentID  string `json:"agent_id"`
	Draining bool   `json:"draining"`
}

// ForceRelease takes a partition's lease from its holder at once.
type ForceRelease struct {
	Topic     string `json:"topic"`
	Partition int32  `json:"partition"`
}

// AlterTopic replaces the settings of a topic that may change; nil fields
// keep their value.
type AlterTopic struct {
	Name           string `json:"name"`
	RetentionMs    *int64 `json:"retention_ms,omitempty"`
	RetentionBytes *int64 `json:"retention_bytes,omitempty"`
	MaxRecordBytes *int32 `json:"max_record_bytes,omitempty"`
	MaxBatchBytes  *int32 `json:"max_batch_bytes,omitempty"`
}

// SetController records (or, with an empty APIAddress, removes) the API
// address of the controller with Raft id ID.
type SetController struct {
	ID         string `json:"id"`
	APIAddress string `json:"api_address"`
}

// CreateTopic creates a topic with all partitions empty and unleased.
type CreateTopic struct {
	Name   string      `json:"name"`
	Config TopicConfig `json:"config"`
	NowMs  int64       `json:"now_ms"`
}

// DeleteTopic deletes a topic and forgets its index.
type DeleteTopic struct {
	Name string `json:"name"`
}

// PartitionRef names one partition.
type PartitionRef struct {
	Topic     string `json:"topic"`
	Partition int32  `json:"partition"`
}

// GrantLeases grants the listed partitions to an agent, or renews them when
// it already holds them. A partition held by another agent whose lease is
// still valid at NowMs is skipped. A grant to a new holder, or to the same
// holder with a new incarnation, bumps the epoch.
type GrantLeases struct {
	AgentID     string         `json:"agent_id"`
	Incarnation string         `json:"incarnation"`
	Address     string         `json:"address"`
	Zone        string         `json:"zone,omitempty"`
	NowMs       int64          `json:"now_ms"`
	ExpiresMs   int64          `json:"expires_ms"`
	Partitions  []PartitionRef `json:"partitions"`
}

// ReleaseLeases gives up the listed leases of an agent incarnation at once
// (graceful shutdown), so another agent can take them without waiting.
type ReleaseLeases struct {
	AgentID     string         `json:"agent_id"`
	Incarnation string         `json:"incarnation"`
	Partitions  []PartitionRef `json:"partitions"`
}

// CommitSection is one section of a CommitObject.
type CommitSection struct {
	Topic     string  `json:"topic"`
	Partition int32   `json:"partition"`
	Section   Section `json:"section"`
}

// CommitObject adds the sections of one uploaded object to the index.
type CommitObject struct {
	AgentID  string          `json:"agent_id"`
	Key      string          `json:"key"`
	Sections []CommitSection `json:"sections"`
}

// SectionResult is the outcome of one CommitSection.
type SectionResult struct {
	Committed    bool   `json:"committed"`
	Fenced       bool   `json:"fenced"`
	CommittedEnd int64  `json:"committed_end"`
	Error        string `json:"error,omitempty"`
}

// Encode turns a command into a Raft log entry: the type byte, then JSON.
func Encode(t MessageType, cmd any) ([]byte, error) {
	body, err := json.Marshal(cmd)
	if err != nil {
		return nil, fmt.Errorf("encode command %d: %w", t, err)
	}
	return append([]byte{byte(t)}, body...), nil
}
