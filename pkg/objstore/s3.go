package objstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// S3Config says how to reach an S3-compatible service.
type S3Config struct {
	// Endpoint is "host:port" or a URL "http(s)://host[:port]" (the URL's
	// scheme then overrides UseTLS). Required.
	Endpoint string
	// Bucket holds the objects. Required.
	Bucket string
	// Region of the bucket. Empty: minio-go asks the service (one extra
	// request per bucket, cached).
	Region string
	// AccessKey and SecretKey are static credentials. Both empty: anonymous
	// (unless IAM is set).
	AccessKey string
	SecretKey string
	// IAM takes credentials from the AWS workload identity chain instead of
	// the static keys: a web identity token exchanged with STS (EKS IRSA:
	// AWS_WEB_IDENTITY_TOKEN_FILE and AWS_ROLE_ARN), EKS Pod Identity or ECS
	// container credentials (AWS_CONTAINER_CREDENTIALS_*), else the EC2
	// instance profile. Credentials are refreshed before they expire.
	IAM bool
	// IAMEndpoint overrides the STS (or metadata) endpoint IAM asks; empty
	// means AWS's own (the regional STS endpoint when AWS_REGION is set).
	IAMEndpoint string
	// UseTLS selects https for a "host:port" Endpoint.
	UseTLS bool
	// Prefix, if set, is prepended to every key ("root" stores key "a/b" as
	// "root/a/b"); Info.Key and List never show it. Leading and trailing '/'
	// are ignored.
	Prefix string
	// CreateBucket makes NewS3 create the bucket if it does not exist.
	// Without it, NewS3 fails if the bucket does not exist.
	CreateBucket bool
	// MaxAttempts is how many times minio-go sends one request before giving
	// up; 0 means 1 (no retries). Retry policy (backoff, budgets, circuit
	// breaking) belongs to the caller, which can classify errors with
	// S3ErrorCode. Note that a retried PutIfAbsent whose first attempt
	// succeeded but lost its response reports ErrExists.
	MaxAttempts int
}

// S3 is a Store on an S3-compatible service, through minio-go.
//
// PutIfAbsent is one PUT (never multipart, so objects are limited to 5 GiB)
// with "If-None-Match: *": the service decides atomically, and 412
// PreconditionFailed becomes ErrExists. The service must support conditional
// writes (AWS S3 since 2024, MinIO, versitygw, ...); one that ignores the
// header silently overwrites.
//
// Errors are classified by S3 error code and HTTP status, never by message:
// NoSuchKey (or 404) wraps ErrNotFound, InvalidRange (or 416) wraps ErrRange,
// PreconditionFailed (412) wraps ErrExists. Every error from the service also
// wraps the minio.ErrorResponse, so S3ErrorCode and S3StatusCode work on it.
type S3 struct {
	client    *minio.Client
	core      minio.Core
	transport *http.Transport
	bucket    string
	prefix    string // "" or ends with "/"
}

var _ Store = (*S3)(nil)

// maxPutSize is the largest object one S3 PUT may carry.
const maxPutSize = 5 << 30

// NewS3 connects to the service and checks the bucket exists (creating it if
// cfg.CreateBucket). Call Close when done to release idle connections.
func NewS3(ctx context.Context, cfg S3Config) (*S3, error) {
	if cfg.Bucket == "" {
		return nil, errors.New("new s3 store: empty bucket")
	}
	host, secure, err := parseEndpoint(cfg.Endpoint, cfg.UseTLS)
	if err != nil {
		return nil, fmt.Errorf("new s3 store: %w", err)
	}
	transport, err := minio.DefaultTransport(secure)
	if err != nil {
		return nil, fmt.Errorf("new s3 store: %w", err)
	}
	attempts := cfg.MaxAttempts
	if attempts <= 0 {
		attempts = 1
	}
	// Empty keys make the static provider sign nothing (anonymous).
	creds := credentials.NewStaticV4(cfg.AccessKey, cfg.SecretKey, "")
	if cfg.IAM {
		creds = credentials.NewIAM(cfg.IAMEndpoint)
	}
	client, err := minio.New(host, &minio.Options{
		Creds:      creds,
		Secure:     secure,
		Transport:  retryAfterTransport{next: transport},
		Region:     cfg.Region,
		MaxRetries: attempts,
	})
	if err != nil {
		transport.CloseIdleConnections()
		return nil, fmt.Errorf("new s3 store %s: %w", cfg.Endpoint, err)
	}
	s := &S3{
		client:    client,
		core:      minio.Core{Client: client},
		transport: transport,
		bucket:    cfg.Bucket,
	}
	if p := strings.Trim(cfg.Prefix, "/"); p != "" {
		s.prefix = p + "/"
	}
	if err := s.ensureBucket(ctx, cfg); err != nil {
		s.Close()
		return nil, fmt.Errorf("new s3 store %s/%s: %w", cfg.Endpoint, cfg.Bucket, err)
	}
	return s, nil
}

func parseEndpoint(endpoint string, useTLS bool) (host string, secure bool, err error) {
	if endpoint == "" {
		return "", false, errors.New("empty endpoint")
	}
	if !strings.Contains(endpoint, "://") {
		return endpoint, useTLS, nil
	}
	u, err := url.Parse(endpoint)
	if err != nil {
		return "", false, fmt.Errorf("endpoint %q: %w", endpoint, err)
	}
	switch u.Scheme {
	case "http":
		secure = false
	case "https":
		secure = true
	default:
		return "", false, fmt.Errorf("endpoint %q: scheme must be http or https", endpoint)
	}
	if u.Path != "" && u.Path != "/" || u.RawQuery != "" || u.User != nil {
		return "", false, fmt.Errorf("endpoint %q: must not have a path, query or user", endpoint)
	}
	return u.Host, secure, nil
}

func (s *S3) ensureBucket(ctx context.Context, cfg S3Config) error {
	if cfg.CreateBucket {
		err := s.client.MakeBucket(ctx, s.bucket, minio.MakeBucketOptions{Region: cfg.Region})
		if err == nil {
			return nil
		}
		switch S3ErrorCode(err) {
		case "BucketAlreadyOwnedByYou", "BucketAlreadyExists":
			// Check below that we can use it.
		default:
			return fmt.Errorf("create bucket: %w", ctxErr(ctx, err))
		}
	}
	ok, err := s.client.BucketExists(ctx, s.bucket)
	if err != nil {
		return fmt.Errorf("check bucket: %w", ctxErr(ctx, err))
	}
	if !ok {
		return errors.New("bucket does not exist (set CreateBucket to create it)")
	}
	return nil
}

// Close releases the store's idle HTTP connections. Calls in flight finish;
// the store stays usable (new calls open new connections).
func (s *S3) Close() error {
	s.transport.CloseIdleConnections()
	return nil
}

// Bucket returns the bucket the store uses.
func (s *S3) Bucket() string { return s.bucket }

func (s *S3) object(key string) (string, error) {
	if err := ValidateKey(key); err != nil {
		return "", err
	}
	return s.prefix + key, nil
}

// PutIfAbsent implements Store.PutIfAbsent; see S3 for how.
func (s *S3) PutIfAbsent(ctx context.Context, key string, data []byte) error {
	ctx, ra := withRetryAfterHolder(ctx)
	if err := annotate(ra, s.putIfAbsent(ctx, key, data)); err != nil {
		return fmt.Errorf("put %s: %w", key, err)
	}
	return nil
}

func (s *S3) putIfAbsent(ctx context.Context, key string, data []byte) error {
	obj, err := s.object(key)
	if err != nil {
		return err
	}
	if len(data) > maxPutSize {
		return fmt.Errorf("object of %d bytes is larger than one S3 PUT allows (%d)", len(data), maxPutSize)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	opts := minio.PutObjectOptions{
		ContentType:      "application/octet-stream",
		DisableMultipart: true,
	}
	opts.SetMatchETagExcept("*") // If-None-Match: *
	for attempt := 0; ; attempt++ {
		_, err = s.core.PutObject(ctx, s.bucket, obj, bytes.NewReader(data), int64(len(data)), "", "", opts)
		if err == nil {
			return nil
		}
		// AWS answers 409 ConditionalRequestConflict while another
		// conditional write of the key is in flight; asking again gets the
		// definite answer (412 if the other one won).
		if S3ErrorCode(err) == "ConditionalRequestConflict" && attempt < 5 && ctx.Err() == nil {
			select {
			case <-time.After(time.Duration(attempt+1) * 20 * time.Millisecond):
				continue
			case <-ctx.Done():
			}
		}
		return s.mapErr(ctx, err)
	}
}

// Get implements Store.Get with one ranged GET (plus a HEAD when length is 0
// or the range starts at the very end of the object).
func (s *S3) Get(ctx context.Context, key string, offset, length int64) ([]byte, error) {
	ctx, ra := withRetryAfterHolder(ctx)
	b, err := s.get(ctx, key, offset, length)
	if err = annotate(ra, err); err != nil {
		return nil, fmt.Errorf("get %s: %w", key, err)
	}
	return b, nil
}

func (s *S3) get(ctx context.Context, key string, offset, length int64) ([]byte, error) {
	obj, err := s.object(key)
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if offset < 0 {
		return nil, fmt.Errorf("%w: offset %d", ErrRange, offset)
	}
	if length == 0 {
		// S3 cannot express an empty range; check existence and offset.
		info, err := s.stat(ctx, obj)
		if err != nil {
			return nil, err
		}
		if _, _, err := checkRange(info.Size, offset, 0); err != nil {
			return nil, err
		}
		return []byte{}, nil
	}
	var opts minio.GetObjectOptions
	switch {
	case offset == 0 && length < 0:
		// Whole object, no Range header.
	case length < 0:
		err = opts.SetRange(offset, 0) // bytes=offset-
	default:
		err = opts.SetRange(offset, offset+length-1)
	}
	if err != nil {
		return nil, err
	}
	rc, info, _, err := s.core.GetObject(ctx, s.bucket, obj, opts)
	if err != nil {
		err = s.mapErr(ctx, err)
		if errors.Is(err, ErrRange) && length < 0 {
			// The service refuses "bytes=size-"; our rules allow it
			// (empty result) when the object is exactly offset long.
			info, serr := s.stat(ctx, obj)
			if serr != nil {
				return nil, serr
			}
			if info.Size == offset {
				return []byte{}, nil
			}
		}
		return nil, err
	}
	defer rc.Close()
	var buf []byte
	switch {
	case length > 0:
		buf = make([]byte, 0, length)
	case info.Size > 0 && info.Size <= maxPutSize: // Content-Length of the response
		buf = make([]byte, 0, info.Size)
	}
	b := bytes.NewBuffer(buf)
	if _, err := io.Copy(b, rc); err != nil {
		return nil, s.mapErr(ctx, err)
	}
	data := b.Bytes()
	if length > 0 && int64(len(data)) != length {
		// S3 truncates a range that runs past the end; our rules do not.
		return nil, fmt.Errorf("%w: offset %d length %d, object has only %d bytes from offset", ErrRange, offset, length, len(data))
	}
	if data == nil {
		data = []byte{}
	}
	return data, nil
}

// Head implements Store.Head with one HEAD request.
func (s *S3) Head(ctx context.Context, key string) (Info, error) {
	obj, err := s.object(key)
	if err == nil {
		err = ctx.Err()
	}
	if err != nil {
		return Info{}, fmt.Errorf("head %s: %w", key, err)
	}
	ctx, ra := withRetryAfterHolder(ctx)
	info, err := s.stat(ctx, obj)
	if err = annotate(ra, err); err != nil {
		return Info{}, fmt.Errorf("head %s: %w", key, err)
	}
	return Info{Key: key, Size: info.Size, ModTime: info.LastModified}, nil
}

func (s *S3) stat(ctx context.Context, obj string) (minio.ObjectInfo, error) {
	info, err := s.client.StatObject(ctx, s.bucket, obj, minio.StatObjectOptions{})
	if err != nil {
		return minio.ObjectInfo{}, s.mapErr(ctx, err)
	}
	return info, nil
}

// List implements Store.List with ListObjectsV2, following continuation
// tokens until the listing is complete.
func (s *S3) List(ctx context.Context, prefix string) ([]Info, error) {
	ctx, ra := withRetryAfterHolder(ctx)
	out, err := s.list(ctx, prefix)
	if err = annotate(ra, err); err != nil {
		return nil, fmt.Errorf("list %q: %w", prefix, err)
	}
	return out, nil
}

func (s *S3) list(ctx context.Context, prefix string) ([]Info, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	// Cancelling lctx on return stops the listing goroutines of minio-go
	// if we leave the loop early.
	lctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var out []Info
	for oi := range s.client.ListObjectsIter(lctx, s.bucket, minio.ListObjectsOptions{
		Prefix:    s.prefix + prefix,
		Recursive: true,
	}) {
		if oi.Err != nil {
			return nil, s.mapErr(ctx, oi.Err)
		}
		key, ok := strings.CutPrefix(oi.Key, s.prefix)
		if !ok {
			return nil, fmt.Errorf("service listed key %q outside prefix %q", oi.Key, s.prefix)
		}
		out = append(out, Info{Key: key, Size: oi.Size, ModTime: oi.LastModified})
	}
	if err := ctx.Err(); err != nil {
		return nil, err // a cancelled listing may end early without an error
	}
	return out, nil
}

// Delete implements Store.Delete with one DELETE request (S3 answers 204 for
// a missing key too).
func (s *S3) Delete(ctx context.Context, key string) error {
	obj, err := s.object(key)
	if err == nil {
		err = ctx.Err()
	}
	if err == nil {
		rctx, ra := withRetryAfterHolder(ctx)
		err = s.client.RemoveObject(rctx, s.bucket, obj, minio.RemoveObjectOptions{})
		if err != nil {
			err = annotate(ra, s.mapErr(ctx, err))
			if errors.Is(err, ErrNotFound) {
				err = nil // some services answer 404; missing is fine
			}
		}
	}
	if err != nil {
		return fmt.Errorf("delete %s: %w", key, err)
	}
	return nil
}

// mapErr classifies an error from minio-go by S3 error code and HTTP status:
// the result wraps the matching sentinel (if any) and the original error, or
// ctx.Err() if the context ended.
func (s *S3) mapErr(ctx context.Context, err error) error {
	var resp minio.ErrorResponse
	if !errors.As(err, &resp) {
		return ctxErr(ctx, err)
	}
	switch {
	case resp.Code == minio.NoSuchKey,
		resp.StatusCode == http.StatusNotFound && resp.Code != minio.NoSuchBucket:
		return fmt.Errorf("%w: %w", ErrNotFound, err)
	case resp.Code == minio.InvalidRange, resp.StatusCode == http.StatusRequestedRangeNotSatisfiable:
		return fmt.Errorf("%w: %w", ErrRange, err)
	case resp.Code == minio.PreconditionFailed, resp.StatusCode == http.StatusPreconditionFailed:
		return fmt.Errorf("%w: %w", ErrExists, err)
	}
	return ctxErr(ctx, err)
}

// ctxErr makes err wrap ctx.Err() when the context has ended, so callers can
// tell a cancelled call from a failing service with errors.Is.
func ctxErr(ctx context.Context, err error) error {
	if cerr := ctx.Err(); cerr != nil && !errors.Is(err, cerr) {
		return fmt.Errorf("%w: %w", cerr, err)
	}
	return err
}

// S3ErrorCode returns the S3 error code ("SlowDown", "NoSuchKey",
// "PreconditionFailed", ...) carried by err or any error it wraps, or "" if
// err did not come from an S3 service's error response.
func S3ErrorCode(err error) string {
	var resp minio.ErrorResponse
	if errors.As(err, &resp) {
		return resp.Code
	}
	return ""
}

// S3StatusCode returns the HTTP status of the S3 error response carried by err
// or any error it wraps, or 0 if there is none.
func S3StatusCode(err error) int {
	var resp minio.ErrorResponse
	if errors.As(err, &resp) {
		return resp.StatusCode
	}
	return 0
}
