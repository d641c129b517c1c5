package wal

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"log/slog"

	"go.etcd.io/bbolt"
)

// The per-partition layout that the current one replaced:
//
//	meta/ckpt                                       segment(8) offset(8)
//	parts/<partition key>/entries/<base offset(8)>  segment(8) position(8) length(4) end offset(8) max ts(8)
//	parts/<partition key>/committed                 end offset(8)
//	parts/<partition key>/forgot                    segment(8) offset(8)
//
// Partition keys and the two marks are encoded as in the current layout.
var (
	bktParts        = []byte("parts")
	bktOldEntries   = []byte("entries")
	keyOldCkpt      = []byte("ckpt")
	keyOldCommitted = []byte("committed")
	keyOldForgot    = []byte("forgot")
)

const oldEntryValueLen = 8 + 8 + 4 + 8 + 8

// migrateIndex converts an index in the per-partition layout into the
// current layout, in one transaction: either the whole index is converted
// or, on an error or a crash, the old layout is left as it was for the next
// Open. An index without a parts bucket is left alone.
//
// Nothing readable is lost, and unreadable records get the treatment
// loadIndex gives them: the marks are copied byte for byte (their encoding
// is unchanged), so loadIndex reports a bad one as it did; an unreadable
// entry cannot be keyed by its position, so it is logged and dropped and
// the checkpoint with it, which makes recovery rescan every segment, as it
// does for any unreadable record.
func migrateIndex(db *bbolt.DB, log *slog.Logger) error {
	var (
		migrated                                  bool
		parts, entries, committed, forgot, failed int
	)
	err := db.Update(func(tx *bbolt.Tx) error {
		old := tx.Bucket(bktParts)
		if old == nil {
			return nil
		}
		migrated = true
		// A parts bucket next to the current buckets means a binary from
		// before this layout ran on this index after a newer one: it
		// rewrote parts whole when it opened the WAL, so parts is the
		// current state and the other buckets are stale.
		for _, name := range [][]byte{bktEntries, bktCommitted, bktForgot} {
			if tx.Bucket(name) != nil {
				if err := tx.DeleteBucket(name); err != nil {
					return fmt.Errorf("delete stale bucket %s: %w", name, err)
				}
			}
		}
		ix, err := openIndexTx(tx)
		if err != nil {
			return err
		}
		// Keys and values are copied: they point into pages of the parts
		// bucket, which this transaction deletes, and bbolt uses the slices
		// given to Put until the commit.
		err = old.ForEachBucket(func(name []byte) error {
			pb := old.Bucket(name)
			parts++
			if v := pb.Get(keyOldCommitted); v != nil {
				if err := ix.committed.Put(bytes.Clone(name), bytes.Clone(v)); err != nil {
					return err
				}
				committed++
			}
			if v := pb.Get(keyOldForgot); v != nil {
				if err := ix.forgot.Put(bytes.Clone(name), bytes.Clone(v)); err != nil {
					return err
				}
				forgot++
			}
			eb := pb.Bucket(bktOldEntries)
			if eb == nil {
				return nil
			}
			return eb.ForEach(func(k, v []byte) error {
				if v == nil {
					return nil // a nested bucket: never written, not an entry
				}
				if len(k) != 8 || len(v) != oldEntryValueLen {
					failed++
					log.Error("skipping unreadable WAL index record while migrating the index; all segments will be rescanned",
						"partition_key", fmt.Sprintf("%x", name), "key_bytes", len(k), "value_bytes", len(v))
					return nil
				}
				// The partition key is copied undecoded: loadIndex reports
				// it if it is unreadable, as it did the old bucket name.
				e := IndexEntry{
					BaseOffset:     int64(binary.BigEndian.Uint64(k)),
					Pos:            Pos{Segment: binary.BigEndian.Uint64(v), Offset: int64(binary.BigEndian.Uint64(v[8:])), Length: int32(binary.BigEndian.Uint32(v[16:]))},
					EndOffset:      int64(binary.BigEndian.Uint64(v[20:])),
					MaxTimestampMs: int64(binary.BigEndian.Uint64(v[28:])),
				}
				b, err := ix.segBucket(e.Pos.Segment, true)
				if err != nil {
					return err
				}
				// The buckets are filled partition by partition, not in WAL
				// order: the default fill leaves room for the inserts.
				b.FillPercent = bbolt.DefaultFillPercent
				entries++
				return b.Put(u64Key(uint64(e.Pos.Offset)), encodeEntryValue(e, bytes.Clone(name)))
			})
		})
		if err != nil {
			return fmt.Errorf("copy partitions: %w", err)
		}
		if err := tx.DeleteBucket(bktParts); err != nil {
			return fmt.Errorf("delete bucket %s: %w", bktParts, err)
		}
		mb, err := tx.CreateBucketIfNotExists(bktMeta)
		if err != nil {
			return fmt.Errorf("create bucket %s: %w", bktMeta, err)
		}
		v := mb.Get(keyOldCkpt)
		if v == nil || failed > 0 {
			// Without a checkpoint, recovery rescans every segment.
			if err := mb.Delete(keyCheckpoint); err != nil {
				return err
			}
		} else if err := mb.Put(keyCheckpoint, bytes.Clone(v)); err != nil {
			return err
		}
		return mb.Delete(keyOldCkpt)
	})
	if err != nil {
		return fmt.Errorf("wal: migrate index from per-partition buckets: %w", err)
	}
	if migrated {
		log.Info("migrated the WAL index from per-partition buckets to the position-keyed layout",
			"partitions", parts, "entries", entries, "committed_marks", committed, "forgotten_marks", forgot, "unreadable_entries", failed)
	}
	return nil
}
