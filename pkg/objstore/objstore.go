// Package objstore is StreamHouse's view of an object store: a flat namespace
// of immutable objects addressed by '/'-separated keys.
//
// Two implementations share one contract, checked by the conformance suite in
// package storetest: [Local] keeps objects in a directory (development, tests,
// single-node use) and [S3] talks to any S3-compatible service through minio-go.
//
// # Keys
//
// A key is a non-empty, '/'-separated path without a leading or trailing '/',
// without empty segments ("a//b"), without "." or ".." segments, and without
// NUL bytes. Operations on a key that breaks these rules fail with an error
// wrapping [ErrInvalidKey] and change nothing.
//
// # Objects are immutable
//
// Objects are only ever created with [Store.PutIfAbsent] and removed with
// [Store.Delete]; there is no overwrite. This is what lets readers cache
// objects forever and lets two writers racing for one key find out that they
// raced (exactly one wins).
//
// # Ranges
//
// [Store.Get] reads the byte range [offset, offset+length) of an object with
// these rules, identical on every implementation:
//
//   - offset < 0, or offset > size: error wrapping [ErrRange].
//   - length < 0: everything from offset to the end; empty (not an error)
//     when offset == size.
//   - length >= 0: exactly length bytes, or, when offset+length > size, an
//     error wrapping [ErrRange]. Get never returns a short read: a caller that
//     reads a section described by an index either gets the whole section or
//     learns that the index and the object disagree.
//
// # Errors
//
// Errors wrap the operation and key ("get a/b: ...") and, where they have a
// meaning callers act on, one of the sentinel errors below; test with
// errors.Is. Errors caused by a cancelled or expired context wrap ctx.Err().
package objstore

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Store is an object store. Keys are '/'-separated, no leading '/' (see the
// package documentation for the exact key rules). All methods are safe for
// concurrent use by multiple goroutines.
type Store interface {
	// PutIfAbsent writes the object only if no object has the key, and fails
	// with an error wrapping ErrExists otherwise (leaving the existing object
	// untouched). Of many concurrent PutIfAbsent calls on one key exactly one
	// succeeds. Atomic: readers see all of data or no object at all. When it
	// returns nil the object is durable. It does not keep data after it
	// returns (callers reuse the buffer).
	PutIfAbsent(ctx context.Context, key string, data []byte) error

	// Get returns length bytes starting at offset (length < 0: to the end).
	// A missing object gives an error wrapping ErrNotFound; a range outside
	// the object gives an error wrapping ErrRange (see "Ranges" in the package
	// documentation). The returned slice is owned by the caller.
	Get(ctx context.Context, key string, offset, length int64) ([]byte, error)

	// Head returns the object's metadata, or an error wrapping ErrNotFound.
	Head(ctx context.Context, key string) (Info, error)

	// List returns every object whose key starts with prefix (a plain string
	// prefix, not a directory: "a/b" matches "a/b/c" and "a/bc"), sorted by
	// key in byte order, across all pages. An empty prefix lists everything.
	// Objects created or deleted while List runs may or may not be included.
	List(ctx context.Context, prefix string) ([]Info, error)

	// Delete removes the object. Deleting a missing key is not an error.
	Delete(ctx context.Context, key string) error
}

// Info describes one stored object.
type Info struct {
	// Key is the object's key, as given to PutIfAbsent (without any
	// implementation-specific root such as S3Config.Prefix).
	Key string
	// Size is the object's length in bytes.
	Size int64
	// ModTime is when the object was written, as recorded by the store
	// (second precision on some S3 servers).
	ModTime time.Time
}

var (
	// ErrNotFound means no object has the key.
	ErrNotFound = errors.New("object not found")
	// ErrExists means PutIfAbsent found an object already stored under the key.
	ErrExists = errors.New("object already exists")
	// ErrRange means the requested byte range does not lie within the object.
	ErrRange = errors.New("range not satisfiable")
	// ErrInvalidKey means the key breaks the key rules of the package
	// documentation.
	ErrInvalidKey = errors.New("invalid object key")
)

// ValidateKey reports whether key follows the key rules of the package
// documentation; the error wraps ErrInvalidKey.
func ValidateKey(key string) error {
	if key == "" {
		return fmt.Errorf("%w: empty key", ErrInvalidKey)
	}
	if strings.HasPrefix(key, "/") {
		return fmt.Errorf("%w %q: absolute key", ErrInvalidKey, key)
	}
	if strings.IndexByte(key, 0) >= 0 {
		return fmt.Errorf("%w %q: NUL byte", ErrInvalidKey, key)
	}
	for seg := range strings.SplitSeq(key, "/") {
		switch seg {
		case "":
			return fmt.Errorf("%w %q: empty segment", ErrInvalidKey, key)
		case ".", "..":
			return fmt.Errorf("%w %q: %q segment", ErrInvalidKey, key, seg)
		}
	}
	return nil
}

// checkRange applies the range rules of the package documentation to an
// object of the given size and returns the half-open byte range to read.
func checkRange(size, offset, length int64) (start, end int64, err error) {
	if offset < 0 || offset > size {
		return 0, 0, fmt.Errorf("%w: offset %d, object size %d", ErrRange, offset, size)
	}
	if length < 0 {
		return offset, size, nil
	}
	if length > size-offset {
		return 0, 0, fmt.Errorf("%w: offset %d length %d, object size %d", ErrRange, offset, length, size)
	}
	return offset, offset + length, nil
}
