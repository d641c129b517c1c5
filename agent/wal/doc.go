// Package wal is the agent's write-ahead log: append-only segment files of
// CRC-framed Kafka record batches, group-committed with one fdatasync per
// group, plus a bbolt index that is maintained off the acknowledgement path.
//
// # Guarantees
//
//   - A Pending returned by [WAL.Append] completes without error only after the
//     frame has been written and fdatasync'ed: acknowledged data is fsynced data
//     and survives a process crash (kill -9) and, given a disk that honours
//     fdatasync, a power loss.
//   - Frames of successive Append calls are written in call order. Callers that
//     serialise their appends per partition therefore get the partition's
//     frames in offset order on disk and in the index.
//   - Any write or fdatasync error makes the WAL dead: the failing group and
//     every later Append fail with an error wrapping [ErrFailed]. fsync errors
//     are not retryable (the page cache may already have dropped the dirty
//     pages); close the WAL and Open it again, which recovers from what is on
//     disk.
//   - Nothing is deleted before it is committed: a segment file is removed only
//     when it is sealed (no longer written to) and every frame in it is below
//     its partition's committed mark ([WAL.SetCommitted]) or was appended before
//     the partition was forgotten ([WAL.Forget]).
//   - Decoders never panic on bytes from disk; corruption is detected by CRC,
//     reported ([ErrCorrupt], slog), truncated (torn tail) or quarantined.
//
// # On-disk layout
//
// Dir/segments/<20-digit zero-padded sequence>.wal holds frames back to back.
// Sequence numbers only grow; each Open starts a fresh segment. A frame is
//
//	uint32  payload length (big endian)
//	uint32  CRC-32C (Castagnoli) of the payload (big endian)
//	payload:
//	  byte     version (1)
//	  uvarint  topic length, then the topic bytes
//	  int32    partition        (big endian, as all integers below)
//	  int64    base offset
//	  int64    end offset (exclusive)
//	  int64    max timestamp (ms)
//	  []byte   data (a Kafka RecordBatch v2, opaque here)
//
// Dir/open.marker exists from Open to a clean Close; finding it at Open
// means the last run crashed (counted in streamhouse_agent_wal_recoveries_total).
//
// Dir/index.db is a bbolt database:
//
//	meta/checkpoint                segment(8) offset(8): every frame before this
//	                               WAL position is reflected in the index
//	entries/<segment(8)>/<offset(8)>  length(4) base offset(8) end offset(8)
//	                               max ts(8) partition key: the frame at that position
//	committed/<partition key>      end offset(8): data below is in the object store
//	forgot/<partition key>         segment(8) offset(8): frames of the partition
//	                               before this WAL position are ignored
//
// where the partition key is uvarint(len(topic)) topic int32(partition) and
// all integers are big endian. A transaction writes pages in proportion to
// the records it changes, not to the partitions it touches: the indexer
// appends new entries in WAL order at the right edge of the active segment's
// bucket, and a committed or forgotten mark is one key among the marks of
// all partitions. Entries below a committed mark or before a forgotten mark
// are not deleted with the mark (that would touch a page per partition) but
// with their segment's bucket once the segment file is deleted; recovery
// skips them. An entry superseded by a newer frame of its offsets is deleted
// when the newer one is indexed.
//
// A background indexer writes new entries and the checkpoint in one
// transaction every Options.IndexInterval, so the index may lag the segment
// files; recovery rescans the segments from the checkpoint.
//
// An index in the earlier layout (a parts/<partition key>/ bucket per
// partition holding its committed and forgot marks and a nested entries
// bucket keyed by base offset, and the checkpoint at meta/ckpt) is migrated
// at Open, in one transaction, before recovery. A binary from before the
// migration finds no checkpoint in the current layout and rebuilds its index
// from every segment, as if index.db were missing.
//
// # Recovery
//
// Open loads the index (migrating an earlier layout first), skips entries
// below the committed and before the forgotten marks, drops the other
// entries whose segment is gone or that lie past the end of their file (slog
// WARN), then scans every segment from the checkpoint,
// verifying each frame's CRC. In the last segment, and at the very end of any
// segment (a frame that runs past the end of the file), a bad frame is a torn
// tail: the file is truncated to the last good frame (slog WARN,
// Stats.TruncatedBytes). A complete but corrupt frame inside an older segment
// quarantines that whole segment: it is renamed to <name>.corrupt (slog ERROR,
// Stats.QuarantinedSegments) and its entries are dropped. Entries below the
// committed marks and before the forgotten marks are dropped, the index is
// rewritten, and sealed segments holding only committed data are deleted.
package wal
