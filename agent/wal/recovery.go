package wal

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"go.etcd.io/bbolt"

	"github.com/streamhouse/streamhouse/pkg/fsutil"
)

// recover rebuilds the in-memory index from bbolt and the segment files,
// repairs the segments, creates the new active segment and persists the
// result. See the package documentation.
func (w *WAL) recover() error {
	var (
		ckpt   Pos
		stored []*storedPart
	)
	badRecords := 0
	err := w.db.View(func(tx *bbolt.Tx) error {
		var err error
		ckpt, stored, err = loadIndex(tx, func(err error) {
			badRecords++
			w.log.Error("skipping unreadable WAL index record", "err", err)
		})
		return err
	})
	if err != nil {
		return fmt.Errorf("wal: load index: %w", err)
	}
	if badRecords > 0 {
		// Entries may be missing from the index: rebuild it from every
		// segment, so that no uncommitted segment looks empty and is deleted.
		w.log.Error("WAL index has unreadable records; rescanning all segments", "records", badRecords)
		ckpt = Pos{}
	}
	live, maxSeq, err := listSegments(w.segDir)
	if err != nil {
		return fmt.Errorf("wal: list segments: %w", err)
	}
	for _, seq := range live {
		path := filepath.Join(w.segDir, segName(seq))
		rf, err := os.Open(path)
		if err != nil {
			return fmt.Errorf("wal: open segment: %w", err)
		}
		fi, err := rf.Stat()
		if err != nil {
			_ = rf.Close()
			return fmt.Errorf("wal: stat segment: %w", err)
		}
		s := &segment{seq: seq, path: path, rf: rf, size: fi.Size(), sealed: true}
		s.refs.Store(1)
		w.segs[seq] = s
	}
	maxSeq = max(maxSeq, ckpt.Segment)
	for _, sp := range stored {
		maxSeq = max(maxSeq, sp.forgot.Segment)
	}
	newSeq := maxSeq + 1

	// Scan every segment from the checkpoint, repairing as we go.
	var scanned []IndexEntry
	for i, seq := range live {
		if seq < ckpt.Segment {
			continue
		}
		start := int64(0)
		if seq == ckpt.Segment {
			start = ckpt.Offset
		}
		frames, err := w.scanSegment(w.segs[seq], start, i == len(live)-1)
		if err != nil {
			return err
		}
		scanned = append(scanned, frames...)
	}

	// Marks first, then the stored entries (all before the checkpoint), then
	// the scanned frames, in WAL order.
	for _, sp := range stored {
		ps := w.part(sp.key)
		ps.committed, ps.hasCommitted, ps.forgot = sp.committed, sp.hasCommitted, sp.forgot
		if sp.forgotBad {
			ps.forgot = Pos{Segment: newSeq}
		}
	}
	dropped := 0
	for _, sp := range stored {
		ps := w.parts[sp.key]
		for _, e := range sp.entries {
			if !e.Pos.less(ckpt) {
				continue // the scan finds it again
			}
			if e.Pos.less(ps.forgot) || (ps.hasCommitted && e.EndOffset <= ps.committed) {
				// The index keeps committed and forgotten entries until
				// their segment is deleted, and a crash can come between
				// deleting the file and the entries: not a lost frame.
				// addLive does not add it, but applies what it superseded.
				w.addLive(e)
				continue
			}
			s := w.segs[e.Pos.Segment]
			if s == nil || e.Pos.Length < frameHeaderLen || e.Pos.Offset < 0 || e.Pos.end().Offset > s.size {
				dropped++
				continue
			}
			w.addLive(e)
		}
	}
	if dropped > 0 {
		w.log.Warn("dropped WAL index entries whose frames no longer exist", "entries", dropped)
	}
	for _, e := range scanned {
		w.addLive(e)
	}

	w.nextSeg, w.nextOff = newSeq, 0
	active, err := w.createSegment(newSeq)
	if err != nil {
		return fmt.Errorf("wal: %w", err)
	}
	w.active = active
	w.ckpt = Pos{Segment: newSeq}
	w.persistedCkpt = w.ckpt
	if err := w.db.Update(func(tx *bbolt.Tx) error { return w.rewriteIndex(tx, w.ckpt) }); err != nil {
		_ = active.f.Close()
		return fmt.Errorf("wal: persist recovered index: %w", err)
	}
	w.superseded = nil // the rewritten index holds only live entries
	w.collectGarbage()
	if w.unclean || len(scanned) > 0 || badRecords > 0 || dropped > 0 || w.truncated.Load() > 0 || w.quarantined.Load() > 0 {
		// A clean Close removes the open marker and persists the index up
		// to the end of the WAL, so a marker left behind, or anything to
		// replay or repair, means the last run did not close it.
		noteRecovery()
		w.log.Info("WAL recovered after an unclean stop", "replayed_frames", len(scanned), "truncated_bytes", w.truncated.Load(),
			"quarantined_segments", w.quarantined.Load(), "dropped_index_entries", dropped, "unreadable_index_records", badRecords)
	}
	w.log.Debug("WAL recovered", "segments", len(w.segs), "scanned_frames", len(scanned), "checkpoint_segment", ckpt.Segment, "checkpoint_offset", ckpt.Offset)
	return nil
}

// scanSegment decodes and CRC-checks the frames of s from start. A bad frame
// in the last segment, or one that runs past the end of the file (or is
// followed only by zero bytes), is a torn tail: the file is truncated there.
// A complete corrupt frame elsewhere quarantines the segment (no frames are
// returned and s is unregistered).
func (w *WAL) scanSegment(s *segment, start int64, last bool) ([]IndexEntry, error) {
	if start > s.size {
		w.log.Warn("WAL index checkpoint is past the end of its segment", "segment", s.path, "checkpoint", start, "size", s.size)
		return nil, nil
	}
	r := bufio.NewReaderSize(io.NewSectionReader(s.rf, start, s.size-start), 1<<20)
	var (
		frames []IndexEntry
		buf    = make([]byte, 0, 64<<10)
		off    = start
	)
	for off < s.size {
		remaining := s.size - off
		var badErr error
		torn := false
		if remaining < frameHeaderLen {
			badErr, torn = errShortFrame, true
		} else {
			buf = buf[:frameHeaderLen]
			if _, err := io.ReadFull(r, buf); err != nil {
				return nil, fmt.Errorf("wal: read segment %s: %w", s.path, err)
			}
			plen := int64(binary.BigEndian.Uint32(buf))
			switch {
			case plen > maxPayloadLen:
				badErr = fmt.Errorf("%w: frame length %d exceeds maximum", ErrCorrupt, plen)
			case plen > remaining-frameHeaderLen:
				badErr, torn = errShortFrame, true
			default:
				if need := frameHeaderLen + plen; int64(cap(buf)) < need {
					nb := make([]byte, need)
					copy(nb, buf)
					buf = nb
				}
				buf = buf[:frameHeaderLen+plen]
				if _, err := io.ReadFull(r, buf[frameHeaderLen:]); err != nil {
					return nil, fmt.Errorf("wal: read segment %s: %w", s.path, err)
				}
				f, n, err := decodeFrame(buf)
				if err != nil {
					badErr = err
					break
				}
				frames = append(frames, IndexEntry{
					Topic: f.Topic, Partition: f.Partition, BaseOffset: f.BaseOffset, EndOffset: f.EndOffset,
					MaxTimestampMs: f.MaxTimestampMs, Pos: Pos{Segment: s.seq, Offset: off, Length: int32(n)},
				})
				off += int64(n)
				continue
			}
		}
		if !torn && !last {
			zero, err := zeroTail(s.rf, off, s.size)
			if err != nil {
				return nil, fmt.Errorf("wal: read segment %s: %w", s.path, err)
			}
			torn = zero
		}
		if torn || last {
			return frames, w.truncateTail(s, off, badErr)
		}
		return nil, w.quarantine(s, off, badErr)
	}
	return frames, nil
}

func zeroTail(f *os.File, off, size int64) (bool, error) {
	r := bufio.NewReaderSize(io.NewSectionReader(f, off, size-off), 64<<10)
	for {
		b, err := r.ReadByte()
		if err == io.EOF {
			return true, nil
		}
		if err != nil {
			return false, err
		}
		if b != 0 {
			return false, nil
		}
	}
}

func (w *WAL) truncateTail(s *segment, off int64, cause error) error {
	cut := s.size - off
	w.log.Warn("truncating torn WAL segment tail", "segment", s.path, "offset", off, "bytes", cut, "reason", cause)
	f, err := os.OpenFile(s.path, os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("wal: truncate %s: %w", s.path, err)
	}
	err = f.Truncate(off)
	if err == nil && !w.opts.NoSync {
		err = fdatasync(f)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("wal: truncate %s: %w", s.path, err)
	}
	s.size = off
	w.truncated.Add(cut)
	return nil
}

func (w *WAL) quarantine(s *segment, off int64, cause error) error {
	to := s.path + corruptSuffix
	w.log.Error("corrupt frame in sealed WAL segment; quarantining the segment and dropping its entries",
		"segment", s.path, "offset", off, "err", cause, "renamed_to", to)
	if err := os.Rename(s.path, to); err != nil {
		return fmt.Errorf("wal: quarantine %s: %w", s.path, errors.Join(cause, err))
	}
	if !w.opts.NoSync {
		if err := fsutil.SyncDir(w.segDir); err != nil {
			return fmt.Errorf("wal: quarantine %s: fsync directory: %w", s.path, err)
		}
	}
	delete(w.segs, s.seq)
	s.release()
	w.quarantined.Add(1)
	noteCorruption()
	return nil
}
