package objfile

import (
	"encoding/binary"
	"errors"
	"hash/crc32"
	"testing"
)

func crcOf(b []byte) uint32 { return crc32.Checksum(b, castagnoli) }

func FuzzReadIndex(f *testing.F) {
	obj, _, _ := buildSample(f)
	f.Add(obj)
	for _, n := range []int{0, 1, TrailerSize - 1, TrailerSize, len(obj) / 2, len(obj) - TrailerSize, len(obj) - 1} {
		f.Add(obj[:n])
	}
	f.Add(obj[len(obj)/3:])
	bld := NewBuilder()
	_ = bld.Add("x", 7, mkBatch(f, 42, 1, 5, 0))
	small, _, _ := bld.Finish()
	f.Add(small)
	f.Add(small[len(small)-TrailerSize:])
	f.Fuzz(func(t *testing.T, b []byte) {
		check := func(name string, secs []Section, err error, size int64) {
			if err != nil {
				if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrShortTail) {
					t.Fatalf("%s: error wraps neither ErrCorrupt nor ErrShortTail: %v", name, err)
				}
				return
			}
			var pos int64
			for _, s := range secs {
				if s.Position != pos || s.Length <= 0 || s.Position+s.Length > size-TrailerSize {
					t.Fatalf("%s: section %+v outside object of %d bytes", name, s, size)
				}
				pos += s.Length
			}
		}
		secs, err := ReadIndex(b)
		check("ReadIndex", secs, err, int64(len(b)))
		// The footer CRC stops most mutations; also try the input with a
		// repaired trailer so the fuzzer reaches footer parsing.
		if len(b) >= TrailerSize {
			fixed := append([]byte(nil), b...)
			tail := fixed[len(fixed)-TrailerSize:]
			binary.BigEndian.PutUint16(tail[8:], Version)
			copy(tail[10:], Magic)
			if fl := int(binary.BigEndian.Uint32(tail)); fl <= len(fixed)-TrailerSize {
				end := len(fixed) - TrailerSize
				binary.BigEndian.PutUint32(tail[4:], crcOf(fixed[end-fl:end]))
			}
			fs, ferr := Verify(fixed)
			check("Verify(fixed)", fs, ferr, int64(len(fixed)))
		}
		vs, verr := Verify(b)
		check("Verify", vs, verr, int64(len(b)))
		if verr == nil && err != nil {
			t.Fatal("Verify passed but ReadIndex failed")
		}
		// The same bytes as a tail of a larger object.
		ts, terr := ReadIndexFromTail(b, int64(len(b))+100)
		check("ReadIndexFromTail", ts, terr, int64(len(b))+100)
	})
}
