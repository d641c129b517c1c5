// Package gatewaytest serves an http.Handler (such as a Gateway's) on a
// loopback port over HTTP/1.1 and h2c, for tests.
package gatewaytest

import (
	"context"
	"net"
	"net/http"
	"testing"
	"time"
)

// Server is a running loopback server.
type Server struct {
	// URL is the base URL, "http://127.0.0.1:port".
	URL string
	// Client speaks unencrypted HTTP/2 (h2c) with prior knowledge, which all
	// of Connect, gRPC and gRPC-web can use.
	Client *http.Client
	// HTTP1Client speaks HTTP/1.1 only (like curl without --http2).
	HTTP1Client *http.Client
}

// Serve serves h on 127.0.0.1 on a free port, with HTTP/1.1 and h2c, until
// the test ends; then it closes the clients' idle connections and the server.
func Serve(tb testing.TB, h http.Handler) *Server {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("gatewaytest: listen: %v", err)
	}
	var p http.Protocols
	p.SetHTTP1(true)
	p.SetUnencryptedHTTP2(true)
	srv := &http.Server{Handler: h, Protocols: &p, ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(ln)
	}()

	var h2 http.Protocols
	h2.SetUnencryptedHTTP2(true)
	t2 := &http.Transport{Protocols: &h2}
	var h1 http.Protocols
	h1.SetHTTP1(true)
	t1 := &http.Transport{Protocols: &h1}
	s := &Server{
		URL:         "http://" + ln.Addr().String(),
		Client:      &http.Client{Transport: t2},
		HTTP1Client: &http.Client{Transport: t1},
	}
	tb.Cleanup(func() {
		t1.CloseIdleConnections()
		t2.CloseIdleConnections()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			_ = srv.Close()
		}
		<-done
	})
	return s
}
