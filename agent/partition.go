package agent

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/streamhouse/streamhouse/agent/wal"
	v1 "github.com/streamhouse/streamhouse/api/gen/streamhouse/v1"
)

// partition is the agent's state for one partition it holds.
//
// appendMu orders offset assignment with the WAL enqueue, so a partition's
// frames reach the WAL in offset order. mu guards everything else; appendMu
// may be held while taking mu, never the reverse.
type partition struct {
	key partKey

	appendMu   sync.Mutex
	nextOffset int64 // next offset to assign (appendMu)

	mu           sync.Mutex
	topic        *v1.TopicInfo
	epoch        int64
	leaseUntil   time.Time // monotonic: stop writing at this instant
	walEnd       int64     // fsynced end offset
	committedEnd int64     // end of what the controller committed
	uploadedEnd  int64     // end of what the uploader has handed to the store (uploader only)
	startOffset  int64
	// epochStart is where this holder's own data begins: nothing it serves
	// below it can differ from what earlier holders served, while a reader
	// who read an earlier epoch past it read records that were lost.
	epochStart int64
	err        error         // set when the partition is lost; waiters get it
	changed    chan struct{} // closed and replaced when walEnd, committedEnd or err change
	// flushWaiters are sampled durable appends waiting for a flush; the
	// flush that carries them joins their traces (see trace.go).
	flushWaiters []flushWaiter
}

func newPartition(key partKey, l *v1.Lease, walEnd int64) *partition {
	return &partition{
		key: key, topic: l.GetTopic(), epoch: l.GetEpoch(),
		nextOffset: walEnd, walEnd: walEnd, committedEnd: l.GetCommittedEndOffset(), epochStart: walEnd,
		uploadedEnd: l.GetCommittedEndOffset(), startOffset: l.GetStartOffset(),
		changed: make(chan struct{}),
	}
}

func (p *partition) notifyLocked() {
	close(p.changed)
	p.changed = make(chan struct{})
}

// durable reports whether the topic's visibility is the committed end.
func (p *partition) durable() bool {
	return p.topic.GetDurability() != v1.Durability_DURABILITY_WAL
}

// highWatermarkLocked is the offset consumers may read up to.
func (p *partition) highWatermarkLocked() int64 {
	if p.durable() {
		return p.committedEnd
	}
	return max(p.walEnd, p.committedEnd)
}

func (p *partition) advanceWALEnd(end int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if end > p.walEnd {
		p.walEnd = end
		p.notifyLocked()
	}
}

func (p *partition) advanceCommitted(end int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if end > p.committedEnd {
		p.committedEnd = end
		p.notifyLocked()
	}
}

// fail marks the partition lost; every waiter returns err.
// failure returns the error the partition was lost with, or nil.
func (p *partition) failure() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}

// corrupt reports whether the partition was given up for an unreadable WAL
// frame (and may still hold its lease: see Agent.dropCorrupt).
func (p *partition) corrupt() bool {
	return errors.Is(p.failure(), wal.ErrCorrupt)
}

func (p *partition) fail(err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.err == nil {
		p.err = err
		p.notifyLocked()
	}
}

// waitFor blocks until cond (called under p.mu) is true, the partition is
// lost, or ctx is done.
func (p *partition) waitFor(ctx context.Context, cond func() bool) error {
	for {
		p.mu.Lock()
		if cond() {
			p.mu.Unlock()
			return nil
		}
		if p.err != nil {
			err := p.err
			p.mu.Unlock()
			return err
		}
		ch := p.changed
		p.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
