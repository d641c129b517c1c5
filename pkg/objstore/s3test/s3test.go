// Package s3test runs a real S3 server for tests: versitygw v1.8.0 (an S3
// gateway over a local folder that checks signatures and honours conditional
// writes) as a child process on 127.0.0.1.
//
// The binary is found, in order, at $STREAMHOUSE_VERSITYGW, at
// <repo root>/bin/versitygw (the repo root is the nearest directory above the
// working directory holding go.work; `go tool task tools` builds it there from
// tools/versitygw), or as versitygw on PATH. If none exists the test fails:
// S3 tests are never skipped silently.
package s3test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/streamhouse/streamhouse/pkg/objstore"
)

// EnvBinary is the environment variable that names the versitygw binary.
const EnvBinary = "STREAMHOUSE_VERSITYGW"

// Bucket is the bucket Start creates.
const Bucket = "streamhouse-test"

// Region is the region the server reports.
const Region = "us-east-1"

const (
	startAttempts = 5                // fresh ports tried if the server cannot bind
	readyTimeout  = 30 * time.Second // per attempt
	stopTimeout   = 10 * time.Second // after SIGTERM, before SIGKILL
)

// Server is a running versitygw process, stopped by the test's cleanup.
type Server struct {
	// Config reaches the server with its root credentials and the bucket
	// Start created (CreateBucket false, Prefix empty).
	Config objstore.S3Config
	// Dir is the server's posix root: each bucket is a directory in it.
	Dir string

	cmd      *exec.Cmd
	out      *syncBuffer
	done     chan struct{} // closed when the process has exited
	waitErr  error         // set before done is closed
	stopOnce sync.Once
}

// Start starts a server with a fresh bucket (see StartServer) and returns
// the configuration that reaches it.
func Start(t testing.TB) objstore.S3Config {
	t.Helper()
	return StartServer(t).Config
}

// StartServer starts versitygw on a free 127.0.0.1 port with a temporary
// posix root and random root credentials, waits until it answers S3
// requests, and creates Bucket. It fails the test if the binary cannot be
// found or the server does not come up; the server's output is logged when
// the test fails. The server is stopped in t.Cleanup (or earlier by Stop).
func StartServer(t testing.TB) *Server {
	t.Helper()
	bin, err := FindBinary()
	if err != nil {
		t.Fatalf("s3test: %v\nBuild it with `go tool task tools` (or `cd tools/versitygw && GOWORK=off go build -o ../../bin/versitygw github.com/versity/versitygw/cmd/versitygw`), or set %s.", err, EnvBinary)
	}
	dir := filepath.Join(t.TempDir(), "gw")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatalf("s3test: %v", err)
	}
	access, secret := randomHex(t, 10), randomHex(t, 20)

	var lastErr error
	for range startAttempts {
		srv, retry, err := start(t, bin, dir, access, secret)
		if err == nil {
			return srv
		}
		lastErr = err
		if !retry {
			break
		}
	}
	t.Fatalf("s3test: starting %s: %v", bin, lastErr)
	return nil
}

// start makes one attempt on a fresh port. retry reports whether another
// port might work (the server could not bind).
func start(t testing.TB, bin, dir, access, secret string) (srv *Server, retry bool, err error) {
	port, err := freePort()
	if err != nil {
		return nil, false, err
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	out := &syncBuffer{}
	cmd := exec.Command(bin, "--port", addr, "--region", Region, "--quiet", "posix", dir)
	cmd.Env = append(serverEnv(), "ROOT_ACCESS_KEY="+access, "ROOT_SECRET_KEY="+secret)
	cmd.Stdout = out
	cmd.Stderr = out
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		return nil, false, err
	}
	srv = &Server{
		Config: objstore.S3Config{
			Endpoint:  "http://" + addr,
			Bucket:    Bucket,
			Region:    Region,
			AccessKey: access,
			SecretKey: secret,
		},
		Dir:  dir,
		cmd:  cmd,
		out:  out,
		done: make(chan struct{}),
	}
	go func() {
		srv.waitErr = cmd.Wait()
		close(srv.done)
	}()
	t.Cleanup(func() {
		srv.Stop()
		if t.Failed() {
			t.Logf("versitygw on %s output:\n%s", addr, srv.out.String())
		}
	})
	if err := srv.waitReady(); err != nil {
		srv.Stop()
		output := srv.out.String()
		retry := strings.Contains(output, "address already in use")
		return nil, retry, fmt.Errorf("%w\nversitygw output:\n%s", err, output)
	}
	return srv, false, nil
}

// waitReady polls until the server answers an authenticated request, then
// creates the bucket.
func (s *Server) waitReady() error {
	tr, err := minio.DefaultTransport(false)
	if err != nil {
		return err
	}
	defer tr.CloseIdleConnections()
	client, err := minio.New(strings.TrimPrefix(s.Config.Endpoint, "http://"), &minio.Options{
		Creds:      credentials.NewStaticV4(s.Config.AccessKey, s.Config.SecretKey, ""),
		Region:     Region,
		Transport:  tr,
		MaxRetries: 1,
	})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
	defer cancel()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		rctx, rcancel := context.WithTimeout(ctx, time.Second)
		_, err := client.ListBuckets(rctx)
		rcancel()
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return fmt.Errorf("not answering after %v: %w", readyTimeout, err)
		}
		select {
		case <-s.done:
			return fmt.Errorf("exited before answering (%v)", s.waitErr)
		case <-tick.C:
		case <-ctx.Done():
		}
	}
	if err := client.MakeBucket(ctx, Bucket, minio.MakeBucketOptions{Region: Region}); err != nil {
		return fmt.Errorf("create bucket %s: %w", Bucket, err)
	}
	return nil
}

// Stop stops the server: SIGTERM, then SIGKILL if it has not exited within
// 10 s, and waits for the process to be gone. Safe to call more than once;
// the test's cleanup calls it too.
func (s *Server) Stop() {
	s.stopOnce.Do(func() {
		select {
		case <-s.done:
			return
		default:
		}
		_ = s.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-s.done:
		case <-time.After(stopTimeout):
			_ = s.cmd.Process.Kill()
			<-s.done
		}
	})
}

// Output returns what the server has written to stdout and stderr so far.
func (s *Server) Output() string { return s.out.String() }

// FindBinary returns the path of the versitygw binary to run: $EnvBinary if
// set (it must exist), else <repo root>/bin/versitygw if it exists, else
// versitygw from PATH.
func FindBinary() (string, error) {
	if p := os.Getenv(EnvBinary); p != "" {
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("%s=%s: %w", EnvBinary, p, err)
		}
		return p, nil
	}
	var tried []string
	if root, err := repoRoot(); err == nil {
		p := filepath.Join(root, "bin", "versitygw")
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() {
			return p, nil
		}
		tried = append(tried, p)
	}
	if p, err := exec.LookPath("versitygw"); err == nil {
		return p, nil
	}
	tried = append(tried, "versitygw on PATH")
	return "", fmt.Errorf("versitygw binary not found (%s unset; tried %s)", EnvBinary, strings.Join(tried, ", "))
}

// repoRoot returns the nearest directory at or above the working directory
// that holds go.work.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.work")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.work above the working directory")
		}
		dir = parent
	}
}

// serverEnv is the test's environment without variables that would change
// how versitygw runs (its flags all have VGW_ or ROOT_ environment twins).
func serverEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "VGW_") || strings.HasPrefix(kv, "ROOT_") {
			continue
		}
		env = append(env, kv)
	}
	return env
}

// freePort asks the OS for a free port on 127.0.0.1. Another process may
// take it before the server binds; StartServer then tries another.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func randomHex(t testing.TB, n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatalf("s3test: %v", err)
	}
	return hex.EncodeToString(b)
}

// syncBuffer is a bytes.Buffer safe for the two copying goroutines of
// exec.Cmd and readers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
