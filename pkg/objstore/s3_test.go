package objstore_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/streamhouse/streamhouse/pkg/objstore"
	"github.com/streamhouse/streamhouse/pkg/objstore/s3test"
	"github.com/streamhouse/streamhouse/pkg/objstore/storetest"
)

func newS3(t *testing.T, cfg objstore.S3Config) *objstore.S3 {
	t.Helper()
	s, err := objstore.NewS3(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// TestS3Conformance runs the suite against one versitygw; each subtest gets
// its own key prefix, so they do not see each other's objects.
func TestS3Conformance(t *testing.T) {
	cfg := s3test.Start(t)
	var n atomic.Int64
	storetest.Run(t, func(t *testing.T) objstore.Store {
		c := cfg
		c.Prefix = fmt.Sprintf("conformance-%d/", n.Add(1))
		return newS3(t, c)
	})
}

// TestS3ConformanceNoPrefix runs the suite at the bucket root, in a bucket
// made by NewS3 (CreateBucket).
func TestS3ConformanceNoPrefix(t *testing.T) {
	cfg := s3test.Start(t)
	var n atomic.Int64
	storetest.Run(t, func(t *testing.T) objstore.Store {
		c := cfg
		c.Bucket = fmt.Sprintf("bucket-%d", n.Add(1))
		c.CreateBucket = true
		return newS3(t, c)
	})
}

func TestS3Config(t *testing.T) {
	cfg := s3test.Start(t)
	ctx := t.Context()

	t.Run("MissingBucket", func(t *testing.T) {
		c := cfg
		c.Bucket = "does-not-exist"
		if s, err := objstore.NewS3(ctx, c); err == nil {
			s.Close()
			t.Fatal("NewS3 with a missing bucket succeeded")
		}
	})
	t.Run("CreateBucketTwice", func(t *testing.T) {
		c := cfg
		c.Bucket = "twice"
		c.CreateBucket = true
		newS3(t, c)
		newS3(t, c) // already exists: fine
	})
	t.Run("WrongSecret", func(t *testing.T) {
		c := cfg
		c.SecretKey = "wrong"
		s, err := objstore.NewS3(ctx, c)
		if err == nil {
			s.Close()
			t.Fatal("NewS3 with a wrong secret succeeded")
		}
	})
	t.Run("HostPortEndpoint", func(t *testing.T) {
		c := cfg
		c.Endpoint = c.Endpoint[len("http://"):]
		s := newS3(t, c)
		if _, err := s.List(ctx, ""); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("BadEndpoint", func(t *testing.T) {
		for _, ep := range []string{"", "ftp://x:1", "http://x:1/path"} {
			c := cfg
			c.Endpoint = ep
			if s, err := objstore.NewS3(ctx, c); err == nil {
				s.Close()
				t.Errorf("NewS3(endpoint %q) succeeded", ep)
			}
		}
	})
	t.Run("PrefixIsolation", func(t *testing.T) {
		a, b := cfg, cfg
		a.Prefix, b.Prefix = "/iso/a/", "iso/b"
		sa, sb, root := newS3(t, a), newS3(t, b), newS3(t, cfg)
		if err := sa.PutIfAbsent(ctx, "k", []byte("a")); err != nil {
			t.Fatal(err)
		}
		if err := sb.PutIfAbsent(ctx, "k", []byte("b")); err != nil {
			t.Fatalf("same key under another prefix: %v", err)
		}
		infos, err := sa.List(ctx, "")
		if err != nil || len(infos) != 1 || infos[0].Key != "k" {
			t.Fatalf("List under prefix = %+v, %v", infos, err)
		}
		got, err := root.Get(ctx, "iso/b/k", 0, -1)
		if err != nil || string(got) != "b" {
			t.Fatalf("object seen from the bucket root = %q, %v", got, err)
		}
	})
}

// TestS3ErrorCodes checks that errors keep the service's S3 error code for
// callers that classify them (retries, circuit breaking).
func TestS3ErrorCodes(t *testing.T) {
	s := newS3(t, s3test.Start(t))
	ctx := context.Background()

	_, err := s.Get(ctx, "missing", 0, -1)
	if !errors.Is(err, objstore.ErrNotFound) || objstore.S3ErrorCode(err) != "NoSuchKey" || objstore.S3StatusCode(err) != 404 {
		t.Errorf("Get missing: %v (code %q, status %d)", err, objstore.S3ErrorCode(err), objstore.S3StatusCode(err))
	}
	_, err = s.Head(ctx, "missing")
	if !errors.Is(err, objstore.ErrNotFound) || objstore.S3StatusCode(err) != 404 {
		t.Errorf("Head missing: %v (code %q, status %d)", err, objstore.S3ErrorCode(err), objstore.S3StatusCode(err))
	}
	if err := s.PutIfAbsent(ctx, "k", []byte("0123456789")); err != nil {
		t.Fatal(err)
	}
	err = s.PutIfAbsent(ctx, "k", []byte("x"))
	if !errors.Is(err, objstore.ErrExists) || objstore.S3ErrorCode(err) != "PreconditionFailed" || objstore.S3StatusCode(err) != 412 {
		t.Errorf("second put: %v (code %q, status %d)", err, objstore.S3ErrorCode(err), objstore.S3StatusCode(err))
	}
	_, err = s.Get(ctx, "k", 20, 5)
	if !errors.Is(err, objstore.ErrRange) || objstore.S3ErrorCode(err) != "InvalidRange" || objstore.S3StatusCode(err) != 416 {
		t.Errorf("range past the end: %v (code %q, status %d)", err, objstore.S3ErrorCode(err), objstore.S3StatusCode(err))
	}
	if code := objstore.S3ErrorCode(errors.New("plain")); code != "" {
		t.Errorf("S3ErrorCode of a plain error = %q", code)
	}
}

// TestS3WebIdentity takes credentials the way a pod with a workload identity
// does (EKS IRSA): the projected token file is exchanged with STS
// (AssumeRoleWithWebIdentity, a fake STS here that checks the token and role
// and hands out the S3 server's keys), and the store signs with what STS
// answered.
func TestS3WebIdentity(t *testing.T) {
	cfg := s3test.Start(t)
	const role = "arn:aws:iam::123456789012:role/streamhouse-agent"
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte("projected-service-account-token"), 0o600); err != nil {
		t.Fatal(err)
	}
	var exchanges atomic.Int64
	sts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := r.ParseForm(); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		if r.Form.Get("Action") != "AssumeRoleWithWebIdentity" || r.Form.Get("WebIdentityToken") != "projected-service-account-token" || r.Form.Get("RoleArn") != role {
			http.Error(w, "<ErrorResponse><Error><Code>AccessDenied</Code><Message>bad request "+r.Form.Encode()+"</Message></Error></ErrorResponse>", http.StatusForbidden)
			return
		}
		exchanges.Add(1)
		w.Header().Set("Content-Type", "text/xml")
		fmt.Fprintf(w, `<AssumeRoleWithWebIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
<AssumeRoleWithWebIdentityResult><Credentials><AccessKeyId>%s</AccessKeyId><SecretAccessKey>%s</SecretAccessKey><Expiration>%s</Expiration></Credentials></AssumeRoleWithWebIdentityResult>
</AssumeRoleWithWebIdentityResponse>`, cfg.AccessKey, cfg.SecretKey, time.Now().Add(time.Hour).UTC().Format(time.RFC3339))
	}))
	defer sts.Close()
	t.Setenv("AWS_WEB_IDENTITY_TOKEN_FILE", tokenFile)
	t.Setenv("AWS_ROLE_ARN", role)

	c := cfg
	c.AccessKey, c.SecretKey = "", ""
	c.IAM, c.IAMEndpoint = true, sts.URL
	c.Prefix = "web-identity/"
	s := newS3(t, c)
	ctx := t.Context()
	if err := s.PutIfAbsent(ctx, "k", []byte("signed with STS credentials")); err != nil {
		t.Fatalf("put with web identity credentials: %v", err)
	}
	got, err := s.Get(ctx, "k", 0, -1)
	if err != nil || string(got) != "signed with STS credentials" {
		t.Fatalf("get: %q, %v", got, err)
	}
	if n := exchanges.Load(); n != 1 {
		t.Fatalf("%d token exchanges with STS, want 1 (the credentials are cached until they near expiry)", n)
	}
}
