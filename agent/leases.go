package agent

import (
	"context"
	"errors"
	"fmt"
	"time"

	"connectrpc.com/connect"

	"github.com/streamhouse/streamhouse/agent/wal"
	v1 "github.com/streamhouse/streamhouse/api/gen/streamhouse/v1"
)

var errLeaseLost = errors.New("the agent lost the partition's lease before the records were committed; they may or may not become visible")

func (a *Agent) heartbeatLoop() {
	defer a.wg.Done()
	t := time.NewTicker(a.cfg.HeartbeatInterval)
	defer t.Stop()
	failing := false
	for {
		select {
		case <-a.ctx.Done():
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(a.ctx, 2*a.cfg.HeartbeatInterval+time.Second)
		err := a.heartbeat(ctx, false)
		cancel()
		switch {
		case err != nil && !failing && a.ctx.Err() == nil:
			a.log.Warn("heartbeat failed; leases lapse if this goes on", "err", err)
			failing = true
		case err == nil && failing:
			a.log.Info("heartbeat recovered")
			failing = false
		}
	}
}

// refreshLeases runs a heartbeat unless one was sent after the call began;
// Append uses it when asked for a partition it does not know yet (a topic
// just created), so the first produce does not wait for the next tick.
func (a *Agent) refreshLeases(ctx context.Context) error {
	asked := time.Now()
	a.hbMu.Lock()
	fresh := a.lastHB.After(asked)
	a.hbMu.Unlock()
	if fresh {
		return nil
	}
	return a.heartbeat(ctx, false)
}

// heartbeat renews every lease in one call and reconciles the partitions the
// agent holds with the controller's answer. initial is the first heartbeat
// after Open: WAL data of partitions not granted is then forgotten.
func (a *Agent) heartbeat(ctx context.Context, initial bool) error {
	a.hbMu.Lock()
	defer a.hbMu.Unlock()
	req := &v1.HeartbeatRequest{AgentId: a.cfg.ID, Incarnation: a.incarnation, Address: a.cfg.Address, Zone: a.cfg.Zone}
	a.mu.RLock()
	for k, p := range a.parts {
		p.mu.Lock()
		req.Progress = append(req.Progress, &v1.PartitionProgress{Topic: k.topic, Partition: k.partition, Epoch: p.epoch, WalEndOffset: p.walEnd})
		p.mu.Unlock()
	}
	a.mu.RUnlock()

	sent := time.Now()
	resp, err := a.cfg.Controller.Heartbeat(ctx, connect.NewRequest(req))
	if err != nil {
		return fmt.Errorf("heartbeat: %w", err)
	}
	until := sent.Add(time.Duration(resp.Msg.GetLeaseDurationMs())*time.Millisecond - a.cfg.LeaseSafetyMargin)

	var walParts map[partKey]wal.PartitionState
	granted := map[partKey]bool{}
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, l := range resp.Msg.GetLeases() {
		k := partKey{l.GetTopic().GetName(), l.GetPartition()}
		granted[k] = true
		p := a.parts[k]
		if p != nil {
			p.mu.Lock()
			if p.epoch != l.GetEpoch() && p.committedEnd != l.GetCommittedEndOffset() {
				// Someone else wrote the partition while we were not looking:
				// our state is stale. Start over from the committed end.
				p.mu.Unlock()
				a.dropLocked(k, p, fmt.Errorf("partition %s moved to epoch %d with a committed end we did not write", k, l.GetEpoch()))
				p = nil
			} else {
				if p.epoch != l.GetEpoch() {
					// Same data, new epoch: readers of the old one are not
					// truncated anywhere below what we have assigned so far.
					p.mu.Unlock()
					p.appendMu.Lock() // lock order: appendMu before mu
					p.mu.Lock()
					p.epochStart = max(p.epochStart, p.nextOffset)
					p.appendMu.Unlock()
				}
				p.epoch, p.topic, p.startOffset, p.leaseUntil = l.GetEpoch(), l.GetTopic(), l.GetStartOffset(), until
				p.mu.Unlock()
			}
		}
		if p == nil {
			if walParts == nil {
				walParts = map[partKey]wal.PartitionState{}
				for _, ps := range a.wal.Partitions() {
					walParts[partKey{ps.Topic, ps.Partition}] = ps
				}
			}
			p = a.adopt(k, l, walParts[k])
			p.leaseUntil = until
			a.parts[k] = p
		}
	}
	for k, p := range a.parts {
		if granted[k] {
			continue
		}
		p.mu.Lock()
		settled := p.committedEnd >= p.walEnd
		p.mu.Unlock()
		if settled {
			// Nothing uncommitted is lost (the topic was deleted, or the
			// partition moved after its last commit): the reason says so
			// rather than warn of a loss that did not happen. An append
			// racing this still fails with errLeaseLost, true for it.
			a.log.Warn("dropped partition", "partition", k.String(),
				"reason", "the partition's lease ended (it moved, or its topic was deleted); everything the agent held of it was committed")
			a.forgetLocked(k, p, errLeaseLost)
			continue
		}
		a.dropLocked(k, p, errLeaseLost)
	}
	if initial {
		for _, ps := range a.wal.Partitions() {
			k := partKey{ps.Topic, ps.Partition}
			if !granted[k] {
				a.log.Warn("WAL holds data of a partition this agent was not granted; forgetting it", "partition", k.String(), "wal_end", ps.EndOffset)
				if err := a.wal.Forget(k.topic, k.partition); err != nil {
					return fmt.Errorf("forget %s: %w", k, err)
				}
			}
		}
	}
	a.lastHB = sent
	switch drain := resp.Msg.GetDrain(); {
	case drain && !a.draining.Load():
		a.draining.Store(true)
		a.wg.Add(1)
		go a.drain()
	case !drain && a.draining.Load():
		a.log.Info("drain cancelled; accepting writes again")
		a.draining.Store(false)
	}
	return nil
}

// drain hands every partition over: it waits for appends in flight, lets
// the uploader commit everything the WAL holds, then releases the leases.
// The draining flag (set by the caller) refuses new appends meanwhile.
func (a *Agent) drain() {
	defer a.wg.Done()
	a.log.Info("draining: uploading what the WAL holds, then releasing leases")
	// Appends past their refusal check finish their WAL write: taking the
	// write lock waits for them (closeMu is read-held across that window).
	a.closeMu.Lock()
	a.log.Debug("drain: appends in flight have reached the WAL")
	a.closeMu.Unlock()
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for !a.allCommitted() {
		a.kickUpload()
		select {
		case <-a.ctx.Done():
			return
		case <-t.C:
		}
		if !a.draining.Load() {
			return
		}
	}
	ctx, cancel := context.WithTimeout(a.ctx, 30*time.Second)
	defer cancel()
	res, err := a.cfg.Controller.ReleaseLeases(ctx, connect.NewRequest(&v1.ReleaseLeasesRequest{AgentId: a.cfg.ID, Incarnation: a.incarnation}))
	if err != nil {
		a.log.Warn("drain: release leases; they expire on their own", "err", err)
		return
	}
	a.log.Info("drained: leases released", "partitions", res.Msg.GetReleased())
}

// allCommitted reports whether every partition's WAL data is committed.
func (a *Agent) allCommitted() bool {
	a.mu.RLock()
	defer a.mu.RUnlock()
	for _, p := range a.parts {
		p.mu.Lock()
		done := p.committedEnd >= p.walEnd || p.err != nil
		p.mu.Unlock()
		if !done {
			return false
		}
	}
	return true
}

// adopt builds the state of a newly granted partition. When the WAL holds
// this agent's own data from the committed end on (it restarted, or held the
// partition before), that data keeps its offsets and is uploaded again.
func (a *Agent) adopt(k partKey, l *v1.Lease, ws wal.PartitionState) *partition {
	committed := l.GetCommittedEndOffset()
	walEnd := committed
	if entries := a.wal.Entries(k.topic, k.partition, committed, 1); len(entries) > 0 {
		if entries[0].BaseOffset == committed {
			walEnd = max(ws.EndOffset, committed)
			a.log.Info("recovered uncommitted data from the WAL; uploading it again",
				"partition", k.String(), "from", committed, "to", walEnd, "epoch", l.GetEpoch())
		} else {
			a.log.Error("WAL data does not line up with the committed end; dropping it",
				"partition", k.String(), "committed_end", committed, "wal_first", entries[0].BaseOffset)
			if err := a.wal.Forget(k.topic, k.partition); err != nil {
				a.log.Error("forget WAL data", "partition", k.String(), "err", err)
			}
		}
	}
	if err := a.wal.SetCommitted(k.topic, k.partition, committed); err != nil {
		a.log.Error("mark committed in WAL", "partition", k.String(), "err", err)
	}
	return newPartition(k, l, walEnd)
}

// dropLocked forgets a partition the agent no longer holds, with a warning
// that says why. a.mu is held.
func (a *Agent) dropLocked(k partKey, p *partition, why error) {
	a.log.Warn("dropped partition", "partition", k.String(), "reason", why.Error())
	a.forgetLocked(k, p, why)
}

// forgetLocked forgets a partition the agent no longer holds: its waiters
// and later appends fail with why, and its WAL data is forgotten. a.mu is
// held.
func (a *Agent) forgetLocked(k partKey, p *partition, why error) {
	delete(a.parts, k)
	p.fail(why)
	// Hold appendMu so no append of ours slips into the WAL after Forget.
	p.appendMu.Lock()
	defer p.appendMu.Unlock()
	if err := a.wal.Forget(k.topic, k.partition); err != nil {
		a.log.Error("forget WAL data", "partition", k.String(), "err", err)
	}
}

// partition returns the state of a partition the agent holds, or nil.
func (a *Agent) partition(k partKey) *partition {
	a.mu.RLock()
	defer a.mu.RUnlock()
	return a.parts[k]
}
