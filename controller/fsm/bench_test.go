package fsm

import (
	"fmt"
	"testing"
)

// BenchmarkLookup looks up the sections of a partition's object index at
// random offsets (the read path's LookupObjects), for index sizes from one
// hour of 250 ms flushes (14,400 sections) down to a few.
func BenchmarkLookup(b *testing.B) {
	for _, n := range []int{16, 1024, 14400, 100_000} {
		b.Run(fmt.Sprintf("sections=%d", n), func(b *testing.B) {
			p := &Partition{Sections: make([]Section, n)}
			const perSection = 1000
			for i := range p.Sections {
				p.Sections[i] = Section{Key: "root/00/2026010100/agent-01HX.obj", BaseOffset: int64(i) * perSection,
					EndOffset: int64(i+1) * perSection, Position: int64(i) * 4096, Length: 4096}
			}
			p.CommittedEnd = int64(n) * perSection
			var x uint64 = 88172645463325252
			b.ReportAllocs()
			for b.Loop() {
				x ^= x << 13
				x ^= x >> 7
				x ^= x << 17
				off := int64(x % uint64(p.CommittedEnd))
				secs := p.Lookup(off, 4)
				if len(secs) == 0 || secs[0].BaseOffset > off || secs[0].EndOffset <= off {
					b.Fatalf("lookup %d: %+v", off, secs)
				}
			}
		})
	}
}
