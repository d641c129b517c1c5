package wal

import (
	"encoding/binary"
	"fmt"

	"go.etcd.io/bbolt"
)

var (
	bktMeta      = []byte("meta")
	bktParts     = []byte("parts")
	bktEntries   = []byte("entries")
	keyCkpt      = []byte("ckpt")
	keyCommitted = []byte("committed")
	keyForgot    = []byte("forgot")
)

const entryValueLen = 8 + 8 + 4 + 8 + 8

func encodePartKey(k partKey) []byte {
	b := binary.AppendUvarint(nil, uint64(len(k.topic)))
	b = append(b, k.topic...)
	return binary.BigEndian.AppendUint32(b, uint32(k.partition))
}

func decodePartKey(b []byte) (partKey, error) {
	n, vn := binary.Uvarint(b)
	if vn <= 0 || n > uint64(len(b)-vn) || uint64(len(b)-vn)-n != 4 {
		return partKey{}, fmt.Errorf("bad partition key %x", b)
	}
	return partKey{topic: string(b[vn : vn+int(n)]), partition: int32(binary.BigEndian.Uint32(b[vn+int(n):]))}, nil
}

func encodePos(p Pos) []byte {
	b := binary.BigEndian.AppendUint64(nil, p.Segment)
	return binary.BigEndian.AppendUint64(b, uint64(p.Offset))
}

func decodePos(b []byte) (Pos, error) {
	if len(b) != 16 {
		return Pos{}, fmt.Errorf("bad position value of %d bytes", len(b))
	}
	return Pos{Segment: binary.BigEndian.Uint64(b), Offset: int64(binary.BigEndian.Uint64(b[8:]))}, nil
}

func encodeEntryValue(e IndexEntry) []byte {
	b := make([]byte, 0, entryValueLen)
	b = binary.BigEndian.AppendUint64(b, e.Pos.Segment)
	b = binary.BigEndian.AppendUint64(b, uint64(e.Pos.Offset))
	b = binary.BigEndian.AppendUint32(b, uint32(e.Pos.Length))
	b = binary.BigEndian.AppendUint64(b, uint64(e.EndOffset))
	return binary.BigEndian.AppendUint64(b, uint64(e.MaxTimestampMs))
}

func decodeEntry(k partKey, key, v []byte) (IndexEntry, error) {
	if len(key) != 8 || len(v) != entryValueLen {
		return IndexEntry{}, fmt.Errorf("bad index entry (key %d bytes, value %d bytes)", len(key), len(v))
	}
	return IndexEntry{
		Topic:          k.topic,
		Partition:      k.partition,
		BaseOffset:     int64(binary.BigEndian.Uint64(key)),
		Pos:            Pos{Segment: binary.BigEndian.Uint64(v), Offset: int64(binary.BigEndian.Uint64(v[8:])), Length: int32(binary.BigEndian.Uint32(v[16:]))},
		EndOffset:      int64(binary.BigEndian.Uint64(v[20:])),
		MaxTimestampMs: int64(binary.BigEndian.Uint64(v[28:])),
	}, nil
}

func offsetKey(off int64) []byte { return binary.BigEndian.AppendUint64(nil, uint64(off)) }

func partBucket(tx *bbolt.Tx, k partKey) (*bbolt.Bucket, error) {
	parts, err := tx.CreateBucketIfNotExists(bktParts)
	if err != nil {
		return nil, err
	}
	return parts.CreateBucketIfNotExists(encodePartKey(k))
}

// persistEntry stores e, first deleting stored entries it supersedes (those
// whose end offset is above its base offset), mirroring addLive.
func persistEntry(tx *bbolt.Tx, e IndexEntry) error {
	pb, err := partBucket(tx, partKey{e.Topic, e.Partition})
	if err != nil {
		return err
	}
	eb, err := pb.CreateBucketIfNotExists(bktEntries)
	if err != nil {
		return err
	}
	var stale [][]byte
	c := eb.Cursor()
	for k, v := c.Last(); k != nil; k, v = c.Prev() {
		if len(v) == entryValueLen && int64(binary.BigEndian.Uint64(v[20:])) <= e.BaseOffset {
			break
		}
		stale = append(stale, append([]byte(nil), k...))
	}
	for _, k := range stale {
		if err := eb.Delete(k); err != nil {
			return err
		}
	}
	return eb.Put(offsetKey(e.BaseOffset), encodeEntryValue(e))
}

// persistCommitted stores the committed mark and deletes entries below it.
func persistCommitted(tx *bbolt.Tx, k partKey, end int64) error {
	pb, err := partBucket(tx, k)
	if err != nil {
		return err
	}
	if err := pb.Put(keyCommitted, offsetKey(end)); err != nil {
		return err
	}
	eb := pb.Bucket(bktEntries)
	if eb == nil {
		return nil
	}
	var drop [][]byte
	c := eb.Cursor()
	for key, v := c.First(); key != nil; key, v = c.Next() {
		if len(v) == entryValueLen && int64(binary.BigEndian.Uint64(v[20:])) > end {
			break
		}
		drop = append(drop, append([]byte(nil), key...))
	}
	for _, key := range drop {
		if err := eb.Delete(key); err != nil {
			return err
		}
	}
	return nil
}

// persistForgot stores the forgotten mark and drops the partition's entries
// and committed mark.
func persistForgot(tx *bbolt.Tx, k partKey, mark Pos) error {
	pb, err := partBucket(tx, k)
	if err != nil {
		return err
	}
	if pb.Bucket(bktEntries) != nil {
		if err := pb.DeleteBucket(bktEntries); err != nil {
			return err
		}
	}
	if err := pb.Delete(keyCommitted); err != nil {
		return err
	}
	return pb.Put(keyForgot, encodePos(mark))
}

func putCheckpoint(tx *bbolt.Tx, p Pos) error {
	mb, err := tx.CreateBucketIfNotExists(bktMeta)
	if err != nil {
		return err
	}
	return mb.Put(keyCkpt, encodePos(p))
}

// storedPart is one partition as loaded from bbolt.
type storedPart struct {
	key          partKey
	committed    int64
	hasCommitted bool
	forgot       Pos
	forgotBad    bool         // the forgotten mark was unreadable
	entries      []IndexEntry // ascending base offset
}

// loadIndex reads the checkpoint and all partitions. Undecodable records are
// reported to bad and skipped (the scan from the checkpoint cannot restore
// them, but their frames remain on disk).
func loadIndex(tx *bbolt.Tx, bad func(error)) (ckpt Pos, parts []*storedPart, err error) {
	if mb := tx.Bucket(bktMeta); mb != nil {
		if v := mb.Get(keyCkpt); v != nil {
			if ckpt, err = decodePos(v); err != nil {
				bad(fmt.Errorf("checkpoint: %w", err))
				ckpt = Pos{}
			}
		}
	}
	pbs := tx.Bucket(bktParts)
	if pbs == nil {
		return ckpt, nil, nil
	}
	err = pbs.ForEachBucket(func(name []byte) error {
		k, err := decodePartKey(name)
		if err != nil {
			bad(err)
			return nil
		}
		pb := pbs.Bucket(name)
		sp := &storedPart{key: k}
		if v := pb.Get(keyCommitted); v != nil {
			if len(v) != 8 {
				bad(fmt.Errorf("%s/%d: bad committed mark", k.topic, k.partition))
			} else {
				sp.committed, sp.hasCommitted = int64(binary.BigEndian.Uint64(v)), true
			}
		}
		if v := pb.Get(keyForgot); v != nil {
			p, err := decodePos(v)
			if err != nil {
				// recover forgets everything on disk rather than resurrect
				// data the agent gave away.
				bad(fmt.Errorf("%s/%d: forgotten mark: %w", k.topic, k.partition, err))
				sp.forgotBad = true
			}
			sp.forgot = p
		}
		if eb := pb.Bucket(bktEntries); eb != nil {
			if err := eb.ForEach(func(key, v []byte) error {
				e, err := decodeEntry(k, key, v)
				if err != nil {
					bad(fmt.Errorf("%s/%d: %w", k.topic, k.partition, err))
					return nil
				}
				sp.entries = append(sp.entries, e)
				return nil
			}); err != nil {
				return err
			}
		}
		parts = append(parts, sp)
		return nil
	})
	return ckpt, parts, err
}

// rewriteIndex replaces the whole index with the in-memory state.
func (w *WAL) rewriteIndex(tx *bbolt.Tx, ckpt Pos) error {
	if tx.Bucket(bktParts) != nil {
		if err := tx.DeleteBucket(bktParts); err != nil {
			return err
		}
	}
	for k, ps := range w.parts {
		if len(ps.entries) == 0 && !ps.hasCommitted && ps.forgot == (Pos{}) {
			continue
		}
		pb, err := partBucket(tx, k)
		if err != nil {
			return err
		}
		if ps.hasCommitted {
			if err := pb.Put(keyCommitted, offsetKey(ps.committed)); err != nil {
				return err
			}
		}
		if ps.forgot != (Pos{}) {
			if err := pb.Put(keyForgot, encodePos(ps.forgot)); err != nil {
				return err
			}
		}
		if len(ps.entries) > 0 {
			eb, err := pb.CreateBucket(bktEntries)
			if err != nil {
				return err
			}
			eb.FillPercent = 1.0 // appended in key order
			for _, e := range ps.entries {
				if err := eb.Put(offsetKey(e.BaseOffset), encodeEntryValue(e)); err != nil {
					return err
				}
			}
		}
	}
	return putCheckpoint(tx, ckpt)
}
