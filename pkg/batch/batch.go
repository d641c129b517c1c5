// Package batch encodes, decodes and validates Kafka RecordBatch v2 (magic 2)
// bytes, the unit StreamHouse uses everywhere: in produce requests, in the
// WAL, in objects and on the wire to agents.
//
// The layout is exactly Kafka's (see KIP-98 and the Kafka protocol guide);
// header and record encoding go through github.com/twmb/franz-go/pkg/kmsg:
//
//	offset  size  field
//	0       8     BaseOffset            (not covered by the CRC)
//	8       4     Length                (bytes after this field)
//	12      4     PartitionLeaderEpoch  (not covered by the CRC)
//	16      1     Magic (2)
//	17      4     CRC-32C (Castagnoli) of bytes 21..end
//	21      2     Attributes (codec bits 0-2, timestamp type bit 3,
//	              transactional bit 4, control bit 5)
//	23      4     LastOffsetDelta
//	27      8     FirstTimestamp
//	35      8     MaxTimestamp
//	43      8     ProducerID
//	51      2     ProducerEpoch
//	53      4     BaseSequence
//	57      4     NumRecords
//	61      ...   records, compressed as a whole with the codec
//
// Codecs are none, gzip, snappy (raw block on encode; raw block or xerial
// framing on decode), lz4 (frame format) and zstd.
//
// No function in this package panics on arbitrary input: every length is
// checked and decompression is capped at MaxDecompressedSize. Corrupt input
// yields an error wrapping ErrCorrupt; a buffer that ends in the middle of a
// batch yields, from Next, an error wrapping io.ErrUnexpectedEOF.
package batch

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math"
	"sync"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// ErrCorrupt is wrapped by every error reporting bytes that are not a valid
// RecordBatch v2: bad length, magic, CRC, attributes, record encoding or
// compressed payload. Test with errors.Is.
var ErrCorrupt = errors.New("corrupt record batch")

// Layout constants.
const (
	// HeaderSize is the size of the fixed batch header (BaseOffset up to and
	// including NumRecords). Every batch is at least this long.
	HeaderSize = 61
	// lengthFieldEnd is the number of bytes up to and including the Length
	// field; a batch is lengthFieldEnd+Length bytes.
	lengthFieldEnd = 12
	// minLength is the smallest valid Length (the header after the field).
	minLength = HeaderSize - lengthFieldEnd
	magicPos  = 16
	crcPos    = 17
	attrPos   = 21
	magicV2   = 2
)

// Attribute bits.
const (
	attrCodecMask     = 0x07
	attrLogAppendTime = 0x08
	attrTransactional = 0x10
	attrControl       = 0x20
)

// NoProducerID is Kafka's producer ID for batches not written by an
// idempotent or transactional producer.
const NoProducerID int64 = -1

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Header is one record header. A nil Value is encoded as Kafka's null and
// decodes back as nil; an empty non-nil Value stays empty.
type Header struct {
	Key   string
	Value []byte
}

// Record is one record of a batch. Key and Value distinguish nil (Kafka null)
// from empty, both on encode and decode.
type Record struct {
	// Offset is the absolute offset. Encode ignores it (the offset delta of
	// a record is its index); Decode sets it to BaseOffset+OffsetDelta.
	Offset int64
	// Timestamp is the record timestamp in Unix milliseconds.
	Timestamp int64
	Key       []byte
	Value     []byte
	Headers   []Header
}

// Meta is the decoded fixed header of one batch.
type Meta struct {
	BaseOffset int64
	// Length is the number of bytes after the Length field, as in Kafka.
	Length               int32
	PartitionLeaderEpoch int32
	CRC                  uint32
	Attributes           int16
	LastOffsetDelta      int32
	FirstTimestamp       int64
	MaxTimestamp         int64
	ProducerID           int64
	ProducerEpoch        int16
	BaseSequence         int32
	NumRecords           int32
}

// Codec returns the compression codec from the attributes (it may be an
// invalid value for a Meta not produced by this package).
func (m Meta) Codec() Codec { return Codec(m.Attributes & attrCodecMask) }

// Size returns the size of the whole batch in bytes: 12 + Length.
func (m Meta) Size() int { return lengthFieldEnd + int(m.Length) }

// EndOffset returns the offset following the batch's last offset:
// BaseOffset + LastOffsetDelta + 1.
func (m Meta) EndOffset() int64 { return m.BaseOffset + int64(m.LastOffsetDelta) + 1 }

// IsTransactional reports whether the transactional attribute bit is set.
func (m Meta) IsTransactional() bool { return m.Attributes&attrTransactional != 0 }

// IsControl reports whether the control attribute bit is set (the batch
// holds transaction markers, not user records).
func (m Meta) IsControl() bool { return m.Attributes&attrControl != 0 }

// IsLogAppendTime reports whether the timestamp type bit is set; the records'
// timestamps are then the batch MaxTimestamp (Decode applies this).
func (m Meta) IsLogAppendTime() bool { return m.Attributes&attrLogAppendTime != 0 }

// EncodeOptions controls Encode. The zero value encodes an uncompressed,
// non-idempotent batch with base offset 0.
type EncodeOptions struct {
	// Codec compresses the records.
	Codec Codec
	// BaseOffset is written as the batch base offset (must be >= 0).
	BaseOffset int64
	// ProducerID of an idempotent or transactional producer. A value < 1
	// (including the zero value and NoProducerID) means none: the batch gets
	// Kafka's ProducerID -1, ProducerEpoch -1 and BaseSequence -1, and
	// ProducerEpoch, BaseSequence and Transactional are ignored. Producer ID
	// 0 therefore cannot be expressed; allocate producer IDs from 1.
	ProducerID    int64
	ProducerEpoch int16
	BaseSequence  int32
	// Transactional sets the transactional attribute bit (needs a ProducerID).
	Transactional bool
}

func corruptf(format string, args ...any) error {
	return fmt.Errorf("batch: "+format+": %w", append(args, ErrCorrupt)...)
}

var scratchPool = sync.Pool{New: func() any { b := make([]byte, 0, 64<<10); return &b }}

// Encode encodes records as one RecordBatch v2 and returns it. See
// AppendEncode.
func Encode(records []Record, opts EncodeOptions) ([]byte, error) {
	var dst []byte
	if opts.Codec == CodecNone {
		// Size the buffer once: growing it from nil while appending
		// thousands of records copied every byte several times and was the
		// largest cost of encoding a batch.
		dst = make([]byte, 0, maxEncodedSize(records))
	}
	return AppendEncode(dst, records, opts)
}

// maxEncodedSize is an upper bound of the uncompressed encoded size of a
// batch of records: the header plus, per record, its bytes and the largest
// varints of its length, attributes, deltas and field lengths.
func maxEncodedSize(records []Record) int {
	const perRecord = 5 + 1 + 10 + 5 + 5 + 5 + 5 // length, attributes, timestamp delta, offset delta, key and value lengths, header count
	n := HeaderSize
	for i := range records {
		r := &records[i]
		n += perRecord + len(r.Key) + len(r.Value)
		for _, h := range r.Headers {
			n += 10 + len(h.Key) + len(h.Value)
		}
	}
	return n
}

// AppendEncode appends one RecordBatch v2 holding records to dst and returns
// the extended slice; on error dst is returned unchanged in length. The batch
// has PartitionLeaderEpoch -1, offset deltas 0..n-1 (Record.Offset is
// ignored), FirstTimestamp = min timestamp with per-record deltas relative to
// it, MaxTimestamp = max timestamp, CreateTime timestamp type and a valid
// CRC-32C, so Check accepts it. records must not be empty.
func AppendEncode(dst []byte, records []Record, opts EncodeOptions) ([]byte, error) {
	if len(records) == 0 {
		return dst, errors.New("batch: encode: no records")
	}
	if len(records) > math.MaxInt32 {
		return dst, fmt.Errorf("batch: encode: too many records (%d)", len(records))
	}
	if !opts.Codec.Valid() {
		return dst, fmt.Errorf("batch: encode: unsupported compression codec %d", int8(opts.Codec))
	}
	if opts.BaseOffset < 0 {
		return dst, fmt.Errorf("batch: encode: negative base offset %d", opts.BaseOffset)
	}
	minTs, maxTs := records[0].Timestamp, records[0].Timestamp
	for i := range records {
		r := &records[i]
		minTs, maxTs = min(minTs, r.Timestamp), max(maxTs, r.Timestamp)
		if len(r.Key) > math.MaxInt32 || len(r.Value) > math.MaxInt32 || len(r.Headers) > math.MaxInt32 {
			return dst, fmt.Errorf("batch: encode: record %d too large", i)
		}
	}
	attrs := int16(opts.Codec)
	pid, epoch, seq := opts.ProducerID, opts.ProducerEpoch, opts.BaseSequence
	if pid < 1 {
		pid, epoch, seq = NoProducerID, -1, -1
	} else if opts.Transactional {
		attrs |= attrTransactional
	}
	rb := kmsg.RecordBatch{
		FirstOffset:          opts.BaseOffset,
		PartitionLeaderEpoch: -1,
		Magic:                magicV2,
		Attributes:           attrs,
		LastOffsetDelta:      int32(len(records) - 1),
		FirstTimestamp:       minTs,
		MaxTimestamp:         maxTs,
		ProducerID:           pid,
		ProducerEpoch:        epoch,
		FirstSequence:        seq,
		NumRecords:           int32(len(records)),
	}
	start := len(dst)
	dst = rb.AppendTo(dst) // Length and CRC are patched below.
	var err error
	if opts.Codec == CodecNone {
		dst, err = appendRecords(dst, records, minTs)
	} else {
		sp := scratchPool.Get().(*[]byte)
		var raw []byte
		raw, err = appendRecords((*sp)[:0], records, minTs)
		if err == nil {
			dst, err = compress(dst, raw, opts.Codec)
		}
		if cap(raw) <= 4<<20 {
			*sp = raw[:0]
			scratchPool.Put(sp)
		}
	}
	if err != nil {
		return dst[:start], err
	}
	length := len(dst) - start - lengthFieldEnd
	if length > math.MaxInt32 {
		return dst[:start], fmt.Errorf("batch: encode: batch too large (%d bytes)", length)
	}
	b := dst[start:]
	binary.BigEndian.PutUint32(b[8:], uint32(length))
	binary.BigEndian.PutUint32(b[crcPos:], crc32.Checksum(b[attrPos:], castagnoli))
	return dst, nil
}

// appendRecords appends the kmsg encoding of records to dst.
func appendRecords(dst []byte, records []Record, baseTs int64) ([]byte, error) {
	var hs []kmsg.Header
	for i := range records {
		r := &records[i]
		hs = hs[:0]
		for _, h := range r.Headers {
			if len(h.Key) > math.MaxInt32 || len(h.Value) > math.MaxInt32 {
				return dst, fmt.Errorf("batch: encode: record %d: header too large", i)
			}
			hs = append(hs, kmsg.Header{Key: h.Key, Value: h.Value})
		}
		d := r.Timestamp - baseTs
		kr := kmsg.Record{
			TimestampDelta64: d,
			TimestampDelta:   int32(d),
			OffsetDelta:      int32(i),
			Key:              r.Key,
			Value:            r.Value,
			Headers:          hs,
		}
		size := bodySize(&kr)
		if size > math.MaxInt32 {
			return dst, fmt.Errorf("batch: encode: record %d too large", i)
		}
		kr.Length = int32(size)
		dst = kr.AppendTo(dst)
	}
	return dst, nil
}

// uvarintLen returns the encoded length of u as a uvarint.
func uvarintLen(u uint64) int64 {
	n := int64(1)
	for u >= 0x80 {
		u >>= 7
		n++
	}
	return n
}

func varlongLen(v int64) int64 { return uvarintLen(uint64(v<<1) ^ uint64(v>>63)) }
func varintLen(v int32) int64  { return uvarintLen(uint64(uint32(v<<1) ^ uint32(v>>31))) }

func varintBytesLen(b []byte) int64 {
	if b == nil {
		return 1
	}
	return varintLen(int32(len(b))) + int64(len(b))
}

// bodySize is the minimal encoded size of a record after its Length field.
func bodySize(r *kmsg.Record) int64 {
	n := 1 + varlongLen(r.TimestampDelta64) + varintLen(r.OffsetDelta) +
		varintBytesLen(r.Key) + varintBytesLen(r.Value) + varintLen(int32(len(r.Headers)))
	for i := range r.Headers {
		h := &r.Headers[i]
		n += varintLen(int32(len(h.Key))) + int64(len(h.Key)) + varintBytesLen(h.Value)
	}
	return n
}

// validate checks that b is exactly one batch: length field, magic, CRC,
// codec and record counts. strict additionally requires NumRecords >= 1 and
// LastOffsetDelta == NumRecords-1.
func validate(b []byte, strict bool) (Meta, error) {
	if len(b) < HeaderSize {
		return Meta{}, corruptf("batch of %d bytes is shorter than the %d-byte header", len(b), HeaderSize)
	}
	length := int32(binary.BigEndian.Uint32(b[8:]))
	if length < minLength || int64(length)+lengthFieldEnd != int64(len(b)) {
		return Meta{}, corruptf("length field %d does not match %d bytes", length, len(b))
	}
	if b[magicPos] != magicV2 {
		return Meta{}, corruptf("magic %d, want 2", int8(b[magicPos]))
	}
	if want, got := binary.BigEndian.Uint32(b[crcPos:]), crc32.Checksum(b[attrPos:], castagnoli); want != got {
		return Meta{}, corruptf("CRC mismatch: header %08x, computed %08x", want, got)
	}
	var rb kmsg.RecordBatch
	if err := rb.ReadFrom(b); err != nil {
		return Meta{}, corruptf("header: %v", err)
	}
	m := Meta{
		BaseOffset:           rb.FirstOffset,
		Length:               rb.Length,
		PartitionLeaderEpoch: rb.PartitionLeaderEpoch,
		CRC:                  uint32(rb.CRC),
		Attributes:           rb.Attributes,
		LastOffsetDelta:      rb.LastOffsetDelta,
		FirstTimestamp:       rb.FirstTimestamp,
		MaxTimestamp:         rb.MaxTimestamp,
		ProducerID:           rb.ProducerID,
		ProducerEpoch:        rb.ProducerEpoch,
		BaseSequence:         rb.FirstSequence,
		NumRecords:           rb.NumRecords,
	}
	if !m.Codec().Valid() {
		return Meta{}, corruptf("unknown compression codec %d", int8(m.Codec()))
	}
	if strict {
		if m.NumRecords < 1 {
			return Meta{}, corruptf("record count %d, want >= 1", m.NumRecords)
		}
		if m.LastOffsetDelta != m.NumRecords-1 {
			return Meta{}, corruptf("last offset delta %d does not match record count %d", m.LastOffsetDelta, m.NumRecords)
		}
	} else if m.NumRecords < 0 || m.LastOffsetDelta < 0 || int64(m.NumRecords) > int64(m.LastOffsetDelta)+1 {
		return Meta{}, corruptf("record count %d inconsistent with last offset delta %d", m.NumRecords, m.LastOffsetDelta)
	}
	return m, nil
}

// Check validates that b is exactly one whole batch, without decoding or
// decompressing records (the produce hot path): the length field matches
// len(b), magic is 2, the CRC-32C is valid, the codec is known, NumRecords
// >= 1 and LastOffsetDelta == NumRecords-1. Errors wrap ErrCorrupt.
func Check(b []byte) (Meta, error) {
	return validate(b, true)
}

// SetBaseOffset overwrites the base offset of the batch at the start of b, in
// place. The base offset is not covered by the CRC, so the batch stays valid.
// If b is shorter than 8 bytes it is left unchanged.
func SetBaseOffset(b []byte, off int64) {
	if len(b) >= 8 {
		binary.BigEndian.PutUint64(b, uint64(off))
	}
}

// SetPartitionLeaderEpoch overwrites the partition leader epoch of the batch
// at the start of b, in place. It is not covered by the CRC, so the batch
// stays valid. If b is shorter than 16 bytes it is left unchanged.
func SetPartitionLeaderEpoch(b []byte, epoch int32) {
	if len(b) >= 16 {
		binary.BigEndian.PutUint32(b[12:], uint32(epoch))
	}
}

// Next splits the first whole batch off b, a buffer of concatenated batches.
// It returns the batch's Meta, the batch bytes (a subslice of b with capped
// capacity) and the rest of b. The batch's length, magic, CRC-32C, codec and
// record counts are checked (NumRecords may be 0 and offset deltas may have
// gaps, as after Kafka compaction); records are not decoded.
//
// Errors: io.EOF (unwrapped) when b is empty; an error wrapping
// io.ErrUnexpectedEOF when b ends in the middle of a batch (a torn tail);
// an error wrapping ErrCorrupt for anything else. A batch whose magic byte
// is present and wrong is reported as corrupt even if truncated.
func Next(b []byte) (Meta, []byte, []byte, error) {
	if len(b) == 0 {
		return Meta{}, nil, nil, io.EOF
	}
	if len(b) < lengthFieldEnd {
		return Meta{}, nil, b, fmt.Errorf("batch: %d trailing bytes are less than a batch header: %w", len(b), io.ErrUnexpectedEOF)
	}
	length := int32(binary.BigEndian.Uint32(b[8:]))
	if length < minLength {
		return Meta{}, nil, b, corruptf("length field %d is less than %d", length, minLength)
	}
	if len(b) > magicPos && b[magicPos] != magicV2 {
		return Meta{}, nil, b, corruptf("magic %d, want 2", int8(b[magicPos]))
	}
	size := int64(length) + lengthFieldEnd
	if size > int64(len(b)) {
		return Meta{}, nil, b, fmt.Errorf("batch: batch of %d bytes but only %d left: %w", size, len(b), io.ErrUnexpectedEOF)
	}
	one := b[:size:size]
	m, err := validate(one, false)
	if err != nil {
		return Meta{}, nil, b, err
	}
	return m, one, b[size:], nil
}

// Decode verifies and decodes the single batch b (len(b) must be exactly the
// batch size): CRC-32C, decompression (capped at MaxDecompressedSize) and
// every record. Records get absolute offsets (BaseOffset+OffsetDelta) and
// timestamps (FirstTimestamp+delta, or MaxTimestamp for LogAppendTime
// batches). Offset deltas must be strictly increasing and <= LastOffsetDelta,
// the record count must equal NumRecords, and no bytes may trail the last
// record; records must use Kafka's minimal varint encoding. Errors wrap
// ErrCorrupt.
//
// The returned Key, Value and header Value slices alias b (uncompressed
// batches) or a buffer owned by the result; do not modify b while using them.
func Decode(b []byte) ([]Record, Meta, error) {
	m, err := validate(b, false)
	if err != nil {
		return nil, Meta{}, err
	}
	var recs []Record
	err = decodeRecords(b, m, func(n int) { recs = make([]Record, 0, n) }, func(r Record) error {
		recs = append(recs, r)
		return nil
	})
	if err != nil {
		return nil, Meta{}, err
	}
	return recs, m, nil
}

// DecodeAll decodes every record of b, a buffer of concatenated whole
// batches, calling fn for each in order; it stops at and returns the first
// error from fn or from decoding (a trailing partial batch is an error
// wrapping io.ErrUnexpectedEOF). Record slices stay valid after fn returns,
// as for Decode.
func DecodeAll(b []byte, fn func(Record) error) error {
	for len(b) > 0 {
		m, one, rest, err := Next(b)
		if err != nil {
			return err
		}
		if err := decodeRecords(one, m, nil, fn); err != nil {
			return err
		}
		b = rest
	}
	return nil
}

// CountRecords returns about how many records the whole batches in b hold,
// from their headers alone (no CRC check, no decoding), to size a slice
// before DecodeAll. It stops at the first batch that is truncated or has a
// bad length. A batch counts for at most what its bytes can hold
// (uncompressed) or 1<<14 (compressed), so corrupt headers cannot make a
// caller allocate much more than the data justifies.
func CountRecords(b []byte) int {
	n := 0
	for len(b) >= HeaderSize {
		length := int32(binary.BigEndian.Uint32(b[8:]))
		size := int64(length) + lengthFieldEnd
		if length < minLength || size > int64(len(b)) {
			break
		}
		c := int(max(int32(binary.BigEndian.Uint32(b[HeaderSize-4:])), 0))
		if Codec(binary.BigEndian.Uint16(b[attrPos:])&attrCodecMask) == CodecNone {
			c = min(c, int(size-HeaderSize)/minRecordSize)
		} else {
			c = min(c, 1<<14)
		}
		n += c
		b = b[size:]
	}
	return n
}

// minRecordSize is the smallest possible encoded record: length, attributes,
// timestamp delta, offset delta, key, value and header count, 1 byte each.
const minRecordSize = 7

func decodeRecords(b []byte, m Meta, prealloc func(int), emit func(Record) error) error {
	data, err := decompress(b[HeaderSize:], m.Codec())
	if err != nil {
		return fmt.Errorf("batch at offset %d: %w", m.BaseOffset, err)
	}
	n := int(m.NumRecords)
	if int64(n)*minRecordSize > int64(len(data)) {
		return corruptf("%d records cannot fit in %d bytes", n, len(data))
	}
	if prealloc != nil {
		// Grow beyond this by append, so a lying NumRecords cannot make
		// us allocate much more than the data justifies.
		prealloc(min(n, 1<<14))
	}
	var (
		kr        kmsg.Record
		slab      []Header
		prevDelta int32 = -1
	)
	for i := 0; i < n; i++ {
		l, vn := binary.Varint(data)
		if vn <= 0 || vn > 5 || l < 0 || l > int64(len(data)-vn) {
			return corruptf("record %d: bad length", i)
		}
		end := vn + int(l)
		if err := kr.ReadFrom(data[:end]); err != nil {
			return corruptf("record %d: %v", i, err)
		}
		if int64(kr.Length) != l || bodySize(&kr) != l {
			return corruptf("record %d: length %d does not match its fields", i, l)
		}
		if kr.OffsetDelta <= prevDelta || kr.OffsetDelta > m.LastOffsetDelta {
			return corruptf("record %d: offset delta %d out of order", i, kr.OffsetDelta)
		}
		prevDelta = kr.OffsetDelta
		r := Record{
			Offset:    m.BaseOffset + int64(kr.OffsetDelta),
			Timestamp: m.FirstTimestamp + kr.TimestampDelta64,
			Key:       kr.Key,
			Value:     kr.Value,
		}
		if m.IsLogAppendTime() {
			r.Timestamp = m.MaxTimestamp
		}
		if len(kr.Headers) > 0 {
			if slab == nil {
				slab = make([]Header, 0, min(len(kr.Headers)*(n-i), 1<<12))
			}
			start := len(slab)
			for _, h := range kr.Headers {
				slab = append(slab, Header{Key: h.Key, Value: h.Value})
			}
			r.Headers = slab[start:len(slab):len(slab)]
		}
		if err := emit(r); err != nil {
			return err
		}
		data = data[end:]
	}
	if len(data) != 0 {
		return corruptf("%d bytes after the last record", len(data))
	}
	return nil
}

// LastLeaderEpoch returns the partition leader epoch of the last whole batch
// in b (concatenated batches), reading headers only; ok is false when b holds
// no whole batch. Readers send it back with their next fetch so the server
// can tell them when an unclean handoff truncated what they read.
func LastLeaderEpoch(b []byte) (epoch int32, ok bool) {
	for len(b) >= HeaderSize {
		length := int32(binary.BigEndian.Uint32(b[8:]))
		size := int64(length) + lengthFieldEnd
		if length < minLength || size > int64(len(b)) {
			break
		}
		epoch, ok = int32(binary.BigEndian.Uint32(b[12:])), true
		b = b[size:]
	}
	return epoch, ok
}
