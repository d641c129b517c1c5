package objfile

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"reflect"
	"testing"

	"github.com/streamhouse/streamhouse/pkg/batch"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func mkBatch(t testing.TB, base int64, n int, ts int64, codec batch.Codec) []byte {
	t.Helper()
	recs := make([]batch.Record, n)
	for i := range recs {
		recs[i] = batch.Record{Timestamp: ts + int64(i), Key: []byte(fmt.Sprint("k", i)), Value: bytes.Repeat([]byte{'v'}, 50)}
	}
	b, err := batch.Encode(recs, batch.EncodeOptions{Codec: codec, BaseOffset: base})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

type addCall struct {
	topic string
	part  int32
	b     []byte
}

// buildSample adds interleaved batches of three partitions.
func buildSample(t testing.TB) ([]byte, []Section, []addCall) {
	t.Helper()
	codecs := []batch.Codec{batch.CodecNone, batch.CodecGzip, batch.CodecSnappy, batch.CodecLZ4, batch.CodecZstd}
	var calls []addCall
	next := map[string]int64{"orders/0": 100, "orders/3": 0, "clicks/0": 5000}
	for round := 0; round < 4; round++ {
		for _, tp := range []struct {
			topic string
			part  int32
		}{{"orders", 3}, {"clicks", 0}, {"orders", 0}} {
			key := fmt.Sprintf("%s/%d", tp.topic, tp.part)
			n := 1 + round*3
			b := mkBatch(t, next[key], n, int64(1000*round), codecs[(round+int(tp.part))%len(codecs)])
			next[key] += int64(n)
			calls = append(calls, addCall{tp.topic, tp.part, b})
		}
	}
	bld := NewBuilder()
	size := 0
	for _, c := range calls {
		if err := bld.Add(c.topic, c.part, c.b); err != nil {
			t.Fatal(err)
		}
		size += len(c.b)
		if bld.Len() != size {
			t.Fatalf("Len %d, want %d", bld.Len(), size)
		}
	}
	obj, secs, err := bld.Finish()
	if err != nil {
		t.Fatal(err)
	}
	return obj, secs, calls
}

func TestRoundTrip(t *testing.T) {
	obj, secs, calls := buildSample(t)
	if len(secs) != 3 {
		t.Fatalf("%d sections", len(secs))
	}
	// Layout order is first-add order.
	order := []string{"orders/3", "clicks/0", "orders/0"}
	for i, s := range secs {
		if got := fmt.Sprintf("%s/%d", s.Topic, s.Partition); got != order[i] {
			t.Fatalf("section %d is %s, want %s", i, got, order[i])
		}
	}
	want := map[string]Section{
		"orders/3": {BaseOffset: 0, EndOffset: 1 + 4 + 7 + 10, RecordCount: 22, MaxTimestampMs: 3009},
		"clicks/0": {BaseOffset: 5000, EndOffset: 5022, RecordCount: 22, MaxTimestampMs: 3009},
		"orders/0": {BaseOffset: 100, EndOffset: 122, RecordCount: 22, MaxTimestampMs: 3009},
	}
	for _, s := range secs {
		w := want[fmt.Sprintf("%s/%d", s.Topic, s.Partition)]
		if s.BaseOffset != w.BaseOffset || s.EndOffset != w.EndOffset || s.RecordCount != w.RecordCount || s.MaxTimestampMs != w.MaxTimestampMs {
			t.Fatalf("section %+v, want %+v", s, w)
		}
		// The section bytes are exactly that partition's batches, in order.
		var exp []byte
		for _, c := range calls {
			if c.topic == s.Topic && c.part == s.Partition {
				exp = append(exp, c.b...)
			}
		}
		if !bytes.Equal(obj[s.Position:s.Position+s.Length], exp) {
			t.Fatalf("section %s/%d bytes differ", s.Topic, s.Partition)
		}
	}
	for name, read := range map[string]func([]byte) ([]Section, error){
		"ReadIndex": ReadIndex,
		"Verify":    Verify,
	} {
		got, err := read(obj)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !reflect.DeepEqual(got, secs) {
			t.Fatalf("%s: sections differ:\n got %+v\nwant %+v", name, got, secs)
		}
	}
	// Range-GET style reading, with various tail sizes.
	fl, err := ParseTrailer(obj[len(obj)-TrailerSize:])
	if err != nil {
		t.Fatal(err)
	}
	need := fl + TrailerSize
	for _, k := range []int{need, need + 1, len(obj)} {
		got, err := ReadIndexFromTail(obj[len(obj)-k:], int64(len(obj)))
		if err != nil || !reflect.DeepEqual(got, secs) {
			t.Fatalf("tail %d: %v", k, err)
		}
	}
	for _, k := range []int{TrailerSize, need - 1} {
		if _, err := ReadIndexFromTail(obj[len(obj)-k:], int64(len(obj))); !errors.Is(err, ErrShortTail) || errors.Is(err, ErrCorrupt) {
			t.Fatalf("tail %d: want ErrShortTail, got %v", k, err)
		}
	}
	// Every record decodes from the sections.
	n := 0
	for _, s := range secs {
		err := batch.DecodeAll(obj[s.Position:s.Position+s.Length], func(r batch.Record) error {
			if r.Offset < s.BaseOffset || r.Offset >= s.EndOffset {
				return fmt.Errorf("offset %d outside %d..%d", r.Offset, s.BaseOffset, s.EndOffset)
			}
			n++
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if n != 66 {
		t.Fatalf("%d records", n)
	}
}

func TestBuilderReuseAndErrors(t *testing.T) {
	b := NewBuilder()
	if _, _, err := b.Finish(); !errors.Is(err, ErrEmpty) {
		t.Fatalf("empty Finish: %v", err)
	}
	b1 := mkBatch(t, 10, 5, 0, batch.CodecNone)
	if err := b.Add("t", 0, b1); err != nil {
		t.Fatal(err)
	}
	for name, tc := range map[string]struct {
		topic string
		part  int32
		b     []byte
		is    error
	}{
		"gap":          {"t", 0, mkBatch(t, 16, 1, 0, batch.CodecNone), ErrOutOfOrder},
		"overlap":      {"t", 0, mkBatch(t, 14, 1, 0, batch.CodecNone), ErrOutOfOrder},
		"repeat":       {"t", 0, b1, ErrOutOfOrder},
		"bad batch":    {"t", 0, b1[:len(b1)-1], batch.ErrCorrupt},
		"two batches":  {"t", 1, append(append([]byte(nil), b1...), b1...), batch.ErrCorrupt},
		"empty topic":  {"", 0, b1, nil},
		"long topic":   {string(bytes.Repeat([]byte("x"), MaxTopicLen+1)), 0, b1, nil},
		"negative prt": {"t", -1, b1, nil},
	} {
		err := b.Add(tc.topic, tc.part, tc.b)
		if err == nil || (tc.is != nil && !errors.Is(err, tc.is)) {
			t.Errorf("%s: %v", name, err)
		}
	}
	if b.Len() != len(b1) {
		t.Fatalf("failed Adds changed Len: %d", b.Len())
	}
	if err := b.Add("t", 0, mkBatch(t, 15, 2, 0, batch.CodecNone)); err != nil {
		t.Fatal(err)
	}
	obj, secs, err := b.Finish()
	if err != nil {
		t.Fatal(err)
	}
	if len(secs) != 1 || secs[0].BaseOffset != 10 || secs[0].EndOffset != 17 {
		t.Fatalf("sections %+v", secs)
	}
	if _, err := Verify(obj); err != nil {
		t.Fatal(err)
	}
	// Reset after Finish: a new partition 0 can start anywhere.
	if b.Len() != 0 {
		t.Fatal("not reset")
	}
	if err := b.Add("t", 0, mkBatch(t, 0, 1, 0, batch.CodecNone)); err != nil {
		t.Fatal(err)
	}
	if _, secs, err := b.Finish(); err != nil || secs[0].BaseOffset != 0 {
		t.Fatal(err)
	}
	// The builder copies: mutating the caller's batch later does not matter.
	b2 := mkBatch(t, 0, 3, 0, batch.CodecNone)
	if err := b.Add("t", 0, b2); err != nil {
		t.Fatal(err)
	}
	b2[len(b2)-1] ^= 0xff
	obj, _, _ = b.Finish()
	if _, err := Verify(obj); err != nil {
		t.Fatal(err)
	}
}

// TestBuilderReusesBuffers: objects of different sizes built in turn by one
// Builder (which reuses its buffer, and returns it as the object when the
// batches were added partition by partition) are each exactly what a fresh
// Builder makes, whichever order the partitions' batches came in.
func TestBuilderReusesBuffers(t *testing.T) {
	build := func(b *Builder, batches int) []byte {
		t.Helper()
		for i := range batches {
			// Even sizes interleave three partitions; odd ones add one
			// partition's batches after the other's.
			p, base := int32(i%3), int64(i/3*5)
			if batches%2 == 1 {
				p, base = int32(i*3/batches), int64(i*5)
			}
			if err := b.Add("t", p, mkBatch(t, base, 5, 0, batch.CodecNone)); err != nil {
				t.Fatal(err)
			}
		}
		obj, _, err := b.Finish()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := Verify(obj); err != nil {
			t.Fatal(err)
		}
		return obj
	}
	reused := NewBuilder()
	for _, n := range []int{30, 1, 7, 31, 2, 31, 30} {
		got := append([]byte(nil), build(reused, n)...)
		if want := build(NewBuilder(), n); !bytes.Equal(got, want) {
			t.Fatalf("%d batches: reused builder made %d bytes, a fresh one %d (or other bytes)", n, len(got), len(want))
		}
	}
}

func TestCorruptionDetected(t *testing.T) {
	obj, secs, _ := buildSample(t)
	dataEnd := int(secs[len(secs)-1].Position + secs[len(secs)-1].Length)
	// Flip every byte in turn. Flips in a section are caught by Verify;
	// flips in the footer or trailer by ReadIndex.
	for i := range obj {
		cp := append([]byte(nil), obj...)
		cp[i] ^= 0x10
		_, verr := Verify(cp)
		if !errors.Is(verr, ErrCorrupt) {
			t.Fatalf("flip at %d (data end %d, len %d): Verify: %v", i, dataEnd, len(obj), verr)
		}
		if i >= dataEnd {
			if _, err := ReadIndex(cp); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("flip at %d: ReadIndex: %v", i, err)
			}
		}
	}
	// Every truncation and extension.
	for n := 0; n < len(obj); n++ {
		if _, err := ReadIndex(obj[:n]); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("truncated to %d: %v", n, err)
		}
	}
	if _, err := ReadIndex(append([]byte{0}, obj...)); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("prefixed: %v", err)
	}
	if _, err := ReadIndex(append(append([]byte(nil), obj...), 0)); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("extended: %v", err)
	}
}

// rewrite re-encodes the footer with edited sections and a valid CRC, to
// test the semantic checks behind the CRC.
func rewrite(obj []byte, secs []Section, edit func([]Section)) []byte {
	cp := append([]Section(nil), secs...)
	edit(cp)
	dataEnd := secs[len(secs)-1].Position + secs[len(secs)-1].Length
	out := append([]byte(nil), obj[:dataEnd]...)
	footer := appendFooter(nil, cp)
	out = append(out, footer...)
	return appendTrailer(out, footer)
}

func TestFooterSemanticChecks(t *testing.T) {
	obj, secs, _ := buildSample(t)
	cases := map[string]struct {
		edit       func([]Section)
		verifyOnly bool
	}{
		"negative partition": {edit: func(s []Section) { s[0].Partition = -1 }},
		"negative base":      {edit: func(s []Section) { s[0].BaseOffset = -1 }},
		"end before base":    {edit: func(s []Section) { s[0].EndOffset = s[0].BaseOffset }},
		"too many records":   {edit: func(s []Section) { s[0].RecordCount = s[0].EndOffset - s[0].BaseOffset + 1 }},
		"overlap":            {edit: func(s []Section) { s[1].Position-- }},
		"gap":                {edit: func(s []Section) { s[0].Length-- }},
		"beyond data":        {edit: func(s []Section) { s[2].Length++ }},
		"huge length":        {edit: func(s []Section) { s[2].Length = 1 << 62 }},
		"duplicate":          {edit: func(s []Section) { s[1].Topic, s[1].Partition = s[0].Topic, s[0].Partition }},
		"swapped":            {edit: func(s []Section) { s[0], s[1] = s[1], s[0] }},
		"empty topic":        {edit: func(s []Section) { s[0].Topic = "" }},
		"wrong end offset":   {edit: func(s []Section) { s[0].EndOffset++ }, verifyOnly: true},
		"wrong base offset":  {edit: func(s []Section) { s[2].BaseOffset-- }, verifyOnly: true},
		"wrong count":        {edit: func(s []Section) { s[0].RecordCount-- }, verifyOnly: true},
		"wrong max ts":       {edit: func(s []Section) { s[0].MaxTimestampMs++ }, verifyOnly: true},
		"wrong crc":          {edit: func(s []Section) { s[0].CRC++ }, verifyOnly: true},
	}
	for name, tc := range cases {
		bad := rewrite(obj, secs, tc.edit)
		_, rerr := ReadIndex(bad)
		if tc.verifyOnly {
			if rerr != nil {
				t.Errorf("%s: ReadIndex: %v", name, rerr)
			}
		} else if !errors.Is(rerr, ErrCorrupt) {
			t.Errorf("%s: ReadIndex: %v", name, rerr)
		}
		if _, err := Verify(bad); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: Verify: %v", name, err)
		}
	}
	// A footer that claims more sections than it can hold.
	bad := append([]byte(nil), obj[:secs[0].Length]...)
	footer := binary.AppendUvarint(nil, 1<<40)
	bad = appendTrailer(append(bad, footer...), footer)
	if _, err := ReadIndex(bad); !errors.Is(err, ErrCorrupt) {
		t.Errorf("huge count: %v", err)
	}
	// Wrong version and magic.
	for i, name := range map[int]string{len(obj) - 9: "version", len(obj) - 1: "magic"} {
		cp := append([]byte(nil), obj...)
		cp[i]++
		if _, err := ParseTrailer(cp[len(cp)-TrailerSize:]); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: %v", name, err)
		}
	}
	if _, err := ParseTrailer(obj[:5]); !errors.Is(err, ErrCorrupt) {
		t.Errorf("short trailer: %v", err)
	}
	if _, err := ReadIndexFromTail(obj, int64(len(obj)-1)); err == nil {
		t.Error("tail longer than object accepted")
	}
}

func TestTornBatchInSection(t *testing.T) {
	// A section whose bytes end mid-batch but whose footer and CRC agree
	// with those bytes must still fail Verify.
	b1 := mkBatch(t, 0, 3, 0, batch.CodecNone)
	b2 := mkBatch(t, 3, 3, 0, batch.CodecNone)
	bld := NewBuilder()
	_ = bld.Add("t", 0, b1)
	_ = bld.Add("t", 0, b2)
	obj, secs, err := bld.Finish()
	if err != nil {
		t.Fatal(err)
	}
	torn := append([]byte(nil), obj[:len(b1)+len(b2)-10]...)
	secs[0].Length -= 10
	secs[0].CRC = crcOf(torn)
	footer := appendFooter(nil, secs)
	torn = appendTrailer(append(torn, footer...), footer)
	if _, err := ReadIndex(torn); err != nil {
		t.Fatal(err)
	}
	if _, err := Verify(torn); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Verify: %v", err)
	}
}
