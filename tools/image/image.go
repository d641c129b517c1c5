package main

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"os"
	"path"
	"sort"
	"strconv"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// The image's conventions, shared with charts/streamhouse: the chart runs
// every container as UID/GID 65532 with a read-only root filesystem and mounts
// a volume at DataDir (and an emptyDir at /tmp).
const (
	// UID and GID of the "nonroot" user the image runs as.
	UID = 65532
	GID = 65532
	// BinDir holds streamhouse (the entrypoint) and shctl.
	BinDir = "/usr/local/bin"
	// DataDir is the working directory and where the chart mounts the
	// persistent volume; owned by UID so a plain `docker run` can write too.
	DataDir = "/var/lib/streamhouse"
	// CABundle is where the CA certificates go (S3 over HTTPS needs them:
	// the base is empty).
	CABundle = "/etc/ssl/certs/ca-certificates.crt"
)

// Spec is everything that goes into the image. Build is a pure function of
// it: the same Spec gives the same image digest.
type Spec struct {
	// Binaries maps a name in BinDir to the file's bytes; "streamhouse" is
	// the entrypoint and must be present.
	Binaries map[string][]byte
	// CABundle is the PEM certificate bundle to install at CABundle, if any.
	CABundle []byte
	// Version, Revision and Source go into the OCI labels; Version is also
	// the image tag.
	Version  string
	Revision string
	Source   string
	// Licenses is an SPDX expression; empty leaves the label out.
	Licenses string
	// Created stamps the config and every file (reproducible builds use the
	// commit time, as SOURCE_DATE_EPOCH does).
	Created time.Time
	// Arch is the GOARCH the binaries were built for (the OS is linux).
	Arch string
}

// Build assembles the image: one layer on an empty base holding the
// binaries, the CA bundle, /etc/passwd and /etc/group naming the nonroot
// user, /tmp and the data directory; OCI media types throughout.
func Build(s Spec) (v1.Image, error) {
	if len(s.Binaries["streamhouse"]) == 0 {
		return nil, fmt.Errorf("image: the streamhouse binary is missing")
	}
	if s.Version == "" || s.Arch == "" {
		return nil, fmt.Errorf("image: Version and Arch are required")
	}
	layerTar, err := rootfs(s)
	if err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, fmt.Errorf("image: make layer: %w", err)
	}
	base := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	base = mutate.ConfigMediaType(base, types.OCIConfigJSON)
	img, err := mutate.Append(base, mutate.Addendum{
		Layer:     layer,
		MediaType: types.OCILayer,
		History: v1.History{
			Created:   v1.Time{Time: s.Created},
			CreatedBy: "tools/image: streamhouse and shctl (CGO_ENABLED=0 -trimpath) on an empty base",
		},
	})
	if err != nil {
		return nil, fmt.Errorf("image: append layer: %w", err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("image: read config: %w", err)
	}
	cf = cf.DeepCopy()
	cf.OS = "linux"
	cf.Architecture = s.Arch
	cf.Created = v1.Time{Time: s.Created}
	cf.Config = v1.Config{
		User:       fmt.Sprintf("%d:%d", UID, GID),
		Entrypoint: []string{path.Join(BinDir, "streamhouse")},
		// Without arguments the binary explains itself; the chart always
		// passes the subcommand (controller, agent, gateway).
		Cmd:        []string{"--help"},
		WorkingDir: DataDir,
		Env: []string{
			"PATH=" + BinDir,
			"SSL_CERT_FILE=" + CABundle,
		},
		ExposedPorts: map[string]struct{}{
			"8080/tcp": {}, // gateway
			"7000/tcp": {}, // controller Raft
			"7001/tcp": {}, // controller API
			"7101/tcp": {}, // agent API
			"7946/tcp": {}, // gossip
			"7946/udp": {},
		},
		Labels: Labels(s),
	}
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		return nil, fmt.Errorf("image: set config: %w", err)
	}
	return img, nil
}

// Labels are the OCI annotation keys set on the image config
// (https://github.com/opencontainers/image-spec/blob/main/annotations.md).
func Labels(s Spec) map[string]string {
	l := map[string]string{
		"org.opencontainers.image.title":       "streamhouse",
		"org.opencontainers.image.description": "StreamHouse: Kafka's model with the log in object storage (controller, agent, gateway and shctl)",
		"org.opencontainers.image.source":      s.Source,
		"org.opencontainers.image.url":         s.Source,
		"org.opencontainers.image.version":     s.Version,
		"org.opencontainers.image.revision":    s.Revision,
		"org.opencontainers.image.created":     s.Created.UTC().Format(time.RFC3339),
	}
	if s.Licenses != "" {
		l["org.opencontainers.image.licenses"] = s.Licenses
	}
	for k, v := range l {
		if v == "" {
			delete(l, k)
		}
	}
	return l
}

// rootfs writes the layer's tar: directories first, in sorted order, with
// fixed owners, modes and times so the digest depends only on the Spec.
func rootfs(s Spec) ([]byte, error) {
	type entry struct {
		name string
		mode int64
		uid  int
		gid  int
		data []byte
		dir  bool
	}
	entries := []entry{
		{name: "etc/", mode: 0o755, dir: true},
		{name: "etc/ssl/", mode: 0o755, dir: true},
		{name: "etc/ssl/certs/", mode: 0o755, dir: true},
		{name: "tmp/", mode: 0o1777, dir: true},
		{name: "usr/", mode: 0o755, dir: true},
		{name: "usr/local/", mode: 0o755, dir: true},
		{name: "usr/local/bin/", mode: 0o755, dir: true},
		{name: "var/", mode: 0o755, dir: true},
		{name: "var/lib/", mode: 0o755, dir: true},
		{name: DataDir[1:] + "/", mode: 0o755, uid: UID, gid: GID, dir: true},
		{name: "etc/passwd", mode: 0o644, data: []byte(
			"root:x:0:0:root:/root:/sbin/nologin\n" +
				"nonroot:x:" + strconv.Itoa(UID) + ":" + strconv.Itoa(GID) + ":nonroot:" + DataDir + ":/sbin/nologin\n")},
		{name: "etc/group", mode: 0o644, data: []byte("root:x:0:\nnonroot:x:" + strconv.Itoa(GID) + ":\n")},
	}
	if len(s.CABundle) > 0 {
		entries = append(entries, entry{name: CABundle[1:], mode: 0o644, data: s.CABundle})
	}
	names := make([]string, 0, len(s.Binaries))
	for n := range s.Binaries {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		entries = append(entries, entry{name: path.Join(BinDir, n)[1:], mode: 0o755, data: s.Binaries[n]})
	}

	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := &tar.Header{
			Name: e.name, Mode: e.mode, Uid: e.uid, Gid: e.gid,
			ModTime: s.Created, Format: tar.FormatPAX,
		}
		if e.uid == UID {
			h.Uname, h.Gname = "nonroot", "nonroot"
		} else {
			h.Uname, h.Gname = "root", "root"
		}
		if e.dir {
			h.Typeflag = tar.TypeDir
		} else {
			h.Typeflag = tar.TypeReg
			h.Size = int64(len(e.data))
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, fmt.Errorf("image: tar %s: %w", e.name, err)
		}
		if _, err := tw.Write(e.data); err != nil {
			return nil, fmt.Errorf("image: tar %s: %w", e.name, err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("image: close tar: %w", err)
	}
	return buf.Bytes(), nil
}

// readOptional returns the file's bytes, or nil when name is empty.
func readOptional(name string) ([]byte, error) {
	if name == "" {
		return nil, nil
	}
	b, err := os.ReadFile(name)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	return b, nil
}
