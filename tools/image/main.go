// Command image builds StreamHouse's container image without a Docker
// engine: it cross-compiles streamhouse and shctl as static binaries
// (CGO_ENABLED=0, -trimpath, the version stamped with -ldflags) and puts them
// on an empty base with go-containerregistry, as a tarball that `docker load`,
// `podman load`, `kind load image-archive`, `ctr images import` and
// `crane push` accept, and optionally as an OCI image layout.
//
//	go tool task image      # bin/streamhouse-image.tar
//	cd tools/image && GOWORK=off go run . --help
//
// The image is ghcr.io/streamhouse/streamhouse:<appVersion of
// charts/streamhouse/Chart.yaml>, which is the chart's default image. It runs
// as user 65532 with /usr/local/bin/streamhouse as entrypoint; see image.go
// for the file system conventions the chart relies on.
package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// DefaultRepository is the image name the chart's values.yaml points at.
const DefaultRepository = "ghcr.io/streamhouse/streamhouse"

type options struct {
	root      string
	out       string
	ociLayout string
	repo      string
	version   string
	revision  string
	arch      string
	caBundle  string
	licenses  string
	source    string
}

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "image:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	var o options
	fs := flag.NewFlagSet("image", flag.ContinueOnError)
	fs.StringVar(&o.root, "root", "", "repository root (default: the nearest parent folder holding go.work)")
	fs.StringVar(&o.out, "out", "bin/streamhouse-image.tar", "image tarball to write (a relative path is under --root)")
	fs.StringVar(&o.ociLayout, "oci-layout", "", "also write an OCI image layout into this folder (a relative path is under --root)")
	fs.StringVar(&o.repo, "repository", DefaultRepository, "image repository recorded in the tarball")
	fs.StringVar(&o.version, "version", "", "version: tag, label and `streamhouse --version` (default the appVersion of charts/streamhouse/Chart.yaml)")
	fs.StringVar(&o.revision, "revision", "", "source revision label (default `git rev-parse HEAD`, empty outside a git checkout)")
	fs.StringVar(&o.arch, "arch", "amd64", "GOARCH to build for (the OS is linux)")
	fs.StringVar(&o.caBundle, "ca-bundle", "/etc/ssl/certs/ca-certificates.crt", "PEM CA bundle to install (S3 over HTTPS needs one); empty for none")
	fs.StringVar(&o.licenses, "licenses", "", "SPDX license expression for the licenses label (none recorded by default: the repository has no LICENSE file yet)")
	fs.StringVar(&o.source, "source", "https://github.com/streamhouse/streamhouse", "source repository label")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	start := time.Now()

	root, err := repoRoot(o.root)
	if err != nil {
		return err
	}
	if o.version == "" {
		if o.version, err = ChartAppVersion(filepath.Join(root, "charts/streamhouse/Chart.yaml")); err != nil {
			return err
		}
	}
	ref, err := name.NewTag(o.repo + ":" + o.version)
	if err != nil {
		return fmt.Errorf("image reference %s:%s: %w", o.repo, o.version, err)
	}
	if o.revision == "" {
		o.revision = git(root, "rev-parse", "HEAD")
	}
	created := sourceDate(root)

	tmp, err := os.MkdirTemp("", "streamhouse-image-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	bins := map[string][]byte{}
	for bin, pkg := range map[string]string{
		"streamhouse": "./cmd/streamhouse",
		"shctl":       "./controller/cmd/shctl",
	} {
		out := filepath.Join(tmp, bin)
		if err := goBuild(root, pkg, out, o.arch, o.version); err != nil {
			return err
		}
		if bins[bin], err = os.ReadFile(out); err != nil {
			return err
		}
	}
	ca, err := readOptional(o.caBundle)
	if err != nil {
		return fmt.Errorf("CA bundle (--ca-bundle, empty for none): %w", err)
	}
	img, err := Build(Spec{
		Binaries: bins, CABundle: ca, Version: o.version, Revision: o.revision,
		Source: o.source, Licenses: o.licenses, Created: created, Arch: o.arch,
	})
	if err != nil {
		return err
	}

	out := underRoot(root, o.out)
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return err
	}
	// Write next to the target and rename, so a failed build never leaves a
	// truncated tarball that looks current.
	part := out + ".part"
	if err := tarball.WriteToFile(part, ref, img); err != nil {
		os.Remove(part)
		return fmt.Errorf("write %s: %w", out, err)
	}
	if err := os.Rename(part, out); err != nil {
		return err
	}
	if o.ociLayout != "" {
		dir := underRoot(root, o.ociLayout)
		if err := os.RemoveAll(dir); err != nil {
			return err
		}
		p, err := layout.Write(dir, empty.Index)
		if err != nil {
			return fmt.Errorf("write OCI layout %s: %w", dir, err)
		}
		if err := p.AppendImage(img, layout.WithAnnotations(map[string]string{
			"org.opencontainers.image.ref.name": o.version,
		})); err != nil {
			return fmt.Errorf("write OCI layout %s: %w", dir, err)
		}
	}
	digest, err := img.Digest()
	if err != nil {
		return err
	}
	st, err := os.Stat(out)
	if err != nil {
		return err
	}
	log.Info("image written", "file", out, "image", ref.String(), "digest", digest.String(),
		"size_mib", fmt.Sprintf("%.1f", float64(st.Size())/(1<<20)), "arch", o.arch,
		"revision", o.revision, "took", time.Since(start).Round(time.Millisecond))
	fmt.Printf("%s %s@%s\n", out, ref.String(), digest)
	return nil
}

// goBuild cross-compiles pkg (relative to root) into out as a static linux
// binary with version stamped into main.version.
func goBuild(root, pkg, out, arch, version string) error {
	cmd := exec.Command("go", "build", "-trimpath",
		"-ldflags", "-s -w -X main.version="+version, "-o", out, pkg)
	cmd.Dir = root
	// This tool runs with GOWORK=off (its own module); the binaries build
	// in the repository's workspace.
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+arch,
		"GOWORK="+filepath.Join(root, "go.work"))
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %w\n%s", pkg, err, b)
	}
	return nil
}

// underRoot resolves a relative path against the repository root.
func underRoot(root, p string) string {
	if filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(root, p)
}

// repoRoot returns dir, or the nearest parent of the working directory
// that holds go.work.
func repoRoot(dir string) (string, error) {
	if dir != "" {
		return filepath.Abs(dir)
	}
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for d := wd; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.work")); err == nil {
			return d, nil
		}
		if filepath.Dir(d) == d {
			return "", fmt.Errorf("no go.work above %s: give --root", wd)
		}
	}
}

// ChartAppVersion reads appVersion from a Chart.yaml: the image's version
// and tag follow the chart so the chart's default image is this one.
func ChartAppVersion(chartYAML string) (string, error) {
	f, err := os.Open(chartYAML)
	if err != nil {
		return "", fmt.Errorf("read the chart's appVersion: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "appVersion:"); ok {
			v = strings.Trim(strings.TrimSpace(v), `"'`)
			if v == "" {
				break
			}
			return v, nil
		}
	}
	if err := sc.Err(); err != nil {
		return "", err
	}
	return "", errors.New(chartYAML + " has no appVersion")
}

// sourceDate is the image's creation time: $SOURCE_DATE_EPOCH, else the
// commit time of HEAD, else the Unix epoch; never the wall clock, so
// rebuilding the same source gives the same digest.
func sourceDate(root string) time.Time {
	for _, s := range []string{os.Getenv("SOURCE_DATE_EPOCH"), git(root, "log", "-1", "--format=%ct")} {
		if sec, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64); err == nil {
			return time.Unix(sec, 0).UTC()
		}
	}
	return time.Unix(0, 0).UTC()
}

// git runs git in root and returns its trimmed output, or "" if it fails
// (a source tarball without .git still builds).
func git(root string, args ...string) string {
	cmd := exec.Command("git", args...)
	cmd.Dir = root
	b, err := cmd.Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}
