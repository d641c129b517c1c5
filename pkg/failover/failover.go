// Package failover is an http.RoundTripper over several equivalent servers
// (the controllers of a cluster): each request goes to the server that
// answered last, and moves on to the next one when the connection cannot be
// made. It never resends a request that may have reached a server, so it is
// safe for writes; errors after the request left are the caller's to judge.
package failover

import (
	"errors"
	"fmt"
	"net/http"
	"sync"

	"github.com/streamhouse/streamhouse/pkg/rpcerr"
)

// Transport sends each request to one of Addrs (host:port) over base.
type Transport struct {
	addrs []string
	base  http.RoundTripper

	mu      sync.Mutex
	current int
}

// SetAddrs replaces the servers (e.g. as gossip discovers them); an empty
// list is ignored. The current server is kept when it is still listed.
func (t *Transport) SetAddrs(addrs []string) {
	if len(addrs) == 0 {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	cur := t.addrs[t.current%len(t.addrs)]
	t.addrs = append([]string(nil), addrs...)
	t.current = 0
	for i, a := range t.addrs {
		if a == cur {
			t.current = i
		}
	}
}

// New returns a Transport over addrs (at least one). A nil base uses an
// h2c-capable transport (HTTP/2 without TLS, as Connect servers here speak).
func New(addrs []string, base http.RoundTripper) (*Transport, error) {
	if len(addrs) == 0 {
		return nil, errors.New("failover: no addresses")
	}
	if base == nil {
		t := &http.Transport{}
		t.Protocols = new(http.Protocols)
		t.Protocols.SetUnencryptedHTTP2(true)
		base = t
	}
	return &Transport{addrs: append([]string(nil), addrs...), base: base}, nil
}

// URL is the base URL to give Connect clients; its host is replaced per
// request.
func (t *Transport) URL() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return "http://" + t.addrs[0]
}

// RoundTrip sends r to the current server, trying the others in turn while
// connections are refused.
func (t *Transport) RoundTrip(r *http.Request) (*http.Response, error) {
	t.mu.Lock()
	start, addrs := t.current, t.addrs
	t.mu.Unlock()
	var errs []error
	for i := range addrs {
		idx := (start + i) % len(addrs)
		req := r.Clone(r.Context())
		req.URL.Host = addrs[idx]
		req.Host = addrs[idx]
		if i > 0 && r.GetBody != nil {
			body, err := r.GetBody()
			if err != nil {
				return nil, err
			}
			req.Body = body
		} else if i > 0 && r.Body != nil && r.Body != http.NoBody {
			break // cannot resend a body we cannot rewind
		}
		resp, err := t.base.RoundTrip(req)
		if err == nil {
			t.mu.Lock()
			if len(t.addrs) == len(addrs) {
				t.current = idx
			}
			t.mu.Unlock()
			return resp, nil
		}
		if !rpcerr.NeverSent(err) {
			return nil, err
		}
		errs = append(errs, fmt.Errorf("%s: %w", addrs[idx], err))
	}
	return nil, fmt.Errorf("no server reachable: %w", errors.Join(errs...))
}

// CloseIdleConnections closes idle connections of the base transport.
func (t *Transport) CloseIdleConnections() {
	if c, ok := t.base.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}
