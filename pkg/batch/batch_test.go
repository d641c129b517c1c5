package batch

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"reflect"
	"sync"
	"testing"

	"github.com/klauspost/compress/s2"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

var allCodecs = []Codec{CodecNone, CodecGzip, CodecSnappy, CodecLZ4, CodecZstd}

func sampleRecords() []Record {
	return []Record{
		{Timestamp: 1_700_000_000_500, Key: []byte("k1"), Value: []byte("hello"),
			Headers: []Header{{Key: "h1", Value: []byte("v1")}, {Key: "nil", Value: nil}, {Key: "", Value: []byte{}}}},
		{Timestamp: 1_700_000_000_000, Key: nil, Value: []byte("null key")},
		{Timestamp: 1_700_000_009_999, Key: []byte{}, Value: nil},
		{Timestamp: 1_700_000_000_000, Key: bytes.Repeat([]byte("K"), 300), Value: bytes.Repeat([]byte("value "), 2000)},
		{Timestamp: -5, Key: []byte("negative ts"), Value: []byte{}},
	}
}

// fixCRC recomputes the CRC of a batch whose covered bytes were edited.
func fixCRC(b []byte) {
	binary.BigEndian.PutUint32(b[crcPos:], crc32.Checksum(b[attrPos:], castagnoli))
}

func mustEncode(t testing.TB, recs []Record, opts EncodeOptions) []byte {
	t.Helper()
	b, err := Encode(recs, opts)
	if err != nil {
		t.Fatalf("Encode: %v", err)
	}
	return b
}

func wantDecoded(in []Record, base int64) []Record {
	out := make([]Record, len(in))
	for i, r := range in {
		r.Offset = base + int64(i)
		if len(r.Headers) == 0 {
			r.Headers = nil
		}
		out[i] = r
	}
	return out
}

func TestRoundTripEveryCodec(t *testing.T) {
	for _, c := range allCodecs {
		t.Run(c.String(), func(t *testing.T) {
			recs := sampleRecords()
			b := mustEncode(t, recs, EncodeOptions{Codec: c, BaseOffset: 1000})
			m, err := Check(b)
			if err != nil {
				t.Fatalf("Check: %v", err)
			}
			if m.Codec() != c || m.Size() != len(b) || m.BaseOffset != 1000 || m.NumRecords != 5 ||
				m.LastOffsetDelta != 4 || m.EndOffset() != 1005 || m.PartitionLeaderEpoch != -1 {
				t.Fatalf("meta = %+v", m)
			}
			if m.FirstTimestamp != -5 || m.MaxTimestamp != 1_700_000_009_999 {
				t.Fatalf("timestamps first=%d max=%d", m.FirstTimestamp, m.MaxTimestamp)
			}
			if m.ProducerID != -1 || m.ProducerEpoch != -1 || m.BaseSequence != -1 || m.IsTransactional() || m.IsControl() {
				t.Fatalf("producer fields %+v", m)
			}
			got, m2, err := Decode(b)
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if m2 != m {
				t.Fatalf("Decode meta %+v != Check meta %+v", m2, m)
			}
			want := wantDecoded(recs, 1000)
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("records differ:\n got %+v\nwant %+v", got, want)
			}
			// nil vs empty must survive.
			if got[1].Key != nil || got[2].Key == nil || got[2].Value != nil || got[4].Value == nil {
				t.Fatal("nil/empty distinction lost")
			}
			if got[0].Headers[1].Value != nil || got[0].Headers[2].Value == nil {
				t.Fatal("header nil/empty distinction lost")
			}
		})
	}
}

func TestAppendEncode(t *testing.T) {
	prefix := []byte("prefix")
	recs := sampleRecords()
	out, err := AppendEncode(append([]byte(nil), prefix...), recs, EncodeOptions{Codec: CodecZstd})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(out, prefix) {
		t.Fatal("prefix clobbered")
	}
	if _, err := Check(out[len(prefix):]); err != nil {
		t.Fatal(err)
	}
	// Errors leave dst unchanged.
	out2, err := AppendEncode(prefix, nil, EncodeOptions{})
	if err == nil || !bytes.Equal(out2, prefix) {
		t.Fatalf("empty records: err=%v out=%q", err, out2)
	}
}

func TestEncodeErrors(t *testing.T) {
	recs := sampleRecords()
	for name, tc := range map[string]struct {
		recs []Record
		opts EncodeOptions
	}{
		"no records":      {nil, EncodeOptions{}},
		"bad codec":       {recs, EncodeOptions{Codec: 5}},
		"negative codec":  {recs, EncodeOptions{Codec: -1}},
		"negative offset": {recs, EncodeOptions{BaseOffset: -1}},
	} {
		if _, err := Encode(tc.recs, tc.opts); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

func TestProducerFields(t *testing.T) {
	recs := sampleRecords()[:2]
	b := mustEncode(t, recs, EncodeOptions{ProducerID: 42, ProducerEpoch: 3, BaseSequence: 17, Transactional: true})
	m, err := Check(b)
	if err != nil {
		t.Fatal(err)
	}
	if m.ProducerID != 42 || m.ProducerEpoch != 3 || m.BaseSequence != 17 || !m.IsTransactional() {
		t.Fatalf("meta %+v", m)
	}
	b = mustEncode(t, recs, EncodeOptions{ProducerID: NoProducerID, ProducerEpoch: 3, BaseSequence: 17, Transactional: true})
	m, _ = Check(b)
	if m.ProducerID != -1 || m.ProducerEpoch != -1 || m.BaseSequence != -1 || m.IsTransactional() {
		t.Fatalf("meta %+v", m)
	}
}

// TestGolden compares Encode with a batch assembled by hand from the Kafka
// protocol specification.
func TestGolden(t *testing.T) {
	recs := []Record{
		{Timestamp: 1000, Key: []byte("a"), Value: []byte("bc"), Headers: []Header{{Key: "h", Value: []byte("v")}}},
		{Timestamp: 1003, Key: nil, Value: []byte{}},
	}
	got := mustEncode(t, recs, EncodeOptions{BaseOffset: 7})

	var rec []byte
	// record 0: attrs 0, tsDelta 0, offDelta 0, key "a", value "bc", 1 header h=v
	r0 := []byte{0, 0, 0, 2, 'a', 4, 'b', 'c', 2, 2, 'h', 2, 'v'}
	rec = append(rec, byte(len(r0)<<1))
	rec = append(rec, r0...)
	// record 1: tsDelta 3 (zigzag 6), offDelta 1 (zigzag 2), null key (zigzag 1), empty value, 0 headers
	r1 := []byte{0, 6, 2, 1, 0, 0}
	rec = append(rec, byte(len(r1)<<1))
	rec = append(rec, r1...)

	var w bytes.Buffer
	be := func(v any) { _ = binary.Write(&w, binary.BigEndian, v) }
	be(int64(7))
	be(int32(49 + len(rec)))
	be(int32(-1))   // partition leader epoch
	be(int8(2))     // magic
	be(uint32(0))   // crc placeholder
	be(int16(0))    // attributes
	be(int32(1))    // last offset delta
	be(int64(1000)) // first timestamp
	be(int64(1003)) // max timestamp
	be(int64(-1))   // producer id
	be(int16(-1))   // producer epoch
	be(int32(-1))   // base sequence
	be(int32(2))    // records
	w.Write(rec)
	want := w.Bytes()
	fixCRC(want)
	if !bytes.Equal(got, want) {
		t.Fatalf("encoding differs from hand-made batch:\n got %x\nwant %x", got, want)
	}
}

func TestCRCCorruptionDetected(t *testing.T) {
	for _, c := range allCodecs {
		b := mustEncode(t, sampleRecords(), EncodeOptions{Codec: c})
		for i := 0; i < len(b); i++ {
			cp := append([]byte(nil), b...)
			cp[i] ^= 0x40
			_, err := Check(cp)
			switch {
			case i < 8 || (i >= 12 && i < 16):
				// base offset and leader epoch are outside the CRC.
				if err != nil {
					t.Fatalf("%v: flip at %d (not CRC covered): %v", c, i, err)
				}
			default:
				if !errors.Is(err, ErrCorrupt) {
					t.Fatalf("%v: flip at %d not detected: %v", c, i, err)
				}
				if _, _, err := Decode(cp); !errors.Is(err, ErrCorrupt) {
					t.Fatalf("%v: Decode flip at %d not detected: %v", c, i, err)
				}
			}
		}
	}
}

func TestSetBaseOffsetAndEpochKeepCRC(t *testing.T) {
	b := mustEncode(t, sampleRecords(), EncodeOptions{Codec: CodecLZ4})
	crc := binary.BigEndian.Uint32(b[crcPos:])
	SetBaseOffset(b, 1<<40)
	SetPartitionLeaderEpoch(b, 9)
	m, err := Check(b)
	if err != nil {
		t.Fatal(err)
	}
	if m.BaseOffset != 1<<40 || m.PartitionLeaderEpoch != 9 || m.CRC != crc {
		t.Fatalf("meta %+v", m)
	}
	recs, _, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range recs {
		if r.Offset != 1<<40+int64(i) {
			t.Fatalf("record %d offset %d", i, r.Offset)
		}
	}
	// Short buffers are left alone, no panic.
	short := []byte{1, 2, 3}
	SetBaseOffset(short, 5)
	SetPartitionLeaderEpoch(short, 5)
	if !bytes.Equal(short, []byte{1, 2, 3}) {
		t.Fatal("short buffer modified")
	}
}

func concatBatches(t testing.TB) ([]byte, []int) {
	var all []byte
	var ends []int
	off := int64(0)
	for i, c := range allCodecs {
		recs := sampleRecords()[:i+1]
		var err error
		all, err = AppendEncode(all, recs, EncodeOptions{Codec: c, BaseOffset: off})
		if err != nil {
			t.Fatal(err)
		}
		off += int64(len(recs))
		ends = append(ends, len(all))
	}
	return all, ends
}

func TestNext(t *testing.T) {
	all, ends := concatBatches(t)
	rest := all
	var off int64
	for i := range ends {
		m, one, r, err := Next(rest)
		if err != nil {
			t.Fatalf("batch %d: %v", i, err)
		}
		if m.BaseOffset != off || m.Size() != len(one) || m.Codec() != allCodecs[i] {
			t.Fatalf("batch %d meta %+v", i, m)
		}
		off = m.EndOffset()
		rest = r
	}
	if _, _, _, err := Next(rest); err != io.EOF {
		t.Fatalf("end: %v", err)
	}

	// Every truncation is either a clean boundary or a torn tail.
	for cut := 0; cut < len(all); cut++ {
		b := all[:cut]
		var err error
		for {
			_, _, b, err = Next(b)
			if err != nil {
				break
			}
		}
		isBoundary := cut == 0
		for _, e := range ends {
			isBoundary = isBoundary || e == cut
		}
		if isBoundary && err != io.EOF {
			t.Fatalf("cut %d at boundary: %v", cut, err)
		}
		if !isBoundary && !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("cut %d: want ErrUnexpectedEOF, got %v", cut, err)
		}
		if !isBoundary && errors.Is(err, ErrCorrupt) {
			t.Fatalf("cut %d: torn tail reported as corrupt", cut)
		}
	}

	// Corruption in the second batch: CRC, magic, length.
	second := ends[0]
	for name, mut := range map[string]func([]byte){
		"crc":       func(b []byte) { b[second+HeaderSize+1] ^= 1 },
		"magic":     func(b []byte) { b[second+magicPos] = 1 },
		"short len": func(b []byte) { binary.BigEndian.PutUint32(b[second+8:], 10) },
		"neg len":   func(b []byte) { binary.BigEndian.PutUint32(b[second+8:], 0xffffffff) },
	} {
		cp := append([]byte(nil), all...)
		mut(cp)
		_, _, rest, err := Next(cp)
		if err != nil {
			t.Fatalf("%s: first batch: %v", name, err)
		}
		if _, _, _, err = Next(rest); !errors.Is(err, ErrCorrupt) || errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("%s: want ErrCorrupt, got %v", name, err)
		}
	}
	// A truncated batch with a wrong magic byte is corrupt, not torn.
	cp := append([]byte(nil), all[:20]...)
	cp[magicPos] = 0
	if _, _, _, err := Next(cp); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("truncated bad magic: %v", err)
	}
}

func TestDecodeAll(t *testing.T) {
	all, _ := concatBatches(t)
	var got []Record
	if err := DecodeAll(all, func(r Record) error { got = append(got, r); return nil }); err != nil {
		t.Fatal(err)
	}
	var want []Record
	for i := range allCodecs {
		want = append(want, sampleRecords()[:i+1]...)
	}
	if !reflect.DeepEqual(got, wantDecoded(want, 0)) {
		t.Fatalf("DecodeAll records differ")
	}
	stop := errors.New("stop")
	n := 0
	if err := DecodeAll(all, func(Record) error { n++; return stop }); err != stop || n != 1 {
		t.Fatalf("fn error: %v after %d", err, n)
	}
	if err := DecodeAll(all[:len(all)-1], func(Record) error { return nil }); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("torn: %v", err)
	}
}

func TestCountRecords(t *testing.T) {
	all, _ := concatBatches(t)
	want := 0
	for i := range allCodecs {
		want += i + 1
	}
	if got := CountRecords(all); got != want {
		t.Fatalf("CountRecords = %d, want %d", got, want)
	}
	// A torn tail is not counted; an empty or short buffer counts 0.
	last, _ := Encode(sampleRecords()[:2], EncodeOptions{})
	if got := CountRecords(append(append([]byte(nil), all...), last[:len(last)-1]...)); got != want {
		t.Fatalf("with a torn tail: %d, want %d", got, want)
	}
	for _, b := range [][]byte{nil, all[:HeaderSize-1], make([]byte, 100)} {
		if got := CountRecords(b); got != 0 {
			t.Fatalf("CountRecords of %d bytes = %d, want 0", len(b), got)
		}
	}
	// A lying NumRecords in an uncompressed batch counts for at most what
	// its bytes can hold.
	lie := append([]byte(nil), last...)
	binary.BigEndian.PutUint32(lie[HeaderSize-4:], 1<<30)
	if got, limit := CountRecords(lie), (len(lie)-HeaderSize)/minRecordSize; got > limit {
		t.Fatalf("lying header counts %d, more than %d", got, limit)
	}
}

func TestXerialSnappy(t *testing.T) {
	recs := sampleRecords()
	raw, err := appendRecords(nil, recs, -5)
	if err != nil {
		t.Fatal(err)
	}
	// Java's xerial SnappyOutputStream: magic, version 1, compat 1, then
	// chunks of (int32 length, snappy block). Use small chunks.
	x := append([]byte(nil), xerialMagic...)
	x = binary.BigEndian.AppendUint32(x, 1)
	x = binary.BigEndian.AppendUint32(x, 1)
	for rest := raw; len(rest) > 0; {
		n := min(len(rest), 1000)
		blk := s2.EncodeSnappy(nil, rest[:n])
		x = binary.BigEndian.AppendUint32(x, uint32(len(blk)))
		x = append(x, blk...)
		rest = rest[n:]
	}
	b := mustEncode(t, recs, EncodeOptions{Codec: CodecSnappy})
	b = append(b[:HeaderSize:HeaderSize], x...)
	binary.BigEndian.PutUint32(b[8:], uint32(len(b)-12))
	fixCRC(b)
	got, _, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, wantDecoded(recs, 0)) {
		t.Fatal("xerial records differ")
	}
	// A truncated chunk is corrupt.
	b = b[:len(b)-3]
	binary.BigEndian.PutUint32(b[8:], uint32(len(b)-12))
	fixCRC(b)
	if _, _, err := Decode(b); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("truncated xerial: %v", err)
	}
}

// rebuild returns a batch with the given header edits and records payload,
// with a valid length and CRC.
func rebuild(t testing.TB, base []byte, payload []byte, edit func(h []byte)) []byte {
	b := append(append([]byte(nil), base[:HeaderSize]...), payload...)
	if edit != nil {
		edit(b)
	}
	binary.BigEndian.PutUint32(b[8:], uint32(len(b)-12))
	fixCRC(b)
	return b
}

func TestBadInput(t *testing.T) {
	good := mustEncode(t, sampleRecords()[:3], EncodeOptions{})
	payload := append([]byte(nil), good[HeaderSize:]...)
	setI32 := func(pos int, v int32) func([]byte) {
		return func(h []byte) { binary.BigEndian.PutUint32(h[pos:], uint32(v)) }
	}
	bomb := func(c Codec) []byte {
		p, err := compress(nil, make([]byte, MaxDecompressedSize+1), c)
		if err != nil {
			t.Fatal(err)
		}
		return rebuild(t, good, p, func(h []byte) { h[attrPos+1] = byte(c) })
	}
	cases := []struct {
		name       string
		b          []byte
		checkOK    bool // Check passes (no record decoding) but Decode fails
		checkError bool // Check fails but Decode (lenient) may pass
	}{
		{name: "empty", b: nil},
		{name: "short header", b: good[:HeaderSize-1]},
		{name: "header only", b: good[:HeaderSize]},
		{name: "trailing byte", b: append(append([]byte(nil), good...), 0)},
		{name: "truncated", b: good[:len(good)-1]},
		{name: "unknown codec 5", b: rebuild(t, good, payload, func(h []byte) { h[attrPos+1] = 5 })},
		{name: "unknown codec 7", b: rebuild(t, good, payload, func(h []byte) { h[attrPos+1] = 7 })},
		{name: "magic 1", b: func() []byte { b := append([]byte(nil), good...); b[magicPos] = 1; return b }()},
		{name: "zero records", b: rebuild(t, good, payload, setI32(57, 0))},
		{name: "negative records", b: rebuild(t, good, payload, setI32(57, -1))},
		{name: "too many records", b: rebuild(t, good, payload, setI32(57, 4)), checkError: true},
		{name: "huge record count", b: rebuild(t, good, payload, func(h []byte) { setI32(57, 1<<30)(h); setI32(23, 1<<30-1)(h) }), checkOK: true},
		{name: "fewer records", b: rebuild(t, good, payload, func(h []byte) { setI32(57, 2)(h); setI32(23, 1)(h) }), checkOK: true},
		{name: "last delta mismatch", b: rebuild(t, good, payload, setI32(23, 5)), checkError: true},
		{name: "negative last delta", b: rebuild(t, good, payload, setI32(23, -1))},
		{name: "trailing payload byte", b: rebuild(t, good, append(append([]byte(nil), payload...), 0), nil), checkOK: true},
		{name: "record length too long", b: rebuild(t, good, func() []byte { p := append([]byte(nil), payload...); p[0] = 0x7e; return p }(), nil), checkOK: true},
		{name: "record length negative", b: rebuild(t, good, func() []byte { p := append([]byte(nil), payload...); p[0] = 1; return p }(), nil), checkOK: true},
		{name: "garbage payload", b: rebuild(t, good, bytes.Repeat([]byte{0xff}, 40), nil), checkOK: true},
		{name: "gzip garbage", b: rebuild(t, good, payload, func(h []byte) { h[attrPos+1] = byte(CodecGzip) }), checkOK: true},
		{name: "snappy garbage", b: rebuild(t, good, payload, func(h []byte) { h[attrPos+1] = byte(CodecSnappy) }), checkOK: true},
		{name: "lz4 garbage", b: rebuild(t, good, payload, func(h []byte) { h[attrPos+1] = byte(CodecLZ4) }), checkOK: true},
		{name: "zstd garbage", b: rebuild(t, good, payload, func(h []byte) { h[attrPos+1] = byte(CodecZstd) }), checkOK: true},
		{name: "gzip bomb", b: bomb(CodecGzip), checkOK: true},
		{name: "snappy bomb", b: bomb(CodecSnappy), checkOK: true},
		{name: "lz4 bomb", b: bomb(CodecLZ4), checkOK: true},
		{name: "zstd bomb", b: bomb(CodecZstd), checkOK: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, cerr := Check(tc.b)
			if tc.checkOK {
				if cerr != nil {
					t.Fatalf("Check: %v", cerr)
				}
			} else if !errors.Is(cerr, ErrCorrupt) {
				t.Fatalf("Check: want ErrCorrupt, got %v", cerr)
			}
			if !tc.checkError {
				if _, _, err := Decode(tc.b); !errors.Is(err, ErrCorrupt) {
					t.Fatalf("Decode: want ErrCorrupt, got %v", err)
				}
			}
		})
	}
}

func TestDecodeOffsetGaps(t *testing.T) {
	// A compacted batch: records with offset deltas 0 and 2 of last delta 2.
	recs := []Record{{Timestamp: 1, Value: []byte("a")}, {Timestamp: 2, Value: []byte("b")}}
	b := mustEncode(t, recs, EncodeOptions{BaseOffset: 10})
	// second record's offset delta byte: record 0 is [len, attr, ts, off, key, vlen, 'a', hdrs]
	p := append([]byte(nil), b[HeaderSize:]...)
	r0 := int(p[0]>>1) + 1
	if p[r0+3] != 2 { // zigzag(1)
		t.Fatalf("unexpected layout %x", p)
	}
	p[r0+3] = 4 // zigzag(2)
	gb := rebuild(t, b, p, func(h []byte) { binary.BigEndian.PutUint32(h[23:], 2) })
	if _, err := Check(gb); err == nil {
		t.Fatal("Check accepted gaps")
	}
	got, m, err := Decode(gb)
	if err != nil {
		t.Fatal(err)
	}
	if got[0].Offset != 10 || got[1].Offset != 12 || m.EndOffset() != 13 {
		t.Fatalf("offsets %d %d end %d", got[0].Offset, got[1].Offset, m.EndOffset())
	}
	// Out of order deltas are corrupt.
	p[r0+3] = 0
	gb = rebuild(t, b, p, nil)
	if _, _, err := Decode(gb); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("duplicate delta: %v", err)
	}
}

func TestLogAppendTime(t *testing.T) {
	b := mustEncode(t, sampleRecords(), EncodeOptions{})
	b[attrPos+1] |= attrLogAppendTime
	fixCRC(b)
	recs, m, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		if r.Timestamp != m.MaxTimestamp {
			t.Fatalf("timestamp %d, want %d", r.Timestamp, m.MaxTimestamp)
		}
	}
}

func TestCodecNames(t *testing.T) {
	for _, c := range allCodecs {
		p, err := ParseCodec(c.String())
		if err != nil || p != c {
			t.Fatalf("ParseCodec(%q) = %v, %v", c.String(), p, err)
		}
	}
	if c, err := ParseCodec("ZSTD"); err != nil || c != CodecZstd {
		t.Fatal("case-insensitive parse")
	}
	if _, err := ParseCodec("brotli"); err == nil {
		t.Fatal("brotli accepted")
	}
	if Codec(6).String() != "codec(6)" || Codec(6).Valid() {
		t.Fatal("unknown codec")
	}
}

func TestConcurrentCodecs(t *testing.T) {
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < 20; i++ {
				c := allCodecs[(g+i)%len(allCodecs)]
				recs := sampleRecords()
				recs[0].Value = []byte(fmt.Sprintf("g%d-i%d", g, i))
				b, err := Encode(recs, EncodeOptions{Codec: c, BaseOffset: int64(i)})
				if err != nil {
					errs <- err
					return
				}
				got, _, err := Decode(b)
				if err != nil {
					errs <- err
					return
				}
				if !reflect.DeepEqual(got, wantDecoded(recs, int64(i))) {
					errs <- fmt.Errorf("g%d i%d %v: mismatch", g, i, c)
					return
				}
			}
		}(g)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// TestEncodeSizesBufferOnce checks that Encode's size bound holds for
// records with and without keys and headers, so the buffer is allocated once,
// and that its bytes are AppendEncode's.
func TestEncodeSizesBufferOnce(t *testing.T) {
	cases := map[string][]Record{
		"values":  {{Value: make([]byte, 100)}, {Value: nil}, {Value: make([]byte, 1<<16)}},
		"keys":    {{Key: []byte("k"), Value: make([]byte, 300)}, {Key: make([]byte, 200)}},
		"headers": {{Value: []byte("v"), Headers: []Header{{Key: "a", Value: make([]byte, 1000)}, {Key: "", Value: nil}}}},
		"timestamps": {{Timestamp: 1, Value: []byte("x")}, {Timestamp: 1 << 60, Value: []byte("y")},
			{Timestamp: -1 << 60, Value: []byte("z")}},
	}
	for name, recs := range cases {
		t.Run(name, func(t *testing.T) {
			got, err := Encode(recs, EncodeOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if bound := maxEncodedSize(recs); len(got) > bound || cap(got) != bound {
				t.Errorf("encoded %d bytes into cap %d; bound %d", len(got), cap(got), bound)
			}
			want, err := AppendEncode(nil, recs, EncodeOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Error("Encode and AppendEncode(nil) differ")
			}
		})
	}
	recs := make([]Record, 1000)
	for i := range recs {
		recs[i] = Record{Timestamp: int64(i), Value: make([]byte, 100)}
	}
	if n := testing.AllocsPerRun(20, func() { _, _ = Encode(recs, EncodeOptions{}) }); n > 1 {
		t.Errorf("Encode of 1000 records: %.0f allocations, want 1", n)
	}
}

func TestLastLeaderEpoch(t *testing.T) {
	var all []byte
	for i, e := range []int32{3, 5, 7} {
		b, err := Encode([]Record{{Value: []byte("v")}}, EncodeOptions{BaseOffset: int64(i)})
		if err != nil {
			t.Fatal(err)
		}
		SetPartitionLeaderEpoch(b, e)
		all = append(all, b...)
	}
	if e, ok := LastLeaderEpoch(all); !ok || e != 7 {
		t.Fatalf("LastLeaderEpoch = %d, %v; want 7", e, ok)
	}
	if e, ok := LastLeaderEpoch(all[:len(all)-1]); !ok || e != 5 {
		t.Fatalf("with a torn last batch = %d, %v; want 5", e, ok)
	}
	if _, ok := LastLeaderEpoch(nil); ok {
		t.Fatal("no batch gave ok")
	}
}
