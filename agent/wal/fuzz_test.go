package wal

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"testing"
)

func checkDecode(t *testing.T, b []byte) {
	f, n, err := decodeFrame(b)
	if err != nil {
		if !errors.Is(err, ErrCorrupt) && !errors.Is(err, errShortFrame) {
			t.Fatalf("unexpected error class: %v", err)
		}
		return
	}
	if n < frameHeaderLen || n > len(b) {
		t.Fatalf("decoded length %d of %d bytes", n, len(b))
	}
	if re := encodeFrame(f); !bytes.Equal(re, b[:n]) {
		t.Fatalf("re-encoding differs:\n got %x\nwant %x", re, b[:n])
	}
}

// FuzzFrame checks the frame decoder used by recovery and Read: it never
// panics, and a decoded frame re-encodes to exactly the bytes it came from.
// Each input is also tried with its CRC fixed up, so that the fuzzer reaches
// the payload parser.
func FuzzFrame(f *testing.F) {
	seeds := []frame{
		{Topic: "orders", Partition: 3, BaseOffset: 100, EndOffset: 110, MaxTimestampMs: 1700000000000, Data: []byte("record batch bytes")},
		{Topic: "", Partition: 0, BaseOffset: 0, EndOffset: 1},
		{Topic: string(bytes.Repeat([]byte("t"), 200)), Partition: -1, BaseOffset: -5, EndOffset: 1 << 62, MaxTimestampMs: -1, Data: make([]byte, 300)},
	}
	for _, s := range seeds {
		b := encodeFrame(s)
		f.Add(b)
		f.Add(b[:len(b)-1])                 // torn
		f.Add(append(b, encodeFrame(s)...)) // two frames
		f.Add(append(append([]byte{}, b...), 0xde, 0xad))
		c := append([]byte{}, b...)
		c[len(c)-1] ^= 1 // bad CRC
		f.Add(c)
	}
	f.Add([]byte{})
	f.Add(make([]byte, 8))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0})
	// Non-canonical topic length varint (0x80 0x00) with a valid CRC.
	p := []byte{frameVersion, 0x80, 0x00}
	p = append(p, make([]byte, 28)...)
	h := binary.BigEndian.AppendUint32(nil, uint32(len(p)))
	h = binary.BigEndian.AppendUint32(h, crc32.Checksum(p, castagnoli))
	f.Add(append(h, p...))

	f.Fuzz(func(t *testing.T, b []byte) {
		checkDecode(t, b)
		if len(b) >= frameHeaderLen {
			plen := binary.BigEndian.Uint32(b)
			if uint64(plen) <= uint64(len(b)-frameHeaderLen) {
				c := append([]byte(nil), b...)
				binary.BigEndian.PutUint32(c[4:], crc32.Checksum(c[frameHeaderLen:frameHeaderLen+int(plen)], castagnoli))
				checkDecode(t, c)
			}
		}
	})
}

func TestFrameRoundTrip(t *testing.T) {
	in := frame{Topic: "t", Partition: 7, BaseOffset: 1, EndOffset: 9, MaxTimestampMs: 42, Data: []byte{1, 2, 3}}
	b := encodeFrame(in)
	if len(b) != frameOverhead(in.Topic)+len(in.Data) {
		t.Fatalf("frame length %d, overhead says %d", len(b), frameOverhead(in.Topic)+len(in.Data))
	}
	out, n, err := decodeFrame(b)
	if err != nil || n != len(b) || out.Topic != in.Topic || out.Partition != in.Partition || out.BaseOffset != in.BaseOffset ||
		out.EndOffset != in.EndOffset || out.MaxTimestampMs != in.MaxTimestampMs || !bytes.Equal(out.Data, in.Data) {
		t.Fatalf("round trip: %+v %d %v", out, n, err)
	}
	for i := range b {
		if _, _, err := decodeFrame(b[:i]); !errors.Is(err, errShortFrame) {
			t.Fatalf("prefix %d: %v", i, err)
		}
	}
}
