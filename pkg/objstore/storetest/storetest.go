// Package storetest is the conformance suite every objstore.Store
// implementation must pass. An implementation's tests call Run with a
// constructor; the suite checks the contract documented in package objstore
// (put-if-absent, atomicity under concurrency, range rules, listing order and
// pagination, idempotent delete, errors, context cancellation).
package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/streamhouse/streamhouse/pkg/objstore"
)

// Run runs the conformance suite as subtests of t. newStore must return an
// empty store, independent of stores it returned before (a fresh directory,
// or a fresh bucket or prefix), and register any cleanup with t.Cleanup.
func Run(t *testing.T, newStore func(t *testing.T) objstore.Store) {
	tests := []struct {
		name string
		fn   func(*testing.T, objstore.Store)
	}{
		{"RoundTrip", testRoundTrip},
		{"EmptyObject", testEmptyObject},
		{"BinaryData", testBinaryData},
		{"KeyCharacters", testKeyCharacters},
		{"PutIfAbsentConflict", testPutIfAbsentConflict},
		{"ConcurrentPutIfAbsent", testConcurrentPutIfAbsent},
		{"Ranges", testRanges},
		{"NotFound", testNotFound},
		{"Delete", testDelete},
		{"List", testList},
		{"ListPagination", testListPagination},
		{"LargeObject", testLargeObject},
		{"InvalidKeys", testInvalidKeys},
		{"ContextCancelled", testContextCancelled},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.fn(t, newStore(t))
		})
	}
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	t.Cleanup(cancel)
	return c
}

func mustPut(t *testing.T, s objstore.Store, key string, data []byte) {
	t.Helper()
	if err := s.PutIfAbsent(ctx(t), key, data); err != nil {
		t.Fatalf("PutIfAbsent(%q): %v", key, err)
	}
}

func mustGet(t *testing.T, s objstore.Store, key string, offset, length int64) []byte {
	t.Helper()
	b, err := s.Get(ctx(t), key, offset, length)
	if err != nil {
		t.Fatalf("Get(%q, %d, %d): %v", key, offset, length, err)
	}
	return b
}

func randomBytes(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, n)
	for i := 0; i < n; i += 8 {
		v := r.Uint64()
		for j := 0; j < 8 && i+j < n; j++ {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	return b
}

func testRoundTrip(t *testing.T, s objstore.Store) {
	data := []byte("hello, object store")
	before := time.Now()
	mustPut(t, s, "topic/0/00001.obj", data)
	if got := mustGet(t, s, "topic/0/00001.obj", 0, -1); !bytes.Equal(got, data) {
		t.Fatalf("Get = %q, want %q", got, data)
	}
	info, err := s.Head(ctx(t), "topic/0/00001.obj")
	if err != nil {
		t.Fatalf("Head: %v", err)
	}
	if info.Key != "topic/0/00001.obj" || info.Size != int64(len(data)) {
		t.Fatalf("Head = %+v, want key topic/0/00001.obj size %d", info, len(data))
	}
	// S3 has second precision; allow clock skew of a few seconds.
	if info.ModTime.Before(before.Add(-5*time.Second)) || info.ModTime.After(time.Now().Add(5*time.Second)) {
		t.Fatalf("Head ModTime = %v, want about %v", info.ModTime, before)
	}
	// The returned slice belongs to the caller.
	got := mustGet(t, s, "topic/0/00001.obj", 0, -1)
	got[0] = 'X'
	if again := mustGet(t, s, "topic/0/00001.obj", 0, -1); !bytes.Equal(again, data) {
		t.Fatalf("Get after modifying a returned slice = %q", again)
	}
}

func testEmptyObject(t *testing.T, s objstore.Store) {
	mustPut(t, s, "empty", nil)
	for _, r := range [][2]int64{{0, -1}, {0, 0}} {
		got := mustGet(t, s, "empty", r[0], r[1])
		if got == nil || len(got) != 0 {
			t.Fatalf("Get(empty, %d, %d) = %#v, want empty non-nil", r[0], r[1], got)
		}
	}
	for _, r := range [][2]int64{{0, 1}, {1, -1}, {1, 0}} {
		if _, err := s.Get(ctx(t), "empty", r[0], r[1]); !errors.Is(err, objstore.ErrRange) {
			t.Fatalf("Get(empty, %d, %d) err = %v, want ErrRange", r[0], r[1], err)
		}
	}
	info, err := s.Head(ctx(t), "empty")
	if err != nil || info.Size != 0 {
		t.Fatalf("Head(empty) = %+v, %v", info, err)
	}
	if err := s.PutIfAbsent(ctx(t), "empty", []byte("x")); !errors.Is(err, objstore.ErrExists) {
		t.Fatalf("second put of an empty object: err = %v, want ErrExists", err)
	}
}

func testBinaryData(t *testing.T, s objstore.Store) {
	data := make([]byte, 0, 256*4+4096)
	for i := range 256 {
		data = append(data, byte(i), 0, byte(255-i), '\n')
	}
	data = append(data, randomBytes(1, 4096)...)
	mustPut(t, s, "bin/all-bytes", data)
	if got := mustGet(t, s, "bin/all-bytes", 0, -1); !bytes.Equal(got, data) {
		t.Fatal("binary data did not round-trip")
	}
	if got := mustGet(t, s, "bin/all-bytes", 1, 7); !bytes.Equal(got, data[1:8]) {
		t.Fatalf("range of binary data = %v, want %v", got, data[1:8])
	}
}

func testKeyCharacters(t *testing.T, s objstore.Store) {
	keys := []string{
		"with space/and+plus",
		"percent%20and%2Fslash/x",
		"q?uery&a=b#frag;semi:colon,comma",
		"unicode/ü/日本/ø.obj",
		"dots/a..b/.hidden/c.",
		"tilde~/star*/paren(1)/[b]/'q'/!@$",
	}
	for i, k := range keys {
		mustPut(t, s, k, []byte(k))
		if got := mustGet(t, s, k, 0, -1); string(got) != k {
			t.Fatalf("key %d %q: Get = %q", i, k, got)
		}
		info, err := s.Head(ctx(t), k)
		if err != nil || info.Key != k {
			t.Fatalf("Head(%q) = %+v, %v", k, info, err)
		}
	}
	infos, err := s.List(ctx(t), "")
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	want := slices.Clone(keys)
	slices.Sort(want)
	if got := keysOf(infos); !slices.Equal(got, want) {
		t.Fatalf("List = %q, want %q", got, want)
	}
}

func testPutIfAbsentConflict(t *testing.T, s objstore.Store) {
	mustPut(t, s, "a/b", []byte("first"))
	err := s.PutIfAbsent(ctx(t), "a/b", []byte("second, longer value"))
	if !errors.Is(err, objstore.ErrExists) {
		t.Fatalf("second PutIfAbsent err = %v, want ErrExists", err)
	}
	if !strings.Contains(err.Error(), "a/b") {
		t.Errorf("error %q does not name the key", err)
	}
	if got := mustGet(t, s, "a/b", 0, -1); string(got) != "first" {
		t.Fatalf("after conflict Get = %q, want first", got)
	}
}

func testConcurrentPutIfAbsent(t *testing.T, s objstore.Store) {
	const writers = 24
	var (
		wg   sync.WaitGroup
		errs [writers]error
		data [writers][]byte
	)
	start := make(chan struct{})
	for i := range writers {
		data[i] = randomBytes(uint64(100+i), 64<<10+i)
		wg.Go(func() {
			<-start
			errs[i] = s.PutIfAbsent(ctx(t), "race/key", data[i])
		})
	}
	close(start)
	wg.Wait()
	winner := -1
	for i, err := range errs {
		switch {
		case err == nil:
			if winner >= 0 {
				t.Fatalf("writers %d and %d both won", winner, i)
			}
			winner = i
		case !errors.Is(err, objstore.ErrExists):
			t.Fatalf("writer %d: %v, want nil or ErrExists", i, err)
		}
	}
	if winner < 0 {
		t.Fatal("no writer won")
	}
	if got := mustGet(t, s, "race/key", 0, -1); !bytes.Equal(got, data[winner]) {
		t.Fatalf("stored object (%d bytes) is not the winner's (%d bytes)", len(got), len(data[winner]))
	}
	infos, err := s.List(ctx(t), "race/")
	if err != nil || len(infos) != 1 {
		t.Fatalf("List(race/) = %+v, %v; want exactly the one object", infos, err)
	}
}

func testRanges(t *testing.T, s objstore.Store) {
	data := randomBytes(7, 1000)
	mustPut(t, s, "r", data)
	ok := []struct{ off, n int64 }{
		{0, 10},    // start
		{500, 100}, // middle
		{990, -1},  // to the end
		{990, 10},  // exactly to the end
		{0, -1},    // everything
		{0, 1000},  // everything, explicit
		{999, 1},   // last byte
		{1000, -1}, // at the end: empty
		{1000, 0},  // at the end: empty
		{123, 0},   // empty in the middle
	}
	for _, c := range ok {
		got := mustGet(t, s, "r", c.off, c.n)
		end := int64(len(data))
		if c.n >= 0 {
			end = c.off + c.n
		}
		if !bytes.Equal(got, data[c.off:end]) || got == nil {
			t.Errorf("Get(r, %d, %d): %d bytes, want data[%d:%d]", c.off, c.n, len(got), c.off, end)
		}
	}
	bad := []struct{ off, n int64 }{
		{995, 10},  // runs past the end: no short reads
		{0, 1001},  // one byte too many
		{1001, -1}, // starts past the end
		{1001, 0},  // starts past the end, empty
		{2000, 10}, // far past the end
		{-1, 5},    // negative offset
		{-1, -1},   // negative offset, to the end
	}
	for _, c := range bad {
		got, err := s.Get(ctx(t), "r", c.off, c.n)
		if !errors.Is(err, objstore.ErrRange) {
			t.Errorf("Get(r, %d, %d) = %d bytes, %v; want ErrRange", c.off, c.n, len(got), err)
		}
	}
}

func testNotFound(t *testing.T, s objstore.Store) {
	mustPut(t, s, "present/x", []byte("x"))
	for _, key := range []string{"missing", "present/y", "present", "present/x/deeper"} {
		if _, err := s.Get(ctx(t), key, 0, -1); !errors.Is(err, objstore.ErrNotFound) {
			t.Errorf("Get(%q) err = %v, want ErrNotFound", key, err)
		} else if !strings.Contains(err.Error(), key) {
			t.Errorf("Get(%q) error %q does not name the key", key, err)
		}
		if _, err := s.Get(ctx(t), key, 10, 5); !errors.Is(err, objstore.ErrNotFound) {
			t.Errorf("ranged Get(%q) err = %v, want ErrNotFound", key, err)
		}
		if _, err := s.Get(ctx(t), key, 0, 0); !errors.Is(err, objstore.ErrNotFound) {
			t.Errorf("empty Get(%q) err = %v, want ErrNotFound", key, err)
		}
		if _, err := s.Head(ctx(t), key); !errors.Is(err, objstore.ErrNotFound) {
			t.Errorf("Head(%q) err = %v, want ErrNotFound", key, err)
		}
	}
	infos, err := s.List(ctx(t), "nothing/here/")
	if err != nil || len(infos) != 0 {
		t.Errorf("List of an unused prefix = %+v, %v; want empty", infos, err)
	}
}

func testDelete(t *testing.T, s objstore.Store) {
	mustPut(t, s, "d/1/a", []byte("a"))
	mustPut(t, s, "d/1/b", []byte("b"))
	for range 2 { // the second delete is of a missing key
		if err := s.Delete(ctx(t), "d/1/a"); err != nil {
			t.Fatalf("Delete: %v", err)
		}
	}
	if err := s.Delete(ctx(t), "never/existed"); err != nil {
		t.Fatalf("Delete of a missing key: %v", err)
	}
	if _, err := s.Head(ctx(t), "d/1/a"); !errors.Is(err, objstore.ErrNotFound) {
		t.Fatalf("Head after Delete err = %v, want ErrNotFound", err)
	}
	if _, err := s.Get(ctx(t), "d/1/a", 0, -1); !errors.Is(err, objstore.ErrNotFound) {
		t.Fatalf("Get after Delete err = %v, want ErrNotFound", err)
	}
	if got := mustGet(t, s, "d/1/b", 0, -1); string(got) != "b" {
		t.Fatalf("sibling after Delete = %q", got)
	}
	// A deleted key can be written again.
	mustPut(t, s, "d/1/a", []byte("again"))
	if got := mustGet(t, s, "d/1/a", 0, -1); string(got) != "again" {
		t.Fatalf("Get after re-put = %q", got)
	}
	// Deleting everything under a prefix leaves no trace, and the former
	// prefix can become a key.
	for _, k := range []string{"d/1/a", "d/1/b"} {
		if err := s.Delete(ctx(t), k); err != nil {
			t.Fatalf("Delete(%q): %v", k, err)
		}
	}
	if infos, err := s.List(ctx(t), "d"); err != nil || len(infos) != 0 {
		t.Fatalf("List(d) after deleting all = %+v, %v", infos, err)
	}
	mustPut(t, s, "d/1", []byte("now a key"))
	if got := mustGet(t, s, "d/1", 0, -1); string(got) != "now a key" {
		t.Fatalf("Get(d/1) = %q", got)
	}
}

func keysOf(infos []objstore.Info) []string {
	keys := make([]string, len(infos))
	for i, in := range infos {
		keys[i] = in.Key
	}
	return keys
}

func testList(t *testing.T, s objstore.Store) {
	objects := map[string]int{
		"a/b/c":     3,
		"a/b/d":     4,
		"a/b/e/f/g": 5,
		"a/bc":      6,
		"a-c":       7,
		"a0":        8,
		"b":         9,
		"ab/x":      10,
	}
	for k, n := range objects {
		mustPut(t, s, k, randomBytes(uint64(n), n))
	}
	cases := []struct {
		prefix string
		want   []string
	}{
		{"", []string{"a-c", "a/b/c", "a/b/d", "a/b/e/f/g", "a/bc", "a0", "ab/x", "b"}},
		{"a", []string{"a-c", "a/b/c", "a/b/d", "a/b/e/f/g", "a/bc", "a0", "ab/x"}},
		{"a/", []string{"a/b/c", "a/b/d", "a/b/e/f/g", "a/bc"}},
		{"a/b", []string{"a/b/c", "a/b/d", "a/b/e/f/g", "a/bc"}},
		{"a/b/", []string{"a/b/c", "a/b/d", "a/b/e/f/g"}},
		{"a/b/e/f/g", []string{"a/b/e/f/g"}},
		{"a/b/c/", nil},
		{"a/bc/", nil},
		{"zz", nil},
		{"b", []string{"b"}},
	}
	for _, c := range cases {
		infos, err := s.List(ctx(t), c.prefix)
		if err != nil {
			t.Fatalf("List(%q): %v", c.prefix, err)
		}
		if got := keysOf(infos); !slices.Equal(got, c.want) && !(len(got) == 0 && len(c.want) == 0) {
			t.Errorf("List(%q) = %q, want %q", c.prefix, got, c.want)
		}
		for _, in := range infos {
			if in.Size != int64(objects[in.Key]) {
				t.Errorf("List(%q): %s size %d, want %d", c.prefix, in.Key, in.Size, objects[in.Key])
			}
			if in.ModTime.IsZero() {
				t.Errorf("List(%q): %s has no ModTime", c.prefix, in.Key)
			}
		}
	}
}

func testListPagination(t *testing.T, s objstore.Store) {
	const n = 1100 // more than one S3 page (1000)
	keys := make([]string, n)
	for i := range keys {
		// Spread over a few "directories" so both layouts get exercised.
		keys[i] = fmt.Sprintf("many/%02d/%05d", i%7, i)
	}
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	work := make(chan string)
	for range 16 {
		wg.Go(func() {
			for k := range work {
				if err := s.PutIfAbsent(ctx(t), k, []byte(k)); err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				}
			}
		})
	}
	for _, k := range keys {
		work <- k
	}
	close(work)
	wg.Wait()
	if len(errs) > 0 {
		t.Fatalf("%d puts failed, first: %v", len(errs), errs[0])
	}
	mustPut(t, s, "manx", []byte("outside the prefix"))
	slices.Sort(keys)
	infos, err := s.List(ctx(t), "many/")
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	if got := keysOf(infos); !slices.Equal(got, keys) {
		t.Fatalf("List(many/) returned %d keys (sorted: %v), want %d", len(got), slices.IsSorted(got), n)
	}
	infos, err = s.List(ctx(t), "")
	if err != nil || len(infos) != n+1 {
		t.Fatalf("List() = %d keys, %v; want %d", len(infos), err, n+1)
	}
	infos, err = s.List(ctx(t), "many/03/")
	if err != nil {
		t.Fatalf("List(many/03/): %v", err)
	}
	var want []string
	for _, k := range keys {
		if strings.HasPrefix(k, "many/03/") {
			want = append(want, k)
		}
	}
	if got := keysOf(infos); !slices.Equal(got, want) {
		t.Fatalf("List(many/03/) = %d keys, want %d", len(got), len(want))
	}
}

func testLargeObject(t *testing.T, s objstore.Store) {
	data := randomBytes(42, 9<<20+123) // more than minio-go's 5 MiB part minimum
	mustPut(t, s, "big/object", data)
	info, err := s.Head(ctx(t), "big/object")
	if err != nil || info.Size != int64(len(data)) {
		t.Fatalf("Head = %+v, %v; want size %d", info, err, len(data))
	}
	if got := mustGet(t, s, "big/object", 0, -1); !bytes.Equal(got, data) {
		t.Fatalf("large object did not round-trip (%d bytes back)", len(got))
	}
	off, n := int64(4<<20+3), int64(1<<20+5)
	if got := mustGet(t, s, "big/object", off, n); !bytes.Equal(got, data[off:off+n]) {
		t.Fatal("range of a large object is wrong")
	}
	tail := int64(len(data)) - 17
	if got := mustGet(t, s, "big/object", tail, -1); !bytes.Equal(got, data[tail:]) {
		t.Fatal("tail of a large object is wrong")
	}
}

func testInvalidKeys(t *testing.T, s objstore.Store) {
	for _, key := range []string{"", "/abs", "a//b", "a/", "../a", "a/../b", "a/./b", ".", "..", "a/.", "nul\x00byte"} {
		if err := s.PutIfAbsent(ctx(t), key, []byte("x")); !errors.Is(err, objstore.ErrInvalidKey) {
			t.Errorf("PutIfAbsent(%q) err = %v, want ErrInvalidKey", key, err)
		}
		if _, err := s.Get(ctx(t), key, 0, -1); !errors.Is(err, objstore.ErrInvalidKey) {
			t.Errorf("Get(%q) err = %v, want ErrInvalidKey", key, err)
		}
		if _, err := s.Head(ctx(t), key); !errors.Is(err, objstore.ErrInvalidKey) {
			t.Errorf("Head(%q) err = %v, want ErrInvalidKey", key, err)
		}
		if err := s.Delete(ctx(t), key); !errors.Is(err, objstore.ErrInvalidKey) {
			t.Errorf("Delete(%q) err = %v, want ErrInvalidKey", key, err)
		}
	}
	if infos, err := s.List(ctx(t), ""); err != nil || len(infos) != 0 {
		t.Errorf("after rejected puts List = %+v, %v; want empty", infos, err)
	}
}

func testContextCancelled(t *testing.T, s objstore.Store) {
	mustPut(t, s, "exists", []byte("x"))
	c, cancel := context.WithCancel(t.Context())
	cancel()
	check := func(op string, err error) {
		t.Helper()
		if !errors.Is(err, context.Canceled) {
			t.Errorf("%s with a cancelled context: err = %v, want context.Canceled", op, err)
		}
	}
	check("PutIfAbsent", s.PutIfAbsent(c, "new", []byte("x")))
	_, err := s.Get(c, "exists", 0, -1)
	check("Get", err)
	_, err = s.Head(c, "exists")
	check("Head", err)
	_, err = s.List(c, "")
	check("List", err)
	check("Delete", s.Delete(c, "exists"))

	// Nothing changed.
	if _, err := s.Head(ctx(t), "new"); !errors.Is(err, objstore.ErrNotFound) {
		t.Errorf("cancelled put created the object: Head err = %v", err)
	}
	if got := mustGet(t, s, "exists", 0, -1); string(got) != "x" {
		t.Errorf("cancelled delete removed the object")
	}

	// An expired deadline is reported as DeadlineExceeded.
	dc, dcancel := context.WithTimeout(t.Context(), time.Nanosecond)
	defer dcancel()
	<-dc.Done()
	if _, err := s.Get(dc, "exists", 0, -1); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Get with an expired deadline: err = %v, want DeadlineExceeded", err)
	}
}
