// Package checker records what concurrent producers were told and what
// consumers read, and proves the log kept its promises:
//
//   - every acknowledged record is present exactly once, at the offset its
//     acknowledgement named;
//   - per partition, each producer's acknowledged records appear in the order
//     they were acknowledged;
//   - offsets are dense: each partition reads back as 0, 1, 2, ... with no gap;
//   - no record appears twice, acknowledged or not (an unacknowledged record
//     may be missing or present once: its outcome was unknown).
//
// Records are identified by their value, which the producer makes unique.
package checker

import (
	"fmt"
	"sort"
	"strings"
	"sync"
)

// Ack is one acknowledged record.
type Ack struct {
	Producer  int
	Seq       int // the producer's sequence number; acks of a producer come in Seq order per partition
	Value     string
	Partition int32
	Offset    int64
}

// Read is one record read back.
type Read struct {
	Partition int32
	Offset    int64
	Value     string
}

// History is safe for concurrent use by producers.
type History struct {
	mu      sync.Mutex
	acks    []Ack
	unknown map[string]bool // sent, outcome unknown (error)
}

// NewHistory returns an empty history.
func NewHistory() *History { return &History{unknown: map[string]bool{}} }

// Acked records an acknowledged record.
func (h *History) Acked(a Ack) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.acks = append(h.acks, a)
}

// Failed records a record whose produce returned an error: it may or may
// not have been written.
func (h *History) Failed(value string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.unknown[value] = true
}

// Counts returns how many records were acknowledged and how many failed.
func (h *History) Counts() (acked, failed int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.acks), len(h.unknown)
}

// Result summarises a check.
type Result struct {
	Acked, Failed, Read int
	FailedPresent       int // failed records that were written after all
	Violations          []string
	PartitionEnds       map[int32]int64
}

// Err returns the violations as one error, or nil.
func (r Result) Err() error {
	if len(r.Violations) == 0 {
		return nil
	}
	v := r.Violations
	more := ""
	if len(v) > 20 {
		more = fmt.Sprintf("\n... and %d more", len(v)-20)
		v = v[:20]
	}
	return fmt.Errorf("%d violations:\n%s%s", len(r.Violations), strings.Join(v, "\n"), more)
}

// Check compares the history with everything read back, partition by
// partition from offset 0.
func (h *History) Check(reads []Read) Result {
	h.mu.Lock()
	defer h.mu.Unlock()
	res := Result{Acked: len(h.acks), Failed: len(h.unknown), Read: len(reads), PartitionEnds: map[int32]int64{}}
	bad := func(format string, args ...any) {
		res.Violations = append(res.Violations, fmt.Sprintf(format, args...))
	}

	byPart := map[int32][]Read{}
	for _, r := range reads {
		byPart[r.Partition] = append(byPart[r.Partition], r)
	}
	type loc struct {
		partition int32
		offset    int64
	}
	seen := map[string][]loc{}
	for p, rs := range byPart {
		for i, r := range rs {
			if r.Offset != int64(i) {
				bad("partition %d: read #%d has offset %d; offsets must be dense from 0", p, i, r.Offset)
				break
			}
		}
		for _, r := range rs {
			seen[r.Value] = append(seen[r.Value], loc{p, r.Offset})
		}
		res.PartitionEnds[p] = int64(len(rs))
	}
	for v, locs := range seen {
		if len(locs) > 1 {
			bad("record %q appears %d times: %v", v, len(locs), locs)
		}
	}
	acked := map[string]bool{}
	for _, a := range h.acks {
		acked[a.Value] = true
		locs := seen[a.Value]
		switch {
		case len(locs) == 0:
			bad("acknowledged record %q (partition %d offset %d) is lost", a.Value, a.Partition, a.Offset)
		case locs[0].partition != a.Partition || locs[0].offset != a.Offset:
			bad("acknowledged record %q was acked at %d/%d but is at %d/%d", a.Value, a.Partition, a.Offset, locs[0].partition, locs[0].offset)
		}
	}
	// Ack order per producer and partition matches offset order.
	type pp struct {
		producer  int
		partition int32
	}
	order := map[pp][]Ack{}
	for _, a := range h.acks {
		order[pp{a.Producer, a.Partition}] = append(order[pp{a.Producer, a.Partition}], a)
	}
	for k, as := range order {
		sort.Slice(as, func(i, j int) bool { return as[i].Seq < as[j].Seq })
		for i := 1; i < len(as); i++ {
			if as[i].Offset <= as[i-1].Offset {
				bad("producer %d partition %d: seq %d acked at offset %d, after seq %d at offset %d", k.producer, k.partition, as[i].Seq, as[i].Offset, as[i-1].Seq, as[i-1].Offset)
			}
		}
	}
	for v := range h.unknown {
		if acked[v] {
			continue
		}
		if len(seen[v]) == 1 {
			res.FailedPresent++
		}
	}
	for v := range seen {
		if !acked[v] && !h.unknown[v] {
			bad("record %q was read but never sent", v)
		}
	}
	return res
}
