package partition

import (
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// Vectors from Kafka's UtilsTest.testMurmur2.
func TestMurmur2KafkaVectors(t *testing.T) {
	for in, want := range map[string]int32{
		"21":                         -973932308,
		"foobar":                     -790332482,
		"a-little-bit-long-string":   -985981536,
		"a-little-bit-longer-string": -1486304829,
		"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
		"abc": 479470107,
	} {
		if got := Murmur2([]byte(in)); got != want {
			t.Errorf("Murmur2(%q) = %d, want %d", in, got, want)
		}
	}
}

func TestForKey(t *testing.T) {
	// (murmur2 & 0x7fffffff) % n, computed from the Kafka vectors above.
	for _, tc := range []struct {
		key  string
		n    int32
		want int32
	}{
		{"21", 10, (-973932308 & 0x7fffffff) % 10},
		{"foobar", 3, int32((-790332482 & 0x7fffffff) % 3)},
		{"abc", 7, 479470107 % 7},
		{"abc", 1, 0},
	} {
		if got := ForKey([]byte(tc.key), tc.n); got != tc.want {
			t.Errorf("ForKey(%q, %d) = %d, want %d", tc.key, tc.n, got, tc.want)
		}
	}
	if ForKey([]byte("x"), 0) != -1 || ForKey([]byte("x"), -3) != -1 {
		t.Error("invalid partition count not rejected")
	}
	for i := 0; i < 1000; i++ {
		k := []byte{byte(i), byte(i >> 8), 'k'}
		if p := ForKey(k, 13); p < 0 || p >= 13 {
			t.Fatalf("ForKey out of range: %d", p)
		}
	}
	if ForKey(nil, 5) != ForKey([]byte{}, 5) {
		t.Error("nil and empty keys differ")
	}
}
