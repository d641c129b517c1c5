package objstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/streamhouse/streamhouse/pkg/fsutil"
)

// localTmpDir is the directory, directly under a Local store's root, that
// holds objects being written. It is never listed, and keys whose first
// segment is this name are rejected.
const localTmpDir = ".objstore-tmp"

// staleTmpAge is how old a leftover temporary file (from a process that died
// mid-write) must be before NewLocal removes it. Generous, so that a second
// Local on the same directory never removes a write still in flight.
const staleTmpAge = time.Hour

// Local is a Store kept in a directory of the local file system: key "a/b/c"
// is the file <dir>/a/b/c.
//
// Writes are atomic and durable: PutIfAbsent writes a temporary file under
// <dir>/.objstore-tmp, fsyncs it, hard-links it into place (link(2) fails if
// the name exists, which gives put-if-absent without a lock, also across
// processes sharing the directory), and fsyncs the directory. The file system
// must support hard links and both paths must be on it.
//
// One limitation that S3 does not have: a key cannot be both an object and a
// prefix of another object's key followed by '/' ("a" and "a/b"), since "a"
// cannot be both a file and a directory. Such a PutIfAbsent fails with an
// error that does not wrap ErrExists. StreamHouse's key layout never does this.
type Local struct {
	root string // absolute, cleaned
	tmp  string // root/localTmpDir
}

var _ Store = (*Local)(nil)

// NewLocal opens (creating it if needed) a Local store in dir. Temporary files
// older than an hour, left by a process that died mid-write, are removed.
func NewLocal(dir string) (*Local, error) {
	root, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("open local store %s: %w", dir, err)
	}
	l := &Local{root: root, tmp: filepath.Join(root, localTmpDir)}
	if err := os.MkdirAll(l.tmp, 0o755); err != nil {
		return nil, fmt.Errorf("open local store %s: %w", dir, err)
	}
	entries, err := os.ReadDir(l.tmp)
	if err != nil {
		return nil, fmt.Errorf("open local store %s: %w", dir, err)
	}
	for _, e := range entries {
		if info, err := e.Info(); err == nil && time.Since(info.ModTime()) > staleTmpAge {
			_ = os.Remove(filepath.Join(l.tmp, e.Name()))
		}
	}
	return l, nil
}

// Dir returns the absolute path of the store's root directory.
func (l *Local) Dir() string { return l.root }

func (l *Local) path(key string) (string, error) {
	if err := ValidateKey(key); err != nil {
		return "", err
	}
	if key == localTmpDir || strings.HasPrefix(key, localTmpDir+"/") {
		return "", fmt.Errorf("%w %q: %s is reserved by the local store", ErrInvalidKey, key, localTmpDir)
	}
	return filepath.Join(l.root, filepath.FromSlash(key)), nil
}

// PutIfAbsent implements Store.PutIfAbsent; see Local for how.
func (l *Local) PutIfAbsent(ctx context.Context, key string, data []byte) error {
	if err := l.putIfAbsent(ctx, key, data); err != nil {
		return fmt.Errorf("put %s: %w", key, err)
	}
	return nil
}

func (l *Local) putIfAbsent(ctx context.Context, key string, data []byte) error {
	target, err := l.path(key)
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	// Cheap early answer; the link below is what decides.
	if _, err := os.Lstat(target); err == nil {
		return l.existsError(target)
	}

	tmp, err := os.CreateTemp(l.tmp, "put-*")
	if err != nil {
		return err
	}
	tmpName := tmp.Name()
	defer os.Remove(tmpName) // after the link, only the extra name goes
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}

	parent := filepath.Dir(target)
	// A concurrent Delete may prune an (empty) parent directory between our
	// mkdir calls or between mkdir and link; either then fails with ENOENT
	// and we start over. Each round is a few syscalls, and a Delete only
	// prunes directories that are empty, so this ends quickly.
	for attempt := 0; ; attempt++ {
		err := l.mkdirs(parent)
		if err == nil {
			err = os.Link(tmpName, target)
		}
		if err == nil {
			break
		}
		if errors.Is(err, fs.ErrExist) {
			return l.existsError(target)
		}
		if errors.Is(err, fs.ErrNotExist) && attempt < 100 {
			continue
		}
		return err
	}
	return fsutil.SyncDir(parent)
}

// existsError explains why target cannot be created.
func (l *Local) existsError(target string) error {
	if fi, err := os.Lstat(target); err == nil && fi.IsDir() {
		return errors.New("key is a directory of other keys in the local store (a key cannot be both an object and a prefix of keys followed by '/')")
	}
	return ErrExists
}

// mkdirs creates dir (inside l.root) and its missing parents, fsyncing the
// parent of each directory it creates so the new entries are durable.
func (l *Local) mkdirs(dir string) error {
	if fi, err := os.Stat(dir); err == nil && fi.IsDir() {
		return nil
	}
	rel, err := filepath.Rel(l.root, dir)
	if err != nil {
		return err
	}
	cur := l.root
	for seg := range strings.SplitSeq(rel, string(filepath.Separator)) {
		if seg == "." {
			continue
		}
		next := filepath.Join(cur, seg)
		err := os.Mkdir(next, 0o755)
		switch {
		case err == nil:
			if err := fsutil.SyncDir(cur); err != nil {
				return err
			}
		case errors.Is(err, fs.ErrExist):
			// Exists (as a directory, or as a file: then the next step or the
			// link fails with ENOTDIR, which is the right answer).
		default:
			return err
		}
		cur = next
	}
	return nil
}

// Get implements Store.Get.
func (l *Local) Get(ctx context.Context, key string, offset, length int64) ([]byte, error) {
	b, err := l.get(ctx, key, offset, length)
	if err != nil {
		return nil, fmt.Errorf("get %s: %w", key, err)
	}
	return b, nil
}

func (l *Local) get(ctx context.Context, key string, offset, length int64) ([]byte, error) {
	p, err := l.path(key)
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	f, err := os.Open(p)
	if err != nil {
		return nil, notFound(err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, ErrNotFound
	}
	start, end, err := checkRange(fi.Size(), offset, length)
	if err != nil {
		return nil, err
	}
	buf := make([]byte, end-start)
	n, err := f.ReadAt(buf, start)
	if err != nil && !(errors.Is(err, io.EOF) && int64(n) == end-start) {
		return nil, err
	}
	return buf, nil
}

// notFound maps "no such file" (also when a parent of the key is a file) to
// ErrNotFound.
func notFound(err error) error {
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
		return ErrNotFound
	}
	return err
}

// Head implements Store.Head.
func (l *Local) Head(ctx context.Context, key string) (Info, error) {
	p, err := l.path(key)
	if err == nil {
		err = ctx.Err()
	}
	if err != nil {
		return Info{}, fmt.Errorf("head %s: %w", key, err)
	}
	fi, err := os.Lstat(p)
	if err != nil {
		return Info{}, fmt.Errorf("head %s: %w", key, notFound(err))
	}
	if !fi.Mode().IsRegular() {
		return Info{}, fmt.Errorf("head %s: %w", key, ErrNotFound)
	}
	return Info{Key: key, Size: fi.Size(), ModTime: fi.ModTime()}, nil
}

// List implements Store.List. It walks only the directory that holds every
// key with the prefix, skipping subdirectories that cannot match.
func (l *Local) List(ctx context.Context, prefix string) ([]Info, error) {
	out, err := l.list(ctx, prefix)
	if err != nil {
		return nil, fmt.Errorf("list %q: %w", prefix, err)
	}
	return out, nil
}

func (l *Local) list(ctx context.Context, prefix string) ([]Info, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	base := ""
	if i := strings.LastIndexByte(prefix, '/'); i >= 0 {
		base = prefix[:i]
		if ValidateKey(base) != nil {
			return nil, nil // no valid key starts with this prefix
		}
	}
	walkRoot := filepath.Join(l.root, filepath.FromSlash(base))
	var out []Info
	n := 0
	err := filepath.WalkDir(walkRoot, func(p string, d fs.DirEntry, err error) error {
		if n++; n%256 == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
				return nil // deleted under our feet, or prefix names a file
			}
			return err
		}
		rel, err := filepath.Rel(l.root, p)
		if err != nil {
			return err
		}
		key := filepath.ToSlash(rel)
		if d.IsDir() {
			if p == walkRoot {
				return nil
			}
			if key == localTmpDir {
				return filepath.SkipDir
			}
			dirPrefix := key + "/"
			if !strings.HasPrefix(dirPrefix, prefix) && !strings.HasPrefix(prefix, dirPrefix) {
				return filepath.SkipDir
			}
			return nil
		}
		if !d.Type().IsRegular() || !strings.HasPrefix(key, prefix) {
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		out = append(out, Info{Key: key, Size: fi.Size(), ModTime: fi.ModTime()})
		return nil
	})
	if err != nil {
		return nil, err
	}
	// WalkDir's per-directory order is not byte order of whole keys
	// ("a/b" is walked before "a-c", but '-' < '/').
	slices.SortFunc(out, func(a, b Info) int { return strings.Compare(a.Key, b.Key) })
	return out, nil
}

// Delete implements Store.Delete. Directories left empty are removed, so a
// deleted prefix can later become a key.
func (l *Local) Delete(ctx context.Context, key string) error {
	p, err := l.path(key)
	if err == nil {
		err = ctx.Err()
	}
	if err != nil {
		return fmt.Errorf("delete %s: %w", key, err)
	}
	fi, err := os.Lstat(p)
	if err != nil {
		if notFound(err) == ErrNotFound {
			return nil
		}
		return fmt.Errorf("delete %s: %w", key, err)
	}
	if fi.IsDir() {
		return nil // not an object
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("delete %s: %w", key, err)
	}
	// Prune empty parents; Remove fails on a non-empty directory, which ends it.
	for dir := filepath.Dir(p); dir != l.root && strings.HasPrefix(dir, l.root); dir = filepath.Dir(dir) {
		if os.Remove(dir) != nil {
			break
		}
	}
	return nil
}
