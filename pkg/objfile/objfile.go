// Package objfile builds and reads StreamHouse objects: what an agent uploads
// per flush. One object holds the record batches of many partitions, one
// contiguous section per partition, followed by a footer index and a
// fixed-size trailer:
//
//	[section 0][section 1]...[section n-1][footer][trailer]
//
// A section is the concatenation of whole Kafka RecordBatch v2 batches (see
// package batch) of one topic-partition, with contiguous offsets. Sections
// tile the data region exactly: the first starts at position 0, each starts
// where the previous ends, and the last ends where the footer begins.
//
// Footer, version 1 (all integers big-endian):
//
//	uvarint  section count
//	then per section, in position order:
//	  uvarint  topic length (1..MaxTopicLen), then the topic bytes
//	  int32    partition (>= 0)
//	  int64    base offset (>= 0)
//	  int64    end offset, exclusive (> base offset)
//	  int64    position of the section in the object
//	  int64    length of the section in bytes
//	  int64    max timestamp (Unix ms; the max of the batches' MaxTimestamp)
//	  int64    record count (sum of the batches' NumRecords; <= end-base)
//	  uint32   CRC-32C (Castagnoli) of the section bytes
//
// Trailer, TrailerSize (18) bytes at the very end of the object:
//
//	uint32   footer length in bytes
//	uint32   CRC-32C (Castagnoli) of the footer bytes
//	uint16   format version (1)
//	[8]byte  magic "SHOBJ1\x00\x00"
//
// A reader that knows the object size can range-GET the last N bytes, call
// ParseTrailer on the last TrailerSize of them for the footer length, fetch
// more if needed, and call ReadIndexFromTail; then range-GET just the
// sections it wants.
//
// Nothing in this package panics on bad bytes; every error about the bytes
// of an object wraps ErrCorrupt.
package objfile

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math"

	"github.com/streamhouse/streamhouse/pkg/batch"
)

// Format constants.
const (
	// TrailerSize is the size in bytes of the fixed trailer at the end of
	// every object.
	TrailerSize = 18
	// Version is the footer/trailer format version written by Builder and
	// the only one readers accept.
	Version = 1
	// MaxTopicLen is the longest topic name an object can hold (Kafka's
	// limit).
	MaxTopicLen = 249
	// TailReadSize is a tail size that holds the trailer and the footer of
	// any object with up to about 200 sections of long topic names; fetching
	// this many bytes first usually avoids a second range GET.
	TailReadSize = 64 << 10
)

// Magic is the 8-byte magic number that ends every object.
const Magic = "SHOBJ1\x00\x00"

var (
	// ErrCorrupt is wrapped by every error reporting that bytes are not a
	// valid object (trailer, footer, section bounds, CRCs, batches).
	ErrCorrupt = errors.New("corrupt object")
	// ErrShortTail is wrapped by ReadIndexFromTail when the tail given is
	// too short to hold the footer; fetch the last TrailerSize+footerLen
	// bytes (see ParseTrailer) and retry. The object is not known to be
	// corrupt.
	ErrShortTail = errors.New("tail too short for footer")
	// ErrOutOfOrder is wrapped by Builder.Add when a batch does not start at
	// the end offset of its partition's previous batch.
	ErrOutOfOrder = errors.New("batch not contiguous with its partition's previous batch")
	// ErrEmpty is returned by Builder.Finish when no batch was added.
	ErrEmpty = errors.New("objfile: no batches added")
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func corruptf(format string, args ...any) error {
	return fmt.Errorf("objfile: "+format+": %w", append(args, ErrCorrupt)...)
}

// Section describes one partition's section of an object.
type Section struct {
	Topic     string
	Partition int32
	// BaseOffset is the base offset of the first batch; EndOffset is the
	// end offset (exclusive) of the last batch.
	BaseOffset, EndOffset int64
	// Position and Length locate the section's bytes in the object.
	Position, Length int64
	// MaxTimestampMs is the largest MaxTimestamp of the section's batches.
	MaxTimestampMs int64
	// RecordCount is the sum of the batches' NumRecords.
	RecordCount int64
	// CRC is the CRC-32C (Castagnoli) of the section's bytes.
	CRC uint32
}

// minEntrySize is the smallest encoded footer entry (1-byte topic).
const minEntrySize = 1 + 1 + 4 + 6*8 + 4

type partKey struct {
	topic     string
	partition int32
}

type part struct {
	Section
	spans [][2]int // [start, end) of each batch in Builder.arena
}

// Builder assembles one object. Add batches, then call Finish. The zero
// value is not usable; use NewBuilder. A Builder is not safe for concurrent
// use. Added batches are copied into an internal buffer that the Builder
// keeps for reuse, so an agent that builds an object per flush allocates it
// once.
type Builder struct {
	parts []*part
	index map[partKey]*part
	arena []byte
}

// NewBuilder returns an empty Builder.
func NewBuilder() *Builder {
	return &Builder{index: make(map[partKey]*part)}
}

// Add copies one whole batch (validated with batch.Check) to the end of the
// section of topic/partition. A partition's batches must be added in offset
// order with no gaps: each batch's base offset must equal the previous
// batch's end offset (ErrOutOfOrder otherwise). Sections are laid out in
// the order their partitions were first added. On error nothing is added.
func (b *Builder) Add(topic string, partition int32, batchBytes []byte) error {
	if len(topic) == 0 || len(topic) > MaxTopicLen {
		return fmt.Errorf("objfile: topic name length %d not in 1..%d", len(topic), MaxTopicLen)
	}
	if partition < 0 {
		return fmt.Errorf("objfile: negative partition %d", partition)
	}
	m, err := batch.Check(batchBytes)
	if err != nil {
		return fmt.Errorf("objfile: add to %s/%d: %w", topic, partition, err)
	}
	if m.BaseOffset < 0 || m.EndOffset() < m.BaseOffset {
		return fmt.Errorf("objfile: add to %s/%d: bad batch offsets %d..%d", topic, partition, m.BaseOffset, m.EndOffset())
	}
	k := partKey{topic, partition}
	p := b.index[k]
	if p == nil {
		p = &part{Section: Section{
			Topic: topic, Partition: partition,
			BaseOffset: m.BaseOffset, EndOffset: m.BaseOffset,
			MaxTimestampMs: m.MaxTimestamp,
		}}
		b.index[k] = p
		b.parts = append(b.parts, p)
	} else if m.BaseOffset != p.EndOffset {
		return fmt.Errorf("objfile: add to %s/%d: batch base offset %d, want %d: %w",
			topic, partition, m.BaseOffset, p.EndOffset, ErrOutOfOrder)
	}
	start := len(b.arena)
	b.arena = append(b.arena, batchBytes...)
	p.spans = append(p.spans, [2]int{start, len(b.arena)})
	p.EndOffset = m.EndOffset()
	p.MaxTimestampMs = max(p.MaxTimestampMs, m.MaxTimestamp)
	p.RecordCount += int64(m.NumRecords)
	p.CRC = crc32.Update(p.CRC, castagnoli, batchBytes)
	p.Length += int64(len(batchBytes))
	return nil
}

// Len returns the number of section bytes added so far (the object will be
// this plus the footer and trailer).
func (b *Builder) Len() int { return len(b.arena) }

// Finish returns the whole object and its sections (in layout order), and
// resets the Builder so it can be reused. The object may share the
// Builder's buffer: it is valid until the next Add, so copy it to keep it
// longer. It returns ErrEmpty if no batch was added.
func (b *Builder) Finish() ([]byte, []Section, error) {
	if len(b.parts) == 0 {
		return nil, nil, ErrEmpty
	}
	sections := make([]Section, len(b.parts))
	var pos int64
	for i, p := range b.parts {
		p.Position = pos
		pos += p.Length
		sections[i] = p.Section
	}
	footer := appendFooter(nil, sections)
	if len(footer) > math.MaxUint32 {
		return nil, nil, fmt.Errorf("objfile: footer too large (%d bytes)", len(footer))
	}
	var obj []byte
	if b.inLayoutOrder() {
		// Partition by partition, as the agent adds: the buffer already
		// holds the sections in layout order, so the object is the buffer
		// plus footer and trailer, without a copy.
		obj = append(b.arena, footer...)
		obj = appendTrailer(obj, footer)
		b.arena = obj
	} else {
		obj = make([]byte, 0, len(b.arena)+len(footer)+TrailerSize)
		for _, p := range b.parts {
			for _, sp := range p.spans {
				obj = append(obj, b.arena[sp[0]:sp[1]]...)
			}
		}
		obj = append(obj, footer...)
		obj = appendTrailer(obj, footer)
	}
	b.Reset()
	return obj, sections, nil
}

// inLayoutOrder reports whether the batches lie in the buffer in the order
// of the object's layout: section by section, each in offset order.
func (b *Builder) inLayoutOrder() bool {
	next := 0
	for _, p := range b.parts {
		for _, sp := range p.spans {
			if sp[0] != next {
				return false
			}
			next = sp[1]
		}
	}
	return true
}

// Reset discards everything added since the last Finish. The internal
// buffer is kept for reuse.
func (b *Builder) Reset() {
	b.parts = nil
	b.arena = b.arena[:0]
	clear(b.index)
}

func appendFooter(dst []byte, sections []Section) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(sections)))
	for _, s := range sections {
		dst = binary.AppendUvarint(dst, uint64(len(s.Topic)))
		dst = append(dst, s.Topic...)
		dst = binary.BigEndian.AppendUint32(dst, uint32(s.Partition))
		for _, v := range [...]int64{s.BaseOffset, s.EndOffset, s.Position, s.Length, s.MaxTimestampMs, s.RecordCount} {
			dst = binary.BigEndian.AppendUint64(dst, uint64(v))
		}
		dst = binary.BigEndian.AppendUint32(dst, s.CRC)
	}
	return dst
}

func appendTrailer(dst, footer []byte) []byte {
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(footer)))
	dst = binary.BigEndian.AppendUint32(dst, crc32.Checksum(footer, castagnoli))
	dst = binary.BigEndian.AppendUint16(dst, Version)
	return append(dst, Magic...)
}

func parseTrailer(tail []byte) (footerLen int64, crc uint32, err error) {
	if len(tail) != TrailerSize {
		return 0, 0, corruptf("trailer is %d bytes, want %d", len(tail), TrailerSize)
	}
	if string(tail[10:]) != Magic {
		return 0, 0, corruptf("bad magic %q", tail[10:])
	}
	if v := binary.BigEndian.Uint16(tail[8:]); v != Version {
		return 0, 0, corruptf("unsupported version %d", v)
	}
	return int64(binary.BigEndian.Uint32(tail)), binary.BigEndian.Uint32(tail[4:]), nil
}

// ParseTrailer parses tail, the last TrailerSize bytes of an object, and
// returns the footer length: the footer is the footerLen bytes just before
// the trailer. Errors wrap ErrCorrupt.
func ParseTrailer(tail []byte) (footerLen int, err error) {
	n, _, err := parseTrailer(tail)
	return int(n), err
}

// ReadIndex reads the sections of a whole object: it checks the trailer,
// the footer CRC and layout, and that the sections tile the bytes before
// the footer exactly, in position order, with unique topic-partitions. It
// does not read section bytes (see Verify). Errors wrap ErrCorrupt.
func ReadIndex(obj []byte) ([]Section, error) {
	if len(obj) < TrailerSize {
		return nil, corruptf("object of %d bytes is shorter than the trailer", len(obj))
	}
	return ReadIndexFromTail(obj, int64(len(obj)))
}

// ReadIndexFromTail is ReadIndex for a range GET: tail holds the last
// len(tail) bytes of an object of objectSize bytes, and must include the
// trailer and the footer (use ParseTrailer to learn the footer length). If
// it is too short the error wraps ErrShortTail; all other errors wrap
// ErrCorrupt. Section positions are relative to the start of the object.
func ReadIndexFromTail(tail []byte, objectSize int64) ([]Section, error) {
	if len(tail) < TrailerSize {
		return nil, fmt.Errorf("objfile: tail of %d bytes is shorter than the trailer: %w", len(tail), ErrShortTail)
	}
	if int64(len(tail)) > objectSize {
		return nil, fmt.Errorf("objfile: tail of %d bytes is longer than the %d-byte object", len(tail), objectSize)
	}
	footerLen, crc, err := parseTrailer(tail[len(tail)-TrailerSize:])
	if err != nil {
		return nil, err
	}
	if footerLen > objectSize-TrailerSize {
		return nil, corruptf("footer length %d does not fit in a %d-byte object", footerLen, objectSize)
	}
	if footerLen > int64(len(tail)-TrailerSize) {
		return nil, fmt.Errorf("objfile: tail of %d bytes, need %d: %w", len(tail), footerLen+TrailerSize, ErrShortTail)
	}
	footer := tail[int64(len(tail)-TrailerSize)-footerLen : len(tail)-TrailerSize]
	if got := crc32.Checksum(footer, castagnoli); got != crc {
		return nil, corruptf("footer CRC mismatch: trailer %08x, computed %08x", crc, got)
	}
	return parseFooter(footer, objectSize-TrailerSize-footerLen)
}

// parseFooter decodes a footer whose sections must tile [0, dataEnd).
func parseFooter(f []byte, dataEnd int64) ([]Section, error) {
	count, n := binary.Uvarint(f)
	if n <= 0 {
		return nil, corruptf("footer: bad section count")
	}
	f = f[n:]
	if count > uint64(len(f)/minEntrySize) {
		return nil, corruptf("footer: %d sections cannot fit in %d bytes", count, len(f))
	}
	sections := make([]Section, 0, count)
	seen := make(map[partKey]struct{}, count)
	var pos int64
	for i := range int(count) {
		tl, n := binary.Uvarint(f)
		if n <= 0 || tl == 0 || tl > MaxTopicLen || tl > uint64(len(f)-n) {
			return nil, corruptf("footer: section %d: bad topic length", i)
		}
		f = f[n:]
		s := Section{Topic: string(f[:tl])}
		f = f[tl:]
		if len(f) < 4+6*8+4 {
			return nil, corruptf("footer: section %d truncated", i)
		}
		s.Partition = int32(binary.BigEndian.Uint32(f))
		f = f[4:]
		for _, p := range [...]*int64{&s.BaseOffset, &s.EndOffset, &s.Position, &s.Length, &s.MaxTimestampMs, &s.RecordCount} {
			*p = int64(binary.BigEndian.Uint64(f))
			f = f[8:]
		}
		s.CRC = binary.BigEndian.Uint32(f)
		f = f[4:]

		switch {
		case s.Partition < 0:
			return nil, corruptf("footer: section %d: negative partition %d", i, s.Partition)
		case s.BaseOffset < 0 || s.EndOffset <= s.BaseOffset:
			return nil, corruptf("footer: section %d: bad offsets %d..%d", i, s.BaseOffset, s.EndOffset)
		case s.RecordCount < 0 || s.RecordCount > s.EndOffset-s.BaseOffset:
			return nil, corruptf("footer: section %d: record count %d for offsets %d..%d", i, s.RecordCount, s.BaseOffset, s.EndOffset)
		case s.Position != pos:
			return nil, corruptf("footer: section %d at position %d, want %d", i, s.Position, pos)
		case s.Length < batch.HeaderSize || s.Length > dataEnd-pos:
			return nil, corruptf("footer: section %d: length %d at %d exceeds data end %d", i, s.Length, pos, dataEnd)
		}
		k := partKey{s.Topic, s.Partition}
		if _, dup := seen[k]; dup {
			return nil, corruptf("footer: duplicate section for %s/%d", s.Topic, s.Partition)
		}
		seen[k] = struct{}{}
		pos += s.Length
		sections = append(sections, s)
	}
	if len(f) != 0 {
		return nil, corruptf("footer: %d trailing bytes", len(f))
	}
	if pos != dataEnd {
		return nil, corruptf("footer: sections end at %d, footer starts at %d", pos, dataEnd)
	}
	return sections, nil
}

// Verify fully checks a whole object: everything ReadIndex checks, the CRC of
// every section, and every batch inside (split with batch.Next, so each
// batch's length, magic and CRC-32C are checked): batches must be whole,
// offset-contiguous from the section's base offset to its end offset, and
// their record counts and max timestamps must match the footer. It returns
// the sections. Errors wrap ErrCorrupt.
func Verify(obj []byte) ([]Section, error) {
	sections, err := ReadIndex(obj)
	if err != nil {
		return nil, err
	}
	for _, s := range sections {
		sec := obj[s.Position : s.Position+s.Length]
		if got := crc32.Checksum(sec, castagnoli); got != s.CRC {
			return nil, corruptf("section %s/%d: CRC mismatch: footer %08x, computed %08x", s.Topic, s.Partition, s.CRC, got)
		}
		next, records, maxTs := s.BaseOffset, int64(0), int64(math.MinInt64)
		for len(sec) > 0 {
			m, _, rest, err := batch.Next(sec)
			if err != nil {
				if err == io.EOF {
					break
				}
				return nil, fmt.Errorf("objfile: section %s/%d at offset %d: %w: %w", s.Topic, s.Partition, next, ErrCorrupt, err)
			}
			if m.BaseOffset != next {
				return nil, corruptf("section %s/%d: batch base offset %d, want %d", s.Topic, s.Partition, m.BaseOffset, next)
			}
			next = m.EndOffset()
			records += int64(m.NumRecords)
			maxTs = max(maxTs, m.MaxTimestamp)
			sec = rest
		}
		if next != s.EndOffset || records != s.RecordCount || maxTs != s.MaxTimestampMs {
			return nil, corruptf("section %s/%d: batches give end %d, %d records, max timestamp %d; footer says %d, %d, %d",
				s.Topic, s.Partition, next, records, maxTs, s.EndOffset, s.RecordCount, s.MaxTimestampMs)
		}
	}
	return sections, nil
}
