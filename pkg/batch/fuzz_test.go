package batch

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"reflect"
	"testing"
)

func seedBatches(f *testing.F) {
	for _, c := range allCodecs {
		b, err := Encode(sampleRecords(), EncodeOptions{Codec: c, BaseOffset: 3})
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
		f.Add(b[:len(b)/2])
		f.Add(b[:HeaderSize])
		small, _ := Encode([]Record{{Timestamp: 1, Key: []byte("k"), Value: []byte("v"),
			Headers: []Header{{Key: "h", Value: nil}}}}, EncodeOptions{Codec: c})
		f.Add(small)
		f.Add(small[:len(small)-1])
	}
	all, _ := concatBatches(f)
	f.Add(all)
	f.Add(all[:len(all)-7])
	f.Add([]byte{})
}

// normalize maps a decoded record list to what re-encoding can preserve:
// empty header slices become nil.
func normalize(rs []Record) []Record {
	out := make([]Record, len(rs))
	for i, r := range rs {
		if len(r.Headers) == 0 {
			r.Headers = nil
		}
		out[i] = r
	}
	return out
}

func FuzzDecode(f *testing.F) {
	seedBatches(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		if n := CountRecords(b); n < 0 || n > len(b)/HeaderSize*(1<<14) {
			t.Fatalf("CountRecords = %d for %d bytes", n, len(b))
		}
		fuzzDecodeOne(t, b)
		// The CRC stops almost every mutation at the door; also try the
		// input with its length field and CRC repaired so the fuzzer
		// reaches decompression and record decoding.
		if len(b) >= HeaderSize {
			fixed := append([]byte(nil), b...)
			binary.BigEndian.PutUint32(fixed[8:], uint32(len(fixed)-12))
			fixCRC(fixed)
			fuzzDecodeOne(t, fixed)
		}
	})
}

func fuzzDecodeOne(t *testing.T, b []byte) {
	_, cerr := Check(b)
	recs, m, err := Decode(b)
	if err != nil {
		if !errors.Is(err, ErrCorrupt) {
			t.Fatalf("Decode error does not wrap ErrCorrupt: %v", err)
		}
		return
	}
	if m.Size() != len(b) || len(recs) != int(m.NumRecords) {
		t.Fatalf("meta %+v for %d bytes, %d records", m, len(b), len(recs))
	}
	if len(recs) == 0 {
		return
	}
	contiguous := true
	for i, r := range recs {
		if r.Offset != m.BaseOffset+int64(i) {
			contiguous = false
		}
	}
	if contiguous != (cerr == nil) && m.LastOffsetDelta == m.NumRecords-1 {
		t.Fatalf("Check=%v but Decode found contiguous=%v", cerr, contiguous)
	}
	for _, c := range allCodecs {
		// Encode refuses negative base offsets; Decode does not
		// judge them (the produce path overwrites them), so set it
		// in place.
		nb, err := Encode(recs, EncodeOptions{Codec: c})
		if err != nil {
			t.Fatalf("re-encode %v: %v", c, err)
		}
		SetBaseOffset(nb, m.BaseOffset)
		if _, err := Check(nb); err != nil {
			t.Fatalf("re-encoded %v fails Check: %v", c, err)
		}
		again, _, err := Decode(nb)
		if err != nil {
			t.Fatalf("decode re-encoded %v: %v", c, err)
		}
		want := normalize(recs)
		if !contiguous {
			for i := range want {
				want[i].Offset = m.BaseOffset + int64(i)
			}
		}
		if !reflect.DeepEqual(normalize(again), want) {
			t.Fatalf("%v round trip differs:\n got %+v\nwant %+v", c, again, want)
		}
	}
}

func FuzzNext(f *testing.F) {
	seedBatches(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		rest := b
		consumed := 0
		for {
			m, one, r, err := Next(rest)
			if err == io.EOF {
				if len(rest) != 0 {
					t.Fatal("io.EOF with bytes left")
				}
				break
			}
			if err != nil {
				if !errors.Is(err, ErrCorrupt) && !errors.Is(err, io.ErrUnexpectedEOF) {
					t.Fatalf("unexpected error kind: %v", err)
				}
				if errors.Is(err, ErrCorrupt) && errors.Is(err, io.ErrUnexpectedEOF) {
					t.Fatalf("error is both corrupt and torn: %v", err)
				}
				if !bytes.Equal(r, rest) {
					t.Fatal("rest changed on error")
				}
				break
			}
			if m.Size() != len(one) || len(one)+len(r) != len(rest) || !bytes.Equal(one, b[consumed:consumed+len(one)]) {
				t.Fatalf("bad split: size %d, one %d, rest %d of %d", m.Size(), len(one), len(r), len(rest))
			}
			if m.EndOffset() <= m.BaseOffset && m.BaseOffset < 1<<62 {
				t.Fatalf("end offset %d <= base %d", m.EndOffset(), m.BaseOffset)
			}
			consumed += len(one)
			rest = r
		}
	})
}
