package wal

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/streamhouse/streamhouse/pkg/fsutil"
)

const (
	segSuffix     = ".wal"
	corruptSuffix = ".corrupt"
	maxIovecs     = 1024 // IOV_MAX on Linux
)

func segName(seq uint64) string { return fmt.Sprintf("%020d%s", seq, segSuffix) }

// parseSegName returns the sequence of a segment (or quarantined segment) file name.
func parseSegName(name string) (seq uint64, corrupt, ok bool) {
	base := name
	if strings.HasSuffix(base, corruptSuffix) {
		base, corrupt = strings.TrimSuffix(base, corruptSuffix), true
	}
	if !strings.HasSuffix(base, segSuffix) {
		return 0, false, false
	}
	digits := strings.TrimSuffix(base, segSuffix)
	if len(digits) != 20 {
		return 0, false, false
	}
	seq, err := strconv.ParseUint(digits, 10, 64)
	if err != nil {
		return 0, false, false
	}
	return seq, corrupt, true
}

// listSegments returns the live segment sequences (ascending) and the highest
// sequence seen, quarantined files included.
func listSegments(dir string) (live []uint64, maxSeq uint64, err error) {
	des, err := os.ReadDir(dir)
	if err != nil {
		return nil, 0, err
	}
	for _, de := range des {
		seq, corrupt, ok := parseSegName(de.Name())
		if !ok || !de.Type().IsRegular() {
			continue
		}
		maxSeq = max(maxSeq, seq)
		if !corrupt {
			live = append(live, seq)
		}
	}
	sort.Slice(live, func(i, j int) bool { return live[i] < live[j] })
	return live, maxSeq, nil
}

// createSegment creates a new, empty segment file, makes its directory entry
// durable, and registers it (unsealed) with the index side.
func (w *WAL) createSegment(seq uint64) (*segWriter, error) {
	path := filepath.Join(w.segDir, segName(seq))
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return nil, fmt.Errorf("create segment: %w", err)
	}
	if !w.opts.NoSync {
		if err := fsutil.SyncDir(w.segDir); err != nil {
			_ = f.Close()
			return nil, fmt.Errorf("fsync segment directory: %w", err)
		}
	}
	rf, err := os.Open(path)
	if err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("open segment for reading: %w", err)
	}
	s := &segment{seq: seq, path: path, rf: rf}
	s.refs.Store(1)
	w.mu.Lock()
	w.segs[seq] = s
	w.mu.Unlock()
	return &segWriter{seq: seq, f: f}, nil
}

// pwritevAll writes iovs at off with pwritev, handling partial writes and
// IOV_MAX. It modifies iovs.
func pwritevAll(f *os.File, iovs [][]byte, off int64) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	for len(iovs) > 0 {
		// Skip empty buffers so that progress is always possible.
		if len(iovs[0]) == 0 {
			iovs = iovs[1:]
			continue
		}
		chunk := iovs[:min(len(iovs), maxIovecs)]
		var n int
		var werr error
		if err := rc.Write(func(fd uintptr) bool {
			n, werr = unix.Pwritev(int(fd), chunk, off)
			return true
		}); err != nil {
			return err
		}
		if werr == unix.EINTR {
			continue
		}
		if werr != nil {
			return fmt.Errorf("pwritev %s: %w", f.Name(), werr)
		}
		if n == 0 {
			return fmt.Errorf("pwritev %s: wrote 0 bytes", f.Name())
		}
		off += int64(n)
		for n > 0 {
			if n >= len(iovs[0]) {
				n -= len(iovs[0])
				iovs = iovs[1:]
			} else {
				iovs[0] = iovs[0][n:]
				n = 0
			}
		}
	}
	return nil
}

func fdatasync(f *os.File) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		for {
			serr = unix.Fdatasync(int(fd))
			if serr != unix.EINTR {
				return
			}
		}
	}); err != nil {
		return err
	}
	return serr
}
