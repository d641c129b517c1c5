// Package admission bounds the bytes a server holds for requests in flight,
// from admission to answer, so its memory follows a configured limit rather
// than the offered load. Past the limit a request is refused at once, with
// an estimate of how long the bytes now held take to drain: what the
// refusal's Retry-After tells the client.
package admission

import (
	"sync"
	"time"
)

// Budget is a byte budget for requests in flight. It is safe for concurrent
// use.
type Budget struct {
	limit int64

	mu       sync.Mutex
	held     int64
	released int64     // bytes released since the start
	rateAt   time.Time // when rate was last measured
	relAt    int64     // released at rateAt
	rate     float64   // bytes/s released, last measured
	onChange func(held int64)
}

// New returns a Budget of limit bytes; onChange, if not nil, is called
// (under the Budget's lock, so keep it short: a gauge) with the bytes held
// after every change.
func New(limit int64, onChange func(held int64)) *Budget {
	return &Budget{limit: limit, onChange: onChange}
}

// Held returns the bytes held now.
func (b *Budget) Held() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.held
}

// Limit returns the budget's limit in bytes.
func (b *Budget) Limit() int64 { return b.limit }

// Admit takes n bytes and returns the function that gives them back (call it
// once, when the request is answered), or, when the budget is spent, nil,
// the bytes held and how long they should take to drain (between 1 s, a
// Retry-After's resolution, and 5 s). A request larger than the whole limit
// is admitted when nothing else is held, so it is never refused forever.
func (b *Budget) Admit(n int64) (release func(), held int64, retryAfter time.Duration) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.held > 0 && b.held+n > b.limit {
		return nil, b.held, b.retryAfterLocked(time.Now())
	}
	b.held += n
	b.changedLocked()
	return func() {
		b.mu.Lock()
		defer b.mu.Unlock()
		b.held -= n
		b.released += n
		b.changedLocked()
	}, 0, 0
}

func (b *Budget) changedLocked() {
	if b.onChange != nil {
		b.onChange(b.held)
	}
}

// retryAfterLocked estimates the drain time of the bytes held at the
// release rate of about the last second. Releases come in bursts (durable
// acks at each flush), so a window without one says little: it gives the
// minimum, not the maximum, or clients would sit idle long after the load
// has gone.
func (b *Budget) retryAfterLocked(now time.Time) time.Duration {
	if el := now.Sub(b.rateAt); el >= time.Second || b.rateAt.IsZero() {
		if !b.rateAt.IsZero() {
			b.rate = float64(b.released-b.relAt) / el.Seconds()
		}
		b.rateAt, b.relAt = now, b.released
	}
	wait := time.Second
	if b.rate > 0 {
		wait = time.Duration(float64(b.held) / b.rate * float64(time.Second))
	}
	return min(max(wait, time.Second), 5*time.Second)
}
