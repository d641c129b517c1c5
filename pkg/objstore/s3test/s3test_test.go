package s3test_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/streamhouse/streamhouse/pkg/objstore"
	"github.com/streamhouse/streamhouse/pkg/objstore/s3test"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestStartStop(t *testing.T) {
	srv := s3test.StartServer(t)
	ctx := context.Background()
	s, err := objstore.NewS3(ctx, srv.Config)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.PutIfAbsent(ctx, "a/b", []byte("hello")); err != nil {
		t.Fatal(err)
	}
	// The posix backend keeps the object as a plain file.
	b, err := os.ReadFile(filepath.Join(srv.Dir, s3test.Bucket, "a", "b"))
	if err != nil || string(b) != "hello" {
		t.Fatalf("backing file = %q, %v", b, err)
	}

	srv.Stop()
	srv.Stop() // idempotent
	s.Close()
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := s.Head(cctx, "a/b"); err == nil {
		t.Fatal("server still answers after Stop")
	}
}

func TestFindBinaryFromEnv(t *testing.T) {
	t.Setenv(s3test.EnvBinary, filepath.Join(t.TempDir(), "nope"))
	if _, err := s3test.FindBinary(); err == nil {
		t.Fatal("FindBinary accepted a missing $" + s3test.EnvBinary)
	}
}
