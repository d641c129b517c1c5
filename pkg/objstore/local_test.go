package objstore_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/streamhouse/streamhouse/pkg/objstore"
	"github.com/streamhouse/streamhouse/pkg/objstore/storetest"
)

func newLocal(t *testing.T) *objstore.Local {
	t.Helper()
	s, err := objstore.NewLocal(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestLocalConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) objstore.Store { return newLocal(t) })
}

func TestLocalLayoutAndTempFiles(t *testing.T) {
	ctx := context.Background()
	s := newLocal(t)
	if err := s.PutIfAbsent(ctx, "x/y/z", []byte("data")); err != nil {
		t.Fatal(err)
	}
	// The key maps to the obvious file.
	b, err := os.ReadFile(filepath.Join(s.Dir(), "x", "y", "z"))
	if err != nil || string(b) != "data" {
		t.Fatalf("file = %q, %v", b, err)
	}
	// No temporary file is left behind, and a stray one is never listed.
	tmp := filepath.Join(s.Dir(), ".objstore-tmp")
	entries, err := os.ReadDir(tmp)
	if err != nil || len(entries) != 0 {
		t.Fatalf("temp dir entries = %v, %v", entries, err)
	}
	if err := os.WriteFile(filepath.Join(tmp, "put-stray"), []byte("partial"), 0o644); err != nil {
		t.Fatal(err)
	}
	infos, err := s.List(ctx, "")
	if err != nil || len(infos) != 1 || infos[0].Key != "x/y/z" {
		t.Fatalf("List = %+v, %v", infos, err)
	}
	// The temp dir is not addressable as a key.
	if err := s.PutIfAbsent(ctx, ".objstore-tmp/put-stray", []byte("x")); !errors.Is(err, objstore.ErrInvalidKey) {
		t.Fatalf("put into the temp dir: %v", err)
	}
	// Reopening removes stale temp files only.
	old := time.Now().Add(-2 * time.Hour)
	if err := os.WriteFile(filepath.Join(tmp, "put-old"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(filepath.Join(tmp, "put-old"), old, old); err != nil {
		t.Fatal(err)
	}
	if _, err := objstore.NewLocal(s.Dir()); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(tmp, "put-old")); !os.IsNotExist(err) {
		t.Fatalf("stale temp file survived reopen: %v", err)
	}
	if _, err := os.Stat(filepath.Join(tmp, "put-stray")); err != nil {
		t.Fatalf("fresh temp file removed on reopen: %v", err)
	}
	// Deleting the last key under a directory prunes the empty directories.
	if err := s.Delete(ctx, "x/y/z"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(s.Dir(), "x")); !os.IsNotExist(err) {
		t.Fatalf("empty directory x not pruned: %v", err)
	}
}

func TestLocalFileDirectoryClash(t *testing.T) {
	ctx := context.Background()
	s := newLocal(t)
	if err := s.PutIfAbsent(ctx, "a/b", []byte("x")); err != nil {
		t.Fatal(err)
	}
	// "a" is a directory here, not an object: not ErrExists.
	err := s.PutIfAbsent(ctx, "a", []byte("y"))
	if err == nil || errors.Is(err, objstore.ErrExists) || !strings.Contains(err.Error(), "put a:") {
		t.Fatalf("put over a directory: %v", err)
	}
	if err := s.PutIfAbsent(ctx, "a/b/c", []byte("y")); err == nil || errors.Is(err, objstore.ErrExists) {
		t.Fatalf("put under a file: %v", err)
	}
	if err := s.Delete(ctx, "a"); err != nil {
		t.Fatalf("delete of a directory name: %v", err)
	}
	if _, err := s.Head(ctx, "a"); !errors.Is(err, objstore.ErrNotFound) {
		t.Fatalf("head of a directory name: %v", err)
	}
}

// TestLocalPutDeleteRace puts and deletes keys that share directories from
// many goroutines: Delete prunes directories that Put is about to use, which
// must never surface as an error.
func TestLocalPutDeleteRace(t *testing.T) {
	ctx := context.Background()
	s := newLocal(t)
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := range 8 {
		wg.Go(func() {
			key := fmt.Sprintf("p/q/r/k%d", g)
			for range 40 {
				if err := s.PutIfAbsent(ctx, key, []byte(key)); err != nil {
					errs <- err
					return
				}
				if err := s.Delete(ctx, key); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if infos, err := s.List(ctx, ""); err != nil || len(infos) != 0 {
		t.Fatalf("List = %+v, %v", infos, err)
	}
}
