package agent

import (
	"bytes"
	"testing"
)

func TestReserve(t *testing.T) {
	out := []byte("abc")
	if got := reserve(out, 0, 1<<20); &got[0] != &out[0] {
		t.Fatal("reserve grew a slice that had room")
	}
	got := reserve(out, 10, 100)
	if !bytes.Equal(got, out) || cap(got) != 103 {
		t.Fatalf("reserve(3 bytes, 10, 100) = %q cap %d, want the bytes with cap 103", got, cap(got))
	}
	// The hint is a target, n the minimum.
	if got := reserve(out, 10, 5); cap(got) < 13 {
		t.Fatalf("cap %d, want >= 13", cap(got))
	}
	// A later append up to the hint does not grow again.
	before := &got[0]
	got = append(got, make([]byte, 100)...)
	if &got[0] != before {
		t.Fatal("append within the reserved room moved the slice")
	}
	if got := reserve(nil, 4, 4); len(got) != 0 || cap(got) != 4 {
		t.Fatalf("reserve(nil) len %d cap %d", len(got), cap(got))
	}
}
