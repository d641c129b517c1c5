// Package partition maps record keys to partitions exactly as Kafka's default
// partitioner does for keyed records, so keyed data lands on the same
// partition whether it is produced through StreamHouse or a Kafka client.
package partition

// Murmur2 returns the 32-bit murmur2 hash of b with seed 0x9747b28c,
// bit-for-bit identical to Kafka's org.apache.kafka.common.utils.Utils.murmur2.
func Murmur2(b []byte) int32 {
	const (
		seed uint32 = 0x9747b28c
		m    uint32 = 0x5bd1e995
		r           = 24
	)
	length := len(b)
	h := seed ^ uint32(length)
	n4 := length / 4
	for i := 0; i < n4; i++ {
		i4 := i * 4
		k := uint32(b[i4]) | uint32(b[i4+1])<<8 | uint32(b[i4+2])<<16 | uint32(b[i4+3])<<24
		k *= m
		k ^= k >> r
		k *= m
		h *= m
		h ^= k
	}
	tail := b[n4*4:]
	switch len(tail) {
	case 3:
		h ^= uint32(tail[2]) << 16
		fallthrough
	case 2:
		h ^= uint32(tail[1]) << 8
		fallthrough
	case 1:
		h ^= uint32(tail[0])
		h *= m
	}
	h ^= h >> 13
	h *= m
	h ^= h >> 15
	return int32(h)
}

// ForKey returns the partition Kafka's default partitioner picks for a
// non-nil key: (Murmur2(key) & 0x7fffffff) % partitions. A nil key hashes
// like an empty one (Kafka instead spreads null keys with a sticky
// partitioner; that choice is the caller's). ForKey returns -1 if
// partitions <= 0.
func ForKey(key []byte, partitions int32) int32 {
	if partitions <= 0 {
		return -1
	}
	return (Murmur2(key) & 0x7fffffff) % partitions
}
