package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/streamhouse/streamhouse/pkg/objstore"
	"github.com/streamhouse/streamhouse/pkg/objstore/faultproxy"
	"github.com/streamhouse/streamhouse/pkg/objstore/guard"
)

// storeConfig selects and configures the object store.
type storeConfig struct {
	Kind        string // local or s3
	LocalDir    string
	KeyRoot     string
	PrefixCount int
	S3          objstore.S3Config
	Credentials string // auto, static or iam (sets S3.IAM)
	FaultProxy  bool
	PutRate     float64
	GetRate     float64
	WALBudget   int64
	NoGuard     bool
	// The agent's write admission, which the store's health drives.
	MaxInFlightBytes  int64
	DurableAckTimeout time.Duration
}

// guardConfig is the object-store protection the flags ask for.
func (c *storeConfig) guardConfig() guard.Config {
	g := guard.Config{}
	if c.PutRate > 0 {
		g.Put = guard.Limit{Rate: c.PutRate, Burst: max(int(c.PutRate/10), 1)}
	}
	if c.GetRate > 0 {
		g.Get = guard.Limit{Rate: c.GetRate, Burst: max(int(c.GetRate/10), 1)}
	}
	return g
}

func (c *storeConfig) addFlags(f *pflag.FlagSet) {
	f.StringVar(&c.Kind, "object-store", "local", "object store: local (a folder) or s3 (any S3-compatible service)")
	f.StringVar(&c.LocalDir, "local-dir", "", "folder of the local object store (default <data-dir>/objects)")
	f.StringVar(&c.KeyRoot, "key-root", "", "prefix of every object key, e.g. streamhouse")
	f.IntVar(&c.PrefixCount, "prefix-count", 16, "number of shard prefixes object keys are spread over (S3 rate limits are per prefix)")
	f.StringVar(&c.S3.Endpoint, "s3-endpoint", "", "S3 endpoint, host:port or URL (s3 store)")
	f.StringVar(&c.S3.Bucket, "s3-bucket", "", "S3 bucket (s3 store)")
	f.StringVar(&c.S3.Region, "s3-region", "us-east-1", "S3 region")
	f.StringVar(&c.S3.AccessKey, "s3-access-key", "", "S3 access key (default $AWS_ACCESS_KEY_ID)")
	f.StringVar(&c.S3.SecretKey, "s3-secret-key", "", "S3 secret key (default $AWS_SECRET_ACCESS_KEY); prefer the environment to the command line")
	f.StringVar(&c.Credentials, "s3-credentials", "auto", "where S3 credentials come from: static (--s3-access-key/--s3-secret-key, or anonymous without them), iam (AWS workload identity: IRSA web identity token, EKS Pod Identity, ECS, EC2 instance profile), or auto (iam when no keys are given and AWS_WEB_IDENTITY_TOKEN_FILE or AWS_CONTAINER_CREDENTIALS_FULL_URI/RELATIVE_URI is set, else static)")
	f.StringVar(&c.S3.IAMEndpoint, "s3-sts-endpoint", "", "STS endpoint for --s3-credentials iam (default AWS's, regional when AWS_REGION is set)")
	f.BoolVar(&c.S3.UseTLS, "s3-tls", true, "use HTTPS for S3 when the endpoint has no scheme")
	f.BoolVar(&c.S3.CreateBucket, "s3-create-bucket", false, "create the bucket if it does not exist")
	f.BoolVar(&c.FaultProxy, "s3-fault-proxy", false, "for drills: put a fault-injecting proxy in front of the S3 endpoint and print its control URL (POST {\"slowdown\":1,\"duration\":\"60s\"} to <url>/_fault)")
	f.Float64Var(&c.PutRate, "s3-put-rate", 3000, "object PUTs per second this agent may send at most (S3 allows about 3,500 per prefix)")
	f.Float64Var(&c.GetRate, "s3-get-rate", 5000, "object GETs per second this agent may send at most")
	f.BoolVar(&c.NoGuard, "s3-no-guard", false, "talk to the object store without rate limits, retries and circuit breaker (to measure what they cost; not for production)")
	f.Int64Var(&c.WALBudget, "wal-budget", 1<<30, "bytes of not-yet-uploaded data the WAL may hold; past 80% writes get 429 until it is back under 60%")
	f.Int64Var(&c.MaxInFlightBytes, "max-inflight-bytes", 128<<20, "batch bytes of produce requests the agent holds at once (a durable ack holds its request until the next flush is committed); past it requests get 429 with a Retry-After, so memory follows this limit, not the offered load")
	f.DurationVar(&c.DurableAckTimeout, "durable-ack-timeout", 10*time.Second, "longest a durable produce waits for its commit before it is answered (DeadlineExceeded: the records are in the WAL and may or may not become visible); bounds the wait while the object store fails")
}

func (c *storeConfig) validate() error {
	if c.PutRate <= 0 || c.GetRate <= 0 || c.WALBudget < 1<<20 {
		return fmt.Errorf("--s3-put-rate and --s3-get-rate must be positive and --wal-budget at least 1 MiB")
	}
	if c.MaxInFlightBytes < 1<<20 || c.DurableAckTimeout < 100*time.Millisecond {
		return fmt.Errorf("--max-inflight-bytes must be at least 1 MiB (got %d) and --durable-ack-timeout at least 100ms (got %v)", c.MaxInFlightBytes, c.DurableAckTimeout)
	}
	if c.FaultProxy && c.Kind != "s3" {
		return errors.New("--s3-fault-proxy needs --object-store s3")
	}
	if c.PrefixCount < 1 || c.PrefixCount > 65536 {
		return fmt.Errorf("--prefix-count %d must be between 1 and 65536", c.PrefixCount)
	}
	switch c.Kind {
	case "local":
		return nil
	case "s3":
		if c.S3.AccessKey == "" {
			c.S3.AccessKey = os.Getenv("AWS_ACCESS_KEY_ID")
		}
		if c.S3.SecretKey == "" {
			c.S3.SecretKey = os.Getenv("AWS_SECRET_ACCESS_KEY")
		}
		var errs []error
		switch c.Credentials {
		case "static":
		case "iam":
			c.S3.IAM = true
		case "auto":
			c.S3.IAM = c.S3.AccessKey == "" && c.S3.SecretKey == "" &&
				(os.Getenv("AWS_WEB_IDENTITY_TOKEN_FILE") != "" || os.Getenv("AWS_CONTAINER_CREDENTIALS_FULL_URI") != "" ||
					os.Getenv("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI") != "")
		default:
			errs = append(errs, fmt.Errorf("--s3-credentials %q: use auto, static or iam", c.Credentials))
		}
		if c.S3.IAM && (c.S3.AccessKey != "" || c.S3.SecretKey != "") && c.Credentials == "iam" {
			errs = append(errs, errors.New("--s3-credentials iam takes no --s3-access-key/--s3-secret-key (nor AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY)"))
		}
		if c.S3.Endpoint == "" {
			errs = append(errs, errors.New("--s3-endpoint is required with --object-store s3"))
		}
		if c.S3.Bucket == "" {
			errs = append(errs, errors.New("--s3-bucket is required with --object-store s3"))
		}
		return errors.Join(errs...)
	default:
		return fmt.Errorf("--object-store %q: use local or s3", c.Kind)
	}
}

// open returns the store and a function that releases it.
func (c *storeConfig) open(ctx context.Context, defaultDir string) (objstore.Store, func(), error) {
	if c.Kind == "s3" {
		cfg := c.S3
		var proxy *faultproxy.Proxy
		if c.FaultProxy {
			target := cfg.Endpoint
			if !strings.Contains(target, "://") {
				target = map[bool]string{true: "https://", false: "http://"}[cfg.UseTLS] + target
			}
			p, err := faultproxy.Start(target)
			if err != nil {
				return nil, nil, fmt.Errorf("start the S3 fault proxy: %w", err)
			}
			proxy = p
			cfg.Endpoint = p.URL()
			slog.Warn("S3 requests go through a fault-injecting proxy (--s3-fault-proxy)", "control", p.URL()+"/_fault",
				"example", `curl -X POST `+p.URL()+`/_fault -d '{"slowdown":1,"duration":"60s"}'`)
		}
		s, err := objstore.NewS3(ctx, cfg)
		if err != nil {
			return nil, nil, err
		}
		return s, func() {
			_ = s.Close()
			if proxy != nil {
				_ = proxy.Close()
			}
		}, nil
	}
	dir := c.LocalDir
	if dir == "" {
		dir = defaultDir
	}
	l, err := objstore.NewLocal(dir)
	if err != nil {
		return nil, nil, err
	}
	return l, func() {}, nil
}
