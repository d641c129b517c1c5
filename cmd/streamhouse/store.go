package main

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/spf13/pflag"

	"github.com/streamhouse/streamhouse/pkg/objstore"
)

// storeConfig selects and configures the object store.
type storeConfig struct {
	Kind        string // local or s3
	LocalDir    string
	KeyRoot     string
	PrefixCount int
	S3          objstore.S3Config
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
	f.BoolVar(&c.S3.UseTLS, "s3-tls", true, "use HTTPS for S3 when the endpoint has no scheme")
	f.BoolVar(&c.S3.CreateBucket, "s3-create-bucket", false, "create the bucket if it does not exist")
}

func (c *storeConfig) validate() error {
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
		s, err := objstore.NewS3(ctx, c.S3)
		if err != nil {
			return nil, nil, err
		}
		return s, func() { _ = s.Close() }, nil
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
