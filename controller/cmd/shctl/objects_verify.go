package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/streamhouse/streamhouse/pkg/objfile"
	"github.com/streamhouse/streamhouse/pkg/objstore"
)

// storeFlags select and configure the object store, as `streamhouse` does.
type storeFlags struct {
	kind     string
	localDir string
	prefix   string
	s3       objstore.S3Config
}

func (s *storeFlags) add(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&s.kind, "object-store", "local", "object store: local (a folder) or s3 (any S3-compatible service)")
	f.StringVar(&s.localDir, "local-dir", "data/objects", "folder of the local object store (streamhouse dev uses <data-dir>/objects)")
	f.StringVar(&s.prefix, "prefix", "", "check only objects whose key starts with this (e.g. the --key-root, or a shard)")
	f.StringVar(&s.s3.Endpoint, "s3-endpoint", "", "S3 endpoint, host:port or URL (default $AWS_ENDPOINT_URL_S3 or $AWS_ENDPOINT_URL)")
	f.StringVar(&s.s3.Bucket, "s3-bucket", "", "S3 bucket")
	f.StringVar(&s.s3.Region, "s3-region", "", "S3 region (default $AWS_REGION, $AWS_DEFAULT_REGION or us-east-1)")
	f.StringVar(&s.s3.AccessKey, "s3-access-key", "", "S3 access key (default $AWS_ACCESS_KEY_ID)")
	f.StringVar(&s.s3.SecretKey, "s3-secret-key", "", "S3 secret key (default $AWS_SECRET_ACCESS_KEY); prefer the environment to the command line")
	f.BoolVar(&s.s3.UseTLS, "s3-tls", true, "use HTTPS for S3 when the endpoint has no scheme")
}

// open validates the flags and opens the store; release frees it.
func (s *storeFlags) open(ctx context.Context) (store objstore.Store, where string, release func(), err error) {
	switch s.kind {
	case "local":
		fi, err := os.Stat(s.localDir)
		if err != nil || !fi.IsDir() {
			return nil, "", nil, withCode(exitNotFound, fmt.Errorf("--local-dir %q is not a folder; point it at the object store's folder (<data-dir>/objects for streamhouse dev)", s.localDir))
		}
		l, err := objstore.NewLocal(s.localDir)
		if err != nil {
			return nil, "", nil, withCode(exitError, err)
		}
		return l, "local folder " + s.localDir, func() {}, nil
	case "s3":
		firstEnv := func(dst *string, names ...string) {
			for _, n := range names {
				if *dst == "" {
					*dst = os.Getenv(n)
				}
			}
		}
		firstEnv(&s.s3.Endpoint, "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
		firstEnv(&s.s3.Region, "AWS_REGION", "AWS_DEFAULT_REGION")
		firstEnv(&s.s3.AccessKey, "AWS_ACCESS_KEY_ID")
		firstEnv(&s.s3.SecretKey, "AWS_SECRET_ACCESS_KEY")
		if s.s3.Region == "" {
			s.s3.Region = "us-east-1"
		}
		var missing []string
		if s.s3.Endpoint == "" {
			missing = append(missing, "--s3-endpoint")
		}
		if s.s3.Bucket == "" {
			missing = append(missing, "--s3-bucket")
		}
		if len(missing) > 0 {
			return nil, "", nil, usagef("--object-store s3 needs %s", strings.Join(missing, " and "))
		}
		s3, err := objstore.NewS3(ctx, s.s3)
		if err != nil {
			if reason, ok := unreachable(err); ok {
				return nil, "", nil, withCode(exitUnreachable, fmt.Errorf("cannot reach S3 at %s: %s", s.s3.Endpoint, reason))
			}
			return nil, "", nil, withCode(exitError, fmt.Errorf("open S3 bucket %q at %s: %v", s.s3.Bucket, s.s3.Endpoint, err))
		}
		return s3, "bucket " + s.s3.Bucket + " at " + s.s3.Endpoint, func() { _ = s3.Close() }, nil
	default:
		return nil, "", nil, usagef("--object-store %q: use local or s3", s.kind)
	}
}

// objectResult is the outcome of verifying one object.
type objectResult struct {
	Key      string `json:"key"`
	Size     int64  `json:"size"`
	Status   string `json:"status"` // OK, CORRUPT, GONE or ERROR
	Sections int    `json:"sections,omitempty"`
	Records  int64  `json:"records,omitempty"`
	Error    string `json:"error,omitempty"`
}

func newObjectsVerifyCommand() *cobra.Command {
	var sf storeFlags
	c := &cobra.Command{
		Use:   "verify [--object-store local|s3] [--local-dir D | --s3-...] [--prefix P]",
		Short: "Read every object from the object store and check every CRC",
		Long: `Read every object (keys ending in .obj) straight from the object store, whole,
and check it: the trailer and the footer's CRC, every section's CRC-32C, and
every record batch inside (length, magic, CRC-32C, contiguous offsets, record
counts and timestamps matching the footer). It needs no running cluster.

It prints OK or CORRUPT (with the reason) per object and a summary, and exits
1 if any object is corrupt or could not be read. An object deleted while the
check runs (retention, compaction) is reported GONE and is not an error.

S3 credentials come from --s3-access-key/--s3-secret-key, STREAMHOUSE_S3_*
or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY.`,
		Example: `  shctl objects verify --local-dir /var/lib/streamhouse/objects
  AWS_ACCESS_KEY_ID=... AWS_SECRET_ACCESS_KEY=... shctl objects verify --object-store s3 \
      --s3-endpoint https://s3.eu-west-1.amazonaws.com --s3-bucket my-bucket --prefix streamhouse/`,
		Args: exactArgs(),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			store, where, release, err := sf.open(ctx)
			if err != nil {
				return err
			}
			defer release()
			return verifyObjects(ctx, cmd.OutOrStdout(), store, where, sf.prefix)
		},
	}
	sf.add(c)
	return c
}

func verifyObjects(ctx context.Context, w io.Writer, store objstore.Store, where, prefix string) error {
	lctx, cancel := context.WithTimeout(ctx, max(global.timeout, 60e9))
	infos, err := store.List(lctx, prefix)
	cancel()
	if err != nil {
		if reason, ok := unreachable(err); ok {
			return withCode(exitUnreachable, fmt.Errorf("cannot reach the object store (%s): %s", where, reason))
		}
		return withCode(exitError, fmt.Errorf("list objects in %s: %v", where, err))
	}
	var results []objectResult
	var ok, corrupt, gone, failed int
	t := newTable(w, "STATUS", "KEY", "SIZE", "SECTIONS", "DETAIL")
	for _, info := range infos {
		if !strings.HasSuffix(info.Key, ".obj") {
			continue
		}
		if ctx.Err() != nil {
			return withCode(exitInterrupted, errors.New("interrupted"))
		}
		res := objectResult{Key: info.Key, Size: info.Size}
		gctx, cancel := context.WithTimeout(ctx, max(global.timeout, 60e9))
		data, err := store.Get(gctx, info.Key, 0, -1)
		cancel()
		switch {
		case errors.Is(err, objstore.ErrNotFound):
			res.Status = "GONE"
			res.Error = "deleted since the listing"
			gone++
		case err != nil:
			res.Status = "ERROR"
			res.Error = oneLine(err.Error())
			failed++
		default:
			sections, verr := objfile.Verify(data)
			if verr != nil {
				res.Status = "CORRUPT"
				res.Error = oneLine(verr.Error())
				corrupt++
			} else {
				res.Status = "OK"
				res.Sections = len(sections)
				for _, s := range sections {
					res.Records += s.RecordCount
				}
				ok++
			}
		}
		results = append(results, res)
		if !jsonOutput() {
			detail := res.Error
			if res.Status == "OK" {
				detail = fmt.Sprintf("%d records", res.Records)
			}
			t.row(res.Status, res.Key, bytesString(res.Size), res.Sections, detail)
		}
	}
	total := len(results)
	if jsonOutput() {
		if results == nil {
			results = []objectResult{}
		}
		if err := printJSON(w, map[string]any{"objects": results, "checked": total, "ok": ok, "corrupt": corrupt, "gone": gone, "errors": failed}); err != nil {
			return err
		}
	} else {
		if total > 0 {
			if err := t.flush(); err != nil {
				return err
			}
		}
		fmt.Fprintf(w, "checked %d objects in %s: %d ok, %d corrupt, %d gone, %d unreadable\n", total, where, ok, corrupt, gone, failed)
	}
	switch {
	case corrupt > 0:
		return withCode(exitError, fmt.Errorf("%d of %d objects are corrupt", corrupt, total))
	case failed > 0:
		return withCode(exitError, fmt.Errorf("%d of %d objects could not be read", failed, total))
	}
	return nil
}
