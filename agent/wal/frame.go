package wal

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
)

const (
	// frameHeaderLen is the fixed frame header: uint32 payload length, uint32 CRC-32C.
	frameHeaderLen = 8
	// frameVersion is the only payload version this package writes and reads.
	frameVersion = 1
	// maxPayloadLen bounds a frame's payload so that a garbage length field is
	// recognised as corruption instead of causing a huge allocation.
	maxPayloadLen = 1 << 30
	// fixedMetaLen is the payload metadata without the topic bytes and their
	// length prefix: version, partition, base offset, end offset, max timestamp.
	fixedMetaLen = 1 + 4 + 8 + 8 + 8
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// errShortFrame reports that b ends before the frame it starts is complete
// (a torn tail when it happens at the end of a segment file).
var errShortFrame = errors.New("wal: incomplete frame")

// frame is a decoded WAL frame.
type frame struct {
	Topic          string
	Partition      int32
	BaseOffset     int64
	EndOffset      int64
	MaxTimestampMs int64
	Data           []byte // aliases the decoded buffer
}

func uvarintLen(x uint64) int {
	n := 1
	for x >= 0x80 {
		x >>= 7
		n++
	}
	return n
}

// metaLen is the number of payload bytes before the data.
func metaLen(topic string) int {
	return fixedMetaLen + uvarintLen(uint64(len(topic))) + len(topic)
}

// frameOverhead is the number of frame bytes that are not data.
func frameOverhead(topic string) int { return frameHeaderLen + metaLen(topic) }

// appendFrameHead appends the frame header and the payload metadata (every
// frame byte except the data) to dst. The CRC covers the metadata and data.
func appendFrameHead(dst []byte, topic string, partition int32, base, end, maxTs int64, data []byte) []byte {
	start := len(dst)
	payloadLen := metaLen(topic) + len(data)
	dst = binary.BigEndian.AppendUint32(dst, uint32(payloadLen))
	dst = binary.BigEndian.AppendUint32(dst, 0) // CRC, filled below
	dst = append(dst, frameVersion)
	dst = binary.AppendUvarint(dst, uint64(len(topic)))
	dst = append(dst, topic...)
	dst = binary.BigEndian.AppendUint32(dst, uint32(partition))
	dst = binary.BigEndian.AppendUint64(dst, uint64(base))
	dst = binary.BigEndian.AppendUint64(dst, uint64(end))
	dst = binary.BigEndian.AppendUint64(dst, uint64(maxTs))
	crc := crc32.Update(0, castagnoli, dst[start+frameHeaderLen:])
	crc = crc32.Update(crc, castagnoli, data)
	binary.BigEndian.PutUint32(dst[start+4:], crc)
	return dst
}

// encodeFrame returns the complete encoding of f.
func encodeFrame(f frame) []byte {
	b := appendFrameHead(make([]byte, 0, frameOverhead(f.Topic)+len(f.Data)),
		f.Topic, f.Partition, f.BaseOffset, f.EndOffset, f.MaxTimestampMs, f.Data)
	return append(b, f.Data...)
}

// decodeFrame decodes the frame at the start of b and returns it with its
// encoded length. It never panics. It returns errShortFrame when b ends before
// the frame does, and an error wrapping ErrCorrupt when the length, CRC or
// payload is invalid. A successfully decoded frame re-encodes (encodeFrame) to
// exactly b[:n]: the decoder rejects non-canonical encodings.
func decodeFrame(b []byte) (f frame, n int, err error) {
	if len(b) < frameHeaderLen {
		return frame{}, 0, errShortFrame
	}
	plen := binary.BigEndian.Uint32(b[0:4])
	if plen > maxPayloadLen {
		return frame{}, 0, fmt.Errorf("%w: frame length %d exceeds maximum %d", ErrCorrupt, plen, maxPayloadLen)
	}
	if uint64(len(b)-frameHeaderLen) < uint64(plen) {
		return frame{}, 0, errShortFrame
	}
	n = frameHeaderLen + int(plen)
	payload := b[frameHeaderLen:n]
	if want, got := binary.BigEndian.Uint32(b[4:8]), crc32.Checksum(payload, castagnoli); want != got {
		return frame{}, 0, fmt.Errorf("%w: CRC mismatch (stored %08x, computed %08x)", ErrCorrupt, want, got)
	}
	if len(payload) < 1 {
		return frame{}, 0, fmt.Errorf("%w: empty payload", ErrCorrupt)
	}
	if payload[0] != frameVersion {
		return frame{}, 0, fmt.Errorf("%w: unknown frame version %d", ErrCorrupt, payload[0])
	}
	p := payload[1:]
	tlen, vn := binary.Uvarint(p)
	if vn <= 0 || vn != uvarintLen(tlen) {
		return frame{}, 0, fmt.Errorf("%w: bad topic length varint", ErrCorrupt)
	}
	p = p[vn:]
	if tlen > uint64(len(p)) || uint64(len(p))-tlen < fixedMetaLen-1 {
		return frame{}, 0, fmt.Errorf("%w: payload too short for its metadata", ErrCorrupt)
	}
	f.Topic = string(p[:tlen])
	p = p[tlen:]
	f.Partition = int32(binary.BigEndian.Uint32(p[0:4]))
	f.BaseOffset = int64(binary.BigEndian.Uint64(p[4:12]))
	f.EndOffset = int64(binary.BigEndian.Uint64(p[12:20]))
	f.MaxTimestampMs = int64(binary.BigEndian.Uint64(p[20:28]))
	f.Data = p[28:]
	return f, n, nil
}
