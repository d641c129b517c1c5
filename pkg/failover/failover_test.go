package failover

import (
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestMovesOnFromRefusedServers(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close() // nothing listens here now: connections are refused
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.Write(append([]byte("got:"), b...))
	}))
	defer srv.Close()
	live := strings.TrimPrefix(srv.URL, "http://")

	tr, err := New([]string{dead, live}, &http.Transport{})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr}
	for i := 0; i < 2; i++ {
		resp, err := hc.Post(tr.URL()+"/x", "text/plain", strings.NewReader("hello"))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(b) != "got:hello" {
			t.Fatalf("body %q", b)
		}
	}
	if tr.current != 1 {
		t.Fatalf("did not stick to the live server: current=%d", tr.current)
	}
	allDead, _ := New([]string{dead}, &http.Transport{})
	if _, err := (&http.Client{Transport: allDead}).Get(allDead.URL()); err == nil || !strings.Contains(err.Error(), "no server reachable") {
		t.Fatalf("all dead: %v", err)
	}
	if _, err := New(nil, nil); err == nil {
		t.Fatal("no addresses accepted")
	}
}
