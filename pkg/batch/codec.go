package batch

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"runtime"
	"strings"
	"sync"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/s2"
	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"
)

// Codec is a Kafka record batch compression codec, stored in the low three
// bits of the batch attributes. The numeric values are Kafka's.
type Codec int8

const (
	// CodecNone means the records are stored uncompressed.
	CodecNone Codec = 0
	// CodecGzip compresses the records with gzip (RFC 1952).
	CodecGzip Codec = 1
	// CodecSnappy compresses the records as one raw snappy block; decoding
	// also accepts the xerial framing produced by the Java client.
	CodecSnappy Codec = 2
	// CodecLZ4 compresses the records in the LZ4 frame format, as Kafka does
	// for magic v2.
	CodecLZ4 Codec = 3
	// CodecZstd compresses the records as one zstd frame.
	CodecZstd Codec = 4
)

// MaxDecompressedSize caps the decompressed size of one batch's records, to
// resist decompression bombs. Decode fails with an ErrCorrupt-wrapping error
// when a batch would inflate beyond it.
const MaxDecompressedSize = 64 << 20

// String returns Kafka's name for c ("none", "gzip", "snappy", "lz4",
// "zstd"), or "codec(N)" for an unknown value.
func (c Codec) String() string {
	switch c {
	case CodecNone:
		return "none"
	case CodecGzip:
		return "gzip"
	case CodecSnappy:
		return "snappy"
	case CodecLZ4:
		return "lz4"
	case CodecZstd:
		return "zstd"
	}
	return fmt.Sprintf("codec(%d)", int8(c))
}

// Valid reports whether c is one of the five codecs this package supports.
func (c Codec) Valid() bool { return c >= CodecNone && c <= CodecZstd }

// ParseCodec parses a codec name as written by String (case-insensitive;
// "" is accepted as "none"). It returns an error for any other name.
func ParseCodec(s string) (Codec, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "", "none", "uncompressed":
		return CodecNone, nil
	case "gzip":
		return CodecGzip, nil
	case "snappy":
		return CodecSnappy, nil
	case "lz4":
		return CodecLZ4, nil
	case "zstd":
		return CodecZstd, nil
	}
	return CodecNone, fmt.Errorf("batch: unknown compression codec %q", s)
}

// appendWriter is an io.Writer appending to a byte slice.
type appendWriter struct{ b []byte }

func (w *appendWriter) Write(p []byte) (int, error) {
	w.b = append(w.b, p...)
	return len(p), nil
}

var (
	gzipWriters = sync.Pool{New: func() any {
		w, _ := gzip.NewWriterLevel(nil, gzip.DefaultCompression)
		return w
	}}
	gzipReaders sync.Pool // *gzip.Reader
	lz4Writers  = sync.Pool{New: func() any {
		w := lz4.NewWriter(nil)
		// Kafka's Java client writes 64 KiB independent blocks.
		_ = w.Apply(lz4.BlockSizeOption(lz4.Block64Kb))
		return w
	}}
	lz4Readers = sync.Pool{New: func() any { return lz4.NewReader(nil) }}

	zstdEnc = sync.OnceValues(func() (*zstd.Encoder, error) {
		// EncodeAll is safe for concurrent use; no goroutines are started
		// for a nil writer.
		return zstd.NewWriter(nil,
			zstd.WithEncoderLevel(zstd.SpeedDefault),
			zstd.WithEncoderConcurrency(runtime.GOMAXPROCS(0)))
	})
	zstdDec = sync.OnceValues(func() (*zstd.Decoder, error) {
		// DecodeAll is safe for concurrent use; no goroutines are started
		// for a nil reader.
		return zstd.NewReader(nil,
			zstd.WithDecoderConcurrency(runtime.GOMAXPROCS(0)),
			zstd.WithDecoderMaxMemory(MaxDecompressedSize),
			zstd.WithDecodeAllCapLimit(true))
	})
)

// compress appends the compressed form of src to dst.
func compress(dst, src []byte, c Codec) ([]byte, error) {
	switch c {
	case CodecNone:
		return append(dst, src...), nil
	case CodecGzip:
		aw := &appendWriter{b: dst}
		w := gzipWriters.Get().(*gzip.Writer)
		defer gzipWriters.Put(w)
		w.Reset(aw)
		if _, err := w.Write(src); err != nil {
			return dst, fmt.Errorf("batch: gzip: %w", err)
		}
		if err := w.Close(); err != nil {
			return dst, fmt.Errorf("batch: gzip: %w", err)
		}
		return aw.b, nil
	case CodecSnappy:
		n := s2.MaxEncodedLen(len(src))
		if n < 0 {
			return dst, fmt.Errorf("batch: snappy: records too large (%d bytes)", len(src))
		}
		dst = growTo(dst, n)
		out := s2.EncodeSnappy(dst[len(dst):len(dst)+n], src)
		return dst[:len(dst)+len(out)], nil
	case CodecLZ4:
		aw := &appendWriter{b: dst}
		w := lz4Writers.Get().(*lz4.Writer)
		defer lz4Writers.Put(w)
		w.Reset(aw)
		if _, err := w.Write(src); err != nil {
			return dst, fmt.Errorf("batch: lz4: %w", err)
		}
		if err := w.Close(); err != nil {
			return dst, fmt.Errorf("batch: lz4: %w", err)
		}
		return aw.b, nil
	case CodecZstd:
		enc, err := zstdEnc()
		if err != nil {
			return dst, fmt.Errorf("batch: zstd: %w", err)
		}
		return enc.EncodeAll(src, dst), nil
	}
	return dst, fmt.Errorf("batch: unsupported compression codec %d", int8(c))
}

// growTo makes sure cap(b)-len(b) >= n.
func growTo(b []byte, n int) []byte {
	if cap(b)-len(b) >= n {
		return b
	}
	nb := make([]byte, len(b), len(b)+n)
	copy(nb, b)
	return nb
}

var xerialMagic = []byte{0x82, 'S', 'N', 'A', 'P', 'P', 'Y', 0}

// decompress returns the decompressed form of src in a new buffer. The
// output is capped at MaxDecompressedSize.
func decompress(src []byte, c Codec) ([]byte, error) {
	switch c {
	case CodecNone:
		return src, nil
	case CodecGzip:
		var r *gzip.Reader
		if v := gzipReaders.Get(); v != nil {
			r = v.(*gzip.Reader)
			if err := r.Reset(bytes.NewReader(src)); err != nil {
				gzipReaders.Put(r)
				return nil, corruptf("gzip: %v", err)
			}
		} else {
			var err error
			if r, err = gzip.NewReader(bytes.NewReader(src)); err != nil {
				return nil, corruptf("gzip: %v", err)
			}
		}
		defer gzipReaders.Put(r)
		return readCapped(r, len(src)*4, "gzip")
	case CodecSnappy:
		if len(src) >= 16 && bytes.Equal(src[:8], xerialMagic) {
			return xerialDecode(src[16:])
		}
		return snappyBlock(nil, src)
	case CodecLZ4:
		r := lz4Readers.Get().(*lz4.Reader)
		defer lz4Readers.Put(r)
		r.Reset(bytes.NewReader(src))
		return readCapped(r, len(src)*4, "lz4")
	case CodecZstd:
		dec, err := zstdDec()
		if err != nil {
			return nil, fmt.Errorf("batch: zstd: %w", err)
		}
		hint := len(src) * 4
		// Size the output from the frame header when it declares the
		// content size (ours and Kafka's do), so one pass suffices.
		var h zstd.Header
		if h.Decode(src) == nil && h.HasFCS && h.FrameContentSize <= MaxDecompressedSize {
			hint = int(h.FrameContentSize)
		}
		if hint > MaxDecompressedSize {
			hint = MaxDecompressedSize
		}
		// With WithDecodeAllCapLimit the output is limited to the
		// capacity, which is grown up to MaxDecompressedSize.
		for capacity := max(hint, 4096); ; capacity *= 4 {
			if capacity > MaxDecompressedSize {
				capacity = MaxDecompressedSize
			}
			out, err := dec.DecodeAll(src, make([]byte, 0, capacity))
			if err == nil {
				return out, nil
			}
			if err != zstd.ErrDecoderSizeExceeded || capacity >= MaxDecompressedSize {
				return nil, corruptf("zstd: %v", err)
			}
		}
	}
	return nil, corruptf("unsupported compression codec %d", int8(c))
}

// readCapped reads r to EOF, failing if it yields more than
// MaxDecompressedSize bytes.
func readCapped(r io.Reader, hint int, name string) ([]byte, error) {
	hint = min(max(hint, 512), MaxDecompressedSize)
	r = io.LimitReader(r, MaxDecompressedSize+1)
	buf := make([]byte, 0, hint)
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if len(buf) > MaxDecompressedSize {
			return nil, corruptf("%s: decompressed size exceeds %d bytes", name, MaxDecompressedSize)
		}
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			return nil, corruptf("%s: %v", name, err)
		}
	}
}

// snappyBlock appends the decoding of one raw snappy block to dst.
func snappyBlock(dst, src []byte) ([]byte, error) {
	n, err := s2.DecodedLen(src)
	if err != nil {
		return nil, corruptf("snappy: %v", err)
	}
	if n > MaxDecompressedSize-len(dst) {
		return nil, corruptf("snappy: decompressed size exceeds %d bytes", MaxDecompressedSize)
	}
	dst = growTo(dst, n)
	out, err := s2.Decode(dst[len(dst):len(dst)+n], src)
	if err != nil {
		return nil, corruptf("snappy: %v", err)
	}
	return dst[:len(dst)+len(out)], nil
}

// xerialDecode decodes the chunks following the 16-byte xerial header: each
// chunk is a big-endian int32 length and a raw snappy block.
func xerialDecode(src []byte) ([]byte, error) {
	var out []byte
	for len(src) > 0 {
		if len(src) < 4 {
			return nil, corruptf("snappy: truncated xerial chunk header")
		}
		n := binary.BigEndian.Uint32(src)
		src = src[4:]
		if uint64(n) > uint64(len(src)) {
			return nil, corruptf("snappy: xerial chunk length %d exceeds remaining %d bytes", n, len(src))
		}
		var err error
		if out, err = snappyBlock(out, src[:n]); err != nil {
			return nil, err
		}
		src = src[n:]
	}
	if out == nil {
		out = []byte{}
	}
	return out, nil
}
