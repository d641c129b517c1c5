package controller

import (
	"net"
	"testing"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

// TestTransportAdvertisesName: the Raft address a node advertises (which
// followers learn as the leader's) is the --raft-advertise value as given,
// a name when it is one, not the IP it resolved to at start-up: a pod's IP
// changes when it is rescheduled, its StatefulSet DNS name does not.
func TestTransportAdvertisesName(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	trans, err := newTCPTransport(ln, "", net.JoinHostPort("localhost", port), hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	defer trans.Close()
	if got, want := trans.LocalAddr(), raft.ServerAddress("localhost:"+port); got != want {
		t.Fatalf("advertised %q, want %q", got, want)
	}
}

// TestTransportRejectsBadAdvertise: a typo in the advertise address is an
// error at start-up, naming it.
func TestTransportRejectsBadAdvertise(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := newTCPTransport(ln, "", "no-port-here", hclog.NewNullLogger()); err == nil {
		t.Fatal("accepted an advertise address without a port")
	}
}
