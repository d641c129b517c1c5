package checker

import (
	"strings"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestCheckerCatchesEachViolation(t *testing.T) {
	base := func() *History {
		h := NewHistory()
		h.Acked(Ack{Producer: 1, Seq: 1, Value: "a", Partition: 0, Offset: 0})
		h.Acked(Ack{Producer: 1, Seq: 2, Value: "b", Partition: 0, Offset: 1})
		h.Failed("x")
		return h
	}
	good := []Read{{0, 0, "a"}, {0, 1, "b"}, {0, 2, "x"}}
	if r := base().Check(good); r.Err() != nil || r.FailedPresent != 1 {
		t.Fatalf("good history: %v %+v", r.Err(), r)
	}
	cases := map[string][]Read{
		"is lost":         {{0, 0, "a"}},
		"appears 2 times": {{0, 0, "a"}, {0, 1, "b"}, {0, 2, "b"}},
		"dense":           {{0, 0, "a"}, {0, 2, "b"}},
		"never sent":      {{0, 0, "a"}, {0, 1, "b"}, {0, 2, "zzz"}},
		"but is at":       {{0, 0, "b"}, {0, 1, "a"}},
	}
	for want, reads := range cases {
		err := base().Check(reads).Err()
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: got %v", want, err)
		}
	}
	h := NewHistory()
	h.Acked(Ack{Producer: 1, Seq: 2, Value: "a", Partition: 0, Offset: 0})
	h.Acked(Ack{Producer: 1, Seq: 1, Value: "b", Partition: 0, Offset: 1})
	if err := h.Check([]Read{{0, 0, "a"}, {0, 1, "b"}}).Err(); err == nil || !strings.Contains(err.Error(), "after seq") {
		t.Errorf("reorder: got %v", err)
	}
}
