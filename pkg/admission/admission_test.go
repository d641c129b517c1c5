package admission

import (
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// The budget refuses past its limit with a retry hint, gives bytes back on
// release, and admits a request larger than the limit when nothing is held.
func TestBudget(t *testing.T) {
	var gauge int64
	b := New(100, func(held int64) { gauge = held })
	r1, _, _ := b.Admit(60)
	if r1 == nil || gauge != 60 {
		t.Fatalf("first admit: release %v, gauge %d", r1 != nil, gauge)
	}
	if r, held, wait := b.Admit(50); r != nil || held != 60 || wait < time.Second || wait > 5*time.Second {
		t.Fatalf("admit past the limit: release %v, held %d, retry after %v", r != nil, held, wait)
	}
	r2, _, _ := b.Admit(40)
	if r2 == nil {
		t.Fatal("admit up to the limit was refused")
	}
	r1()
	r2()
	if gauge != 0 {
		t.Fatalf("gauge %d after every release", gauge)
	}
	big, _, _ := b.Admit(1000)
	if big == nil {
		t.Fatal("a request over the limit is refused even when nothing is held")
	}
	big()
}
