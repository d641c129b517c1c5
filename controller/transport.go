package controller

import (
	"fmt"
	"net"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

// streamLayer is raft's TCP stream layer over a listener we own, so the
// caller can bind port 0 and learn the address before the cluster forms.
type streamLayer struct {
	net.Listener
	advertise net.Addr
}

func (s *streamLayer) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	return net.DialTimeout("tcp", string(addr), timeout)
}

func (s *streamLayer) Addr() net.Addr {
	if s.advertise != nil {
		return s.advertise
	}
	return s.Listener.Addr()
}

// advertiseAddr is a TCP address as given (host:port, the host possibly a
// name), not resolved.
type advertiseAddr string

func (a advertiseAddr) Network() string { return "tcp" }
func (a advertiseAddr) String() string  { return string(a) }

// newTCPTransport serves Raft on ln (or, when ln is nil, on a new listener
// bound to bind), advertising advertise when set.
func newTCPTransport(ln net.Listener, bind, advertise string, hlog hclog.Logger) (*raft.NetworkTransport, error) {
	if ln == nil {
		var err error
		if ln, err = net.Listen("tcp", bind); err != nil {
			return nil, fmt.Errorf("raft listen on %s: %w", bind, err)
		}
	}
	layer := &streamLayer{Listener: ln}
	if advertise != "" {
		// Resolve once only to reject a typo at start-up; advertise the name
		// itself, so that peers and followers (which learn the leader's
		// address from this) dial a stable DNS name, such as a StatefulSet
		// pod's, and resolve it when they dial, not an IP the pod may lose.
		if _, err := net.ResolveTCPAddr("tcp", advertise); err != nil {
			ln.Close()
			return nil, fmt.Errorf("raft advertise address %q: %w", advertise, err)
		}
		layer.advertise = advertiseAddr(advertise)
	} else if tcp, ok := ln.Addr().(*net.TCPAddr); ok && tcp.IP.IsUnspecified() {
		ln.Close()
		return nil, fmt.Errorf("raft listens on %s, a wildcard address: set the advertise address other voters dial", ln.Addr())
	}
	return raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream: layer, MaxPool: 3, Timeout: 10 * time.Second, Logger: hlog,
	}), nil
}
