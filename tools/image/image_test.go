package main

import (
	"archive/tar"
	"bytes"
	"debug/elf"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// imageTar is the tarball `go tool task image` wrote; the test task builds
// it before running these tests, so a missing file is a failure.
func imageTar(t *testing.T) string {
	t.Helper()
	p := os.Getenv("STREAMHOUSE_IMAGE_TAR")
	if p == "" {
		p = filepath.Join("..", "..", "bin", "streamhouse-image.tar")
	}
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("image tarball: %v (build it with: go tool task image)", err)
	}
	return p
}

// TestBuiltImage loads the image the image task wrote, as a container
// runtime would, and checks its tag, config, files and that its binaries
// run.
func TestBuiltImage(t *testing.T) {
	p := imageTar(t)
	version, err := ChartAppVersion(filepath.Join("..", "..", "charts", "streamhouse", "Chart.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	wantRef := DefaultRepository + ":" + version

	// The tarball's manifest names the tag the chart's default image uses.
	m, err := tarball.LoadManifest(func() (io.ReadCloser, error) { return os.Open(p) })
	if err != nil {
		t.Fatal(err)
	}
	if len(m) != 1 || len(m[0].RepoTags) != 1 || m[0].RepoTags[0] != wantRef {
		t.Fatalf("tarball tags = %+v, want exactly [%s] (the chart's default image)", m, wantRef)
	}
	tag, err := name.NewTag(wantRef)
	if err != nil {
		t.Fatal(err)
	}
	img, err := tarball.ImageFromPath(p, &tag)
	if err != nil {
		t.Fatal(err)
	}

	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	c := cf.Config
	if c.User != "65532:65532" {
		t.Errorf("user = %q, want 65532:65532 (the chart's runAsUser/runAsGroup)", c.User)
	}
	if strings.Join(c.Entrypoint, " ") != "/usr/local/bin/streamhouse" {
		t.Errorf("entrypoint = %q, want [/usr/local/bin/streamhouse]", c.Entrypoint)
	}
	if c.WorkingDir != DataDir {
		t.Errorf("working dir = %q, want %s", c.WorkingDir, DataDir)
	}
	if cf.OS != "linux" || cf.Architecture == "" {
		t.Errorf("platform = %s/%s", cf.OS, cf.Architecture)
	}
	for _, port := range []string{"8080/tcp", "7000/tcp", "7001/tcp", "7101/tcp", "7946/tcp", "7946/udp"} {
		if _, ok := c.ExposedPorts[port]; !ok {
			t.Errorf("port %s not exposed: %v", port, c.ExposedPorts)
		}
	}
	labels := map[string]*regexp.Regexp{
		"org.opencontainers.image.source":   regexp.MustCompile(`^https://github\.com/streamhouse/streamhouse$`),
		"org.opencontainers.image.version":  regexp.MustCompile("^" + regexp.QuoteMeta(version) + "$"),
		"org.opencontainers.image.revision": regexp.MustCompile(`^[0-9a-f]{40}$`),
		"org.opencontainers.image.title":    regexp.MustCompile(`^streamhouse$`),
		"org.opencontainers.image.created":  regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$`),
	}
	for k, re := range labels {
		if v := c.Labels[k]; !re.MatchString(v) {
			t.Errorf("label %s = %q, want match %s", k, v, re)
		}
	}

	files := extract(t, img)
	for _, want := range []struct {
		name     string
		mode     int64
		uid      int
		isDir    bool
		contains string
	}{
		{name: "usr/local/bin/streamhouse", mode: 0o755},
		{name: "usr/local/bin/shctl", mode: 0o755},
		{name: "var/lib/streamhouse", mode: 0o755, uid: UID, isDir: true},
		{name: "tmp", mode: 0o1777, isDir: true},
		{name: "etc/passwd", mode: 0o644, contains: "nonroot:x:65532:65532:"},
		{name: "etc/group", mode: 0o644, contains: "nonroot:x:65532:"},
		{name: "etc/ssl/certs/ca-certificates.crt", mode: 0o644, contains: "-----BEGIN CERTIFICATE-----"},
	} {
		f, ok := files[want.name]
		if !ok {
			t.Errorf("%s is not in the image", want.name)
			continue
		}
		if f.hdr.Mode != want.mode || f.hdr.Uid != want.uid || (f.hdr.Typeflag == tar.TypeDir) != want.isDir {
			t.Errorf("%s: mode %o uid %d type %c, want mode %o uid %d dir %v", want.name, f.hdr.Mode, f.hdr.Uid, f.hdr.Typeflag, want.mode, want.uid, want.isDir)
		}
		if want.contains != "" && !bytes.Contains(f.data, []byte(want.contains)) {
			t.Errorf("%s does not contain %q", want.name, want.contains)
		}
	}

	// The binaries are static (no ELF interpreter: the base has no libc)
	// and run: --version prints the image's version.
	dir := t.TempDir()
	for _, bin := range []string{"streamhouse", "shctl"} {
		f := files["usr/local/bin/"+bin]
		if f == nil {
			continue
		}
		path := filepath.Join(dir, bin)
		if err := os.WriteFile(path, f.data, 0o755); err != nil {
			t.Fatal(err)
		}
		ef, err := elf.Open(path)
		if err != nil {
			t.Fatalf("%s: %v", bin, err)
		}
		for _, p := range ef.Progs {
			if p.Type == elf.PT_INTERP {
				t.Errorf("%s is dynamically linked (has PT_INTERP); the image has no libc", bin)
			}
		}
		ef.Close()
		if cf.Architecture != runtime.GOARCH {
			t.Logf("image is %s, this machine %s: not running %s", cf.Architecture, runtime.GOARCH, bin)
			continue
		}
		out, err := exec.Command(path, "--version").CombinedOutput()
		if err != nil {
			t.Fatalf("%s --version: %v\n%s", bin, err, out)
		}
		if !strings.Contains(string(out), version) {
			t.Errorf("%s --version = %q, want it to name %s", bin, out, version)
		}
		t.Logf("%s --version: %s", bin, strings.TrimSpace(string(out)))
	}
}

// TestBuildReproducible checks Build is a function of its Spec: the same
// inputs give the same digest (so rebuilding a commit gives the same image),
// and a different binary a different one.
func TestBuildReproducible(t *testing.T) {
	spec := func(bin string) Spec {
		return Spec{
			Binaries: map[string][]byte{"streamhouse": []byte(bin), "shctl": []byte("shctl")},
			CABundle: []byte("-----BEGIN CERTIFICATE-----\n"),
			Version:  "1.2.3", Revision: strings.Repeat("a", 40), Source: "https://example.com/x",
			Created: time.Unix(1700000000, 0).UTC(), Arch: "arm64",
		}
	}
	digest := func(s Spec) v1.Hash {
		img, err := Build(s)
		if err != nil {
			t.Fatal(err)
		}
		d, err := img.Digest()
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	// OCI media types (the docker tarball written by the task does not keep
	// the manifest's; an OCI layout does).
	img, err := Build(spec("one"))
	if err != nil {
		t.Fatal(err)
	}
	if mt, err := img.MediaType(); err != nil || mt != types.OCIManifestSchema1 {
		t.Errorf("manifest media type = %q, %v; want %q", mt, err, types.OCIManifestSchema1)
	}
	a, b, c := digest(spec("one")), digest(spec("one")), digest(spec("two"))
	if a != b {
		t.Errorf("same spec, different digests: %s and %s", a, b)
	}
	if a == c {
		t.Errorf("different binaries, same digest %s", a)
	}
	if _, err := Build(Spec{Version: "1", Arch: "amd64"}); err == nil {
		t.Error("Build without the streamhouse binary succeeded")
	}
	if _, ok := Labels(spec("x"))["org.opencontainers.image.licenses"]; ok {
		t.Error("licenses label set though Licenses is empty")
	}
}

type file struct {
	hdr  *tar.Header
	data []byte
}

// extract reads the image's flattened file system.
func extract(t *testing.T, img v1.Image) map[string]*file {
	t.Helper()
	rc := mutate.Extract(img)
	defer rc.Close()
	tr := tar.NewReader(rc)
	files := map[string]*file{}
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		files[strings.TrimSuffix(h.Name, "/")] = &file{hdr: h, data: b}
	}
	return files
}
