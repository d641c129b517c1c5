package agent

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"sync"

	"connectrpc.com/connect"

	v1 "github.com/streamhouse/streamhouse/api/gen/streamhouse/v1"
	"github.com/streamhouse/streamhouse/pkg/batch"
	"github.com/streamhouse/streamhouse/pkg/objstore"
)

// readRange returns whole batches holding offsets [offset, hw), up to about
// maxBytes (at least one batch), and the offset after the last one. The tail
// comes from the WAL while it still holds it; older data from objects.
func (a *Agent) readRange(ctx context.Context, p *partition, offset, hw int64, maxBytes int) ([]byte, int64, error) {
	var out []byte
	next := offset
	for next < hw && len(out) < maxBytes {
		before := next
		out, next = a.readWAL(p, out, next, hw, maxBytes)
		if next != before {
			continue
		}
		var err error
		out, next, err = a.readObjects(ctx, p, out, next, hw, maxBytes)
		if err != nil {
			if len(out) > 0 {
				break // serve what we have; the next fetch reports the error
			}
			return nil, offset, err
		}
		if next == before {
			break
		}
	}
	return out, next, nil
}

// readWAL appends the WAL's batches from next on; it stops at the first gap
// (data already committed and dropped from the WAL) or read error.
func (a *Agent) readWAL(p *partition, out []byte, next, hw int64, maxBytes int) ([]byte, int64) {
	entries := a.wal.Entries(p.key.topic, p.key.partition, next, maxBytes-len(out))
	for _, e := range entries {
		if e.BaseOffset > next || e.EndOffset > hw {
			break
		}
		data, err := a.wal.Read(e.Pos)
		if err != nil {
			break // deleted after commit (or corrupt): the object path takes over
		}
		out = append(out, data...)
		next = e.EndOffset
		if len(out) >= maxBytes {
			break
		}
	}
	return out, next
}

// readObjects appends batches from committed objects from next on.
func (a *Agent) readObjects(ctx context.Context, p *partition, out []byte, next, hw int64, maxBytes int) ([]byte, int64, error) {
	resp, err := a.cfg.Controller.LookupObjects(ctx, connect.NewRequest(&v1.LookupObjectsRequest{
		Topic: p.key.topic, Partition: p.key.partition, Offset: next, MaxSections: 4,
	}))
	if err != nil {
		return out, next, connect.NewError(connect.CodeUnavailable, fmt.Errorf("partition %s: look up objects at %d: %w", p.key, next, err))
	}
	secs := resp.Msg.GetSections()
	later := 0 // bytes of the sections after the current one
	for _, sec := range secs {
		later += int(sec.GetLength())
	}
	for _, sec := range secs {
		later -= int(sec.GetLength())
		if sec.GetBaseOffset() > next {
			return out, next, connect.NewError(connect.CodeDataLoss, fmt.Errorf("partition %s: the object index has a gap at %d (next section starts at %d)", p.key, next, sec.GetBaseOffset()))
		}
		data, err := a.section(ctx, sec)
		if err != nil {
			return out, next, err
		}
		// The base offset is not covered by a batch's CRC: check that the
		// section's batches tile [base, end) so a flipped bit there is
		// reported, not served as wrong offsets (or as an empty read).
		expect := sec.GetBaseOffset()
		for len(data) > 0 && next < hw && len(out) < maxBytes {
			meta, raw, rest, err := batch.Next(data)
			if err == nil && (meta.BaseOffset != expect || meta.EndOffset() > sec.GetEndOffset()) {
				err = fmt.Errorf("batch at [%d, %d) where the section [%d, %d) has offset %d: %w",
					meta.BaseOffset, meta.EndOffset(), sec.GetBaseOffset(), sec.GetEndOffset(), expect, batch.ErrCorrupt)
			}
			if err != nil {
				a.cache.remove(sectionKey(sec))
				noteObjectCorruption()
				a.log.ErrorContext(ctx, "corrupt batch in object", "object", sec.GetObjectKey(), "partition", p.key.String(), "offset", next, "err", err)
				return out, next, connect.NewError(connect.CodeDataLoss, fmt.Errorf("partition %s: object %s is corrupt near offset %d: %w", p.key, sec.GetObjectKey(), next, err))
			}
			data, expect = rest, meta.EndOffset()
			if meta.EndOffset() <= next {
				continue
			}
			if meta.BaseOffset >= hw {
				break
			}
			out = reserve(out, len(raw), min(maxBytes-len(out), len(data)+later)+len(raw))
			out = append(out, raw...)
			next = meta.EndOffset()
		}
		if next >= hw || len(out) >= maxBytes {
			break
		}
	}
	return out, next, nil
}

// reserve returns out with room for at least n more bytes. When it must
// grow, it makes room for hint bytes (the most the read can still append,
// one batch past maxBytes included) so a 4 MiB read is copied once, not
// re-grown by append from a small slice.
func reserve(out []byte, n, hint int) []byte {
	if cap(out)-len(out) >= n {
		return out
	}
	grown := make([]byte, len(out), len(out)+max(n, hint))
	copy(grown, out)
	return grown
}

func sectionKey(sec *v1.ObjectSection) string {
	return fmt.Sprintf("%s@%d+%d", sec.GetObjectKey(), sec.GetPosition(), sec.GetLength())
}

// section returns a section's bytes, from the cache or by one range GET.
func (a *Agent) section(ctx context.Context, sec *v1.ObjectSection) ([]byte, error) {
	key := sectionKey(sec)
	if b, ok := a.cache.get(key); ok {
		return b, nil
	}
	b, err := a.cfg.Store.Get(ctx, sec.GetObjectKey(), sec.GetPosition(), sec.GetLength())
	if err != nil {
		code := connect.CodeUnavailable
		if errors.Is(err, objstore.ErrNotFound) || errors.Is(err, objstore.ErrRange) {
			code = connect.CodeDataLoss
		}
		return nil, connect.NewError(code, fmt.Errorf("read object %s: %w", sec.GetObjectKey(), err))
	}
	a.cache.put(key, b)
	return b, nil
}

// sectionCache is a byte-bounded LRU of object sections. Objects are
// immutable, so entries never go stale.
type sectionCache struct {
	mu    sync.Mutex
	limit int64
	size  int64
	ll    *list.List
	items map[string]*list.Element
}

type cacheItem struct {
	key  string
	data []byte
}

func newSectionCache(limit int64) *sectionCache {
	return &sectionCache{limit: limit, ll: list.New(), items: map[string]*list.Element{}}
}

func (c *sectionCache) get(key string) ([]byte, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.items[key]; ok {
		c.ll.MoveToFront(e)
		return e.Value.(*cacheItem).data, true
	}
	return nil, false
}

func (c *sectionCache) put(key string, data []byte) {
	if int64(len(data)) > c.limit/4 {
		return // one section must not flush the whole cache
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.items[key]; ok {
		return
	}
	c.items[key] = c.ll.PushFront(&cacheItem{key: key, data: data})
	c.size += int64(len(data))
	for c.size > c.limit {
		e := c.ll.Back()
		it := e.Value.(*cacheItem)
		c.ll.Remove(e)
		delete(c.items, it.key)
		c.size -= int64(len(it.data))
	}
}

func (c *sectionCache) remove(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.items[key]; ok {
		c.ll.Remove(e)
		delete(c.items, key)
		c.size -= int64(len(e.Value.(*cacheItem).data))
	}
}
