package wal

import (
	"cmp"
	"encoding/binary"
	"fmt"
	"slices"

	"go.etcd.io/bbolt"
)

// The index is laid out so that what a transaction writes is proportional to
// what it changes, whatever the number of partitions (see the package
// documentation): entries are keyed by WAL position, so the indexer appends
// at the right edge of the active segment's bucket, and the per-partition
// marks are flat keys sharing pages. The layout it replaced, a bucket per
// partition with a nested entries bucket, dirtied at least one page per
// partition touched: tens of MB per commit at 10,000 partitions.
var (
	bktMeta      = []byte("meta")
	bktEntries   = []byte("entries")   // segment(8) -> bucket: offset(8) -> entry
	bktCommitted = []byte("committed") // partition key -> committed end offset
	bktForgot    = []byte("forgot")    // partition key -> forgotten mark
	// keyCheckpoint is not the per-partition layout's "ckpt", so that a
	// binary from before this layout finds no checkpoint in it and rescans
	// every segment (as if index.db were missing) instead of trusting a
	// checkpoint whose entries it cannot see.
	keyCheckpoint = []byte("checkpoint")
)

// entryValueMin is the length of an entry value with an empty partition
// key: frame length(4) base offset(8) end offset(8) max timestamp(8).
const entryValueMin = 4 + 8 + 8 + 8

// encodePartKey returns uvarint(len(topic)) topic int32(partition).
func encodePartKey(k partKey) []byte {
	b := make([]byte, 0, binary.MaxVarintLen64+len(k.topic)+4)
	b = binary.AppendUvarint(b, uint64(len(k.topic)))
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

func u64Key(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }

// encodeEntryValue encodes e for the key e.Pos.Offset in the bucket of
// e.Pos.Segment; pk is e's encoded partition key.
func encodeEntryValue(e IndexEntry, pk []byte) []byte {
	b := make([]byte, 0, entryValueMin+len(pk))
	b = binary.BigEndian.AppendUint32(b, uint32(e.Pos.Length))
	b = binary.BigEndian.AppendUint64(b, uint64(e.BaseOffset))
	b = binary.BigEndian.AppendUint64(b, uint64(e.EndOffset))
	b = binary.BigEndian.AppendUint64(b, uint64(e.MaxTimestampMs))
	return append(b, pk...)
}

// decodeEntry decodes the entry stored under offset key in the bucket of
// segment seg.
func decodeEntry(seg uint64, key, v []byte) (IndexEntry, error) {
	if len(key) != 8 || len(v) < entryValueMin {
		return IndexEntry{}, fmt.Errorf("segment %d: bad index entry (key %d bytes, value %d bytes)", seg, len(key), len(v))
	}
	k, err := decodePartKey(v[entryValueMin:])
	if err != nil {
		return IndexEntry{}, fmt.Errorf("segment %d offset %d: %w", seg, binary.BigEndian.Uint64(key), err)
	}
	return IndexEntry{
		Topic:          k.topic,
		Partition:      k.partition,
		BaseOffset:     int64(binary.BigEndian.Uint64(v[4:])),
		EndOffset:      int64(binary.BigEndian.Uint64(v[12:])),
		MaxTimestampMs: int64(binary.BigEndian.Uint64(v[20:])),
		Pos:            Pos{Segment: seg, Offset: int64(binary.BigEndian.Uint64(key)), Length: int32(binary.BigEndian.Uint32(v))},
	}, nil
}

// indexTx is the index buckets within one write transaction, looked up once
// per transaction rather than once per record.
type indexTx struct {
	entries, committed, forgot *bbolt.Bucket
	seg                        *bbolt.Bucket // bucket of segment segSeq, if not nil
	segSeq                     uint64
}

// openIndexTx returns the index buckets of tx, creating the missing ones.
func openIndexTx(tx *bbolt.Tx) (*indexTx, error) {
	ix := &indexTx{}
	for _, b := range []struct {
		name []byte
		dst  **bbolt.Bucket
	}{{bktEntries, &ix.entries}, {bktCommitted, &ix.committed}, {bktForgot, &ix.forgot}} {
		bk, err := tx.CreateBucketIfNotExists(b.name)
		if err != nil {
			return nil, fmt.Errorf("create bucket %s: %w", b.name, err)
		}
		*b.dst = bk
	}
	return ix, nil
}

// segBucket returns the entries bucket of segment seq, creating it if
// create is set (else it returns nil if there is none).
func (ix *indexTx) segBucket(seq uint64, create bool) (*bbolt.Bucket, error) {
	if ix.seg != nil && ix.segSeq == seq {
		return ix.seg, nil
	}
	b := ix.entries.Bucket(u64Key(seq))
	if b == nil && create {
		var err error
		if b, err = ix.entries.CreateBucket(u64Key(seq)); err != nil {
			return nil, fmt.Errorf("create bucket for segment %d: %w", seq, err)
		}
	}
	if b == nil {
		return nil, nil
	}
	// Entries are only ever added in WAL order, at the right edge of their
	// segment's bucket: full pages are never split by a later insert.
	b.FillPercent = 1.0
	ix.seg, ix.segSeq = b, seq
	return b, nil
}

// putEntry stores e under its position.
func (ix *indexTx) putEntry(e IndexEntry) error {
	b, err := ix.segBucket(e.Pos.Segment, true)
	if err != nil {
		return err
	}
	return b.Put(u64Key(uint64(e.Pos.Offset)), encodeEntryValue(e, encodePartKey(partKey{e.Topic, e.Partition})))
}

// deleteEntry deletes the entry at pos, if stored.
func (ix *indexTx) deleteEntry(pos Pos) error {
	b, err := ix.segBucket(pos.Segment, false)
	if err != nil || b == nil {
		return err
	}
	return b.Delete(u64Key(uint64(pos.Offset)))
}

// deleteSegment deletes the entries of segment seq, if any are stored.
func (ix *indexTx) deleteSegment(seq uint64) error {
	if ix.seg != nil && ix.segSeq == seq {
		ix.seg = nil
	}
	if ix.entries.Bucket(u64Key(seq)) == nil {
		return nil
	}
	if err := ix.entries.DeleteBucket(u64Key(seq)); err != nil {
		return fmt.Errorf("delete bucket of segment %d: %w", seq, err)
	}
	return nil
}

// putCommitted stores the partition's committed mark. Its entries stay
// stored (recovery skips entries below the mark) until their segment is
// deleted: deleting them here would dirty a page of every segment holding
// one, for every partition of the flush.
func (ix *indexTx) putCommitted(k partKey, end int64) error {
	return ix.committed.Put(encodePartKey(k), u64Key(uint64(end)))
}

// putForgot stores the partition's forgotten mark and deletes its committed
// mark. Its entries, all before the mark, stay stored (recovery skips them)
// until their segments are deleted.
func (ix *indexTx) putForgot(k partKey, mark Pos) error {
	pk := encodePartKey(k)
	if err := ix.committed.Delete(pk); err != nil {
		return err
	}
	return ix.forgot.Put(pk, encodePos(mark))
}

func putCheckpoint(tx *bbolt.Tx, p Pos) error {
	mb, err := tx.CreateBucketIfNotExists(bktMeta)
	if err != nil {
		return fmt.Errorf("create bucket %s: %w", bktMeta, err)
	}
	return mb.Put(keyCheckpoint, encodePos(p))
}

// storedPart is one partition as loaded from bbolt.
type storedPart struct {
	key          partKey
	committed    int64
	hasCommitted bool
	forgot       Pos
	forgotBad    bool         // the forgotten mark was unreadable
	entries      []IndexEntry // in WAL order; may include committed and forgotten ones
}

// loadIndex reads the checkpoint and all partitions (in no particular
// order: recovery applies each partition's marks and entries on their own).
// Undecodable records are reported to bad and skipped (the scan from the
// checkpoint cannot restore them, but their frames remain on disk).
func loadIndex(tx *bbolt.Tx, bad func(error)) (ckpt Pos, parts []*storedPart, err error) {
	if mb := tx.Bucket(bktMeta); mb != nil {
		if v := mb.Get(keyCheckpoint); v != nil {
			if ckpt, err = decodePos(v); err != nil {
				bad(fmt.Errorf("checkpoint: %w", err))
				ckpt = Pos{}
			}
		}
	}
	byKey := make(map[partKey]*storedPart)
	part := func(k partKey) *storedPart {
		sp := byKey[k]
		if sp == nil {
			sp = &storedPart{key: k}
			byKey[k] = sp
			parts = append(parts, sp)
		}
		return sp
	}
	if b := tx.Bucket(bktCommitted); b != nil {
		if err := b.ForEach(func(key, v []byte) error {
			k, err := decodePartKey(key)
			if err != nil {
				bad(fmt.Errorf("committed mark: %w", err))
				return nil
			}
			if len(v) != 8 {
				bad(fmt.Errorf("%s/%d: bad committed mark", k.topic, k.partition))
				return nil
			}
			sp := part(k)
			sp.committed, sp.hasCommitted = int64(binary.BigEndian.Uint64(v)), true
			return nil
		}); err != nil {
			return ckpt, nil, err
		}
	}
	if b := tx.Bucket(bktForgot); b != nil {
		if err := b.ForEach(func(key, v []byte) error {
			k, err := decodePartKey(key)
			if err != nil {
				bad(fmt.Errorf("forgotten mark: %w", err))
				return nil
			}
			sp := part(k)
			if sp.forgot, err = decodePos(v); err != nil {
				// recover forgets everything on disk rather than resurrect
				// data the agent gave away.
				bad(fmt.Errorf("%s/%d: forgotten mark: %w", k.topic, k.partition, err))
				sp.forgotBad = true
			}
			return nil
		}); err != nil {
			return ckpt, nil, err
		}
	}
	eb := tx.Bucket(bktEntries)
	if eb == nil {
		return ckpt, parts, nil
	}
	// Segment buckets iterate in sequence order and their keys in offset
	// order: entries come out in WAL order.
	err = eb.ForEach(func(name, v []byte) error {
		if v != nil || len(name) != 8 {
			bad(fmt.Errorf("bad index segment record %x", name))
			return nil
		}
		seq := binary.BigEndian.Uint64(name)
		var last *storedPart
		return eb.Bucket(name).ForEach(func(key, v []byte) error {
			e, err := decodeEntry(seq, key, v)
			if err != nil {
				bad(err)
				return nil
			}
			if last == nil || last.key != (partKey{e.Topic, e.Partition}) {
				last = part(partKey{e.Topic, e.Partition})
			}
			e.Topic = last.key.topic // share one string per partition
			last.entries = append(last.entries, e)
			return nil
		})
	})
	return ckpt, parts, err
}

// rewriteIndex replaces the whole index with the in-memory state.
func (w *WAL) rewriteIndex(tx *bbolt.Tx, ckpt Pos) error {
	for _, name := range [][]byte{bktEntries, bktCommitted, bktForgot} {
		if tx.Bucket(name) != nil {
			if err := tx.DeleteBucket(name); err != nil {
				return fmt.Errorf("delete bucket %s: %w", name, err)
			}
		}
	}
	ix, err := openIndexTx(tx)
	if err != nil {
		return err
	}
	var entries []IndexEntry
	for k, ps := range w.parts {
		if ps.hasCommitted {
			if err := ix.putCommitted(k, ps.committed); err != nil {
				return err
			}
		}
		if ps.forgot != (Pos{}) {
			if err := ix.forgot.Put(encodePartKey(k), encodePos(ps.forgot)); err != nil {
				return err
			}
		}
		entries = append(entries, ps.entries...)
	}
	// In WAL order, as the indexer adds them: every Put appends.
	slices.SortFunc(entries, func(a, b IndexEntry) int {
		if c := cmp.Compare(a.Pos.Segment, b.Pos.Segment); c != 0 {
			return c
		}
		return cmp.Compare(a.Pos.Offset, b.Pos.Offset)
	})
	for _, e := range entries {
		if err := ix.putEntry(e); err != nil {
			return err
		}
	}
	return putCheckpoint(tx, ckpt)
}
