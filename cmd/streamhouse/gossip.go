package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/spf13/pflag"

	"github.com/streamhouse/streamhouse/pkg/failover"
	"github.com/streamhouse/streamhouse/pkg/membership"
)

// gossipConfig is how a process joins the cluster's gossip (memberlist),
// through which controllers, agents and gateways find each other.
type gossipConfig struct {
	Listen    string
	Advertise string
	Seeds     string
}

func (g *gossipConfig) addFlags(f *pflag.FlagSet) {
	f.StringVar(&g.Listen, "gossip-listen", ":7946", `gossip address (TCP and UDP); "off" disables gossip`)
	f.StringVar(&g.Advertise, "gossip-advertise", "", "gossip address others use (default: chosen by memberlist from the listen address)")
	f.StringVar(&g.Seeds, "seeds", "", "gossip addresses of any cluster members to join: host:port,...")
}

// start joins the gossip as self; nil when gossip is off.
func (g *gossipConfig) start(ctx context.Context, self membership.Member, log *slog.Logger) (*membership.Membership, error) {
	if g.Listen == "off" {
		return nil, nil
	}
	listen := g.Listen
	if len(listen) > 0 && listen[0] == ':' {
		listen = "0.0.0.0" + listen
	}
	m, err := membership.Start(ctx, membership.Config{
		Self: self, BindAddress: listen, Advertise: g.Advertise, Seeds: splitList(g.Seeds), Logger: log,
	})
	if err != nil {
		return nil, fmt.Errorf("join gossip on %s: %w", g.Listen, err)
	}
	log.Info("gossip started", "address", m.AdvertiseAddr(), "seeds", g.Seeds)
	return m, nil
}

// followControllers keeps tr pointed at the controllers gossip knows, in
// addition to the static ones, until ctx ends.
func followControllers(ctx context.Context, m *membership.Membership, tr *failover.Transport, static []string) {
	if m == nil {
		return
	}
	update := func() {
		seen := map[string]bool{}
		var addrs []string
		for _, a := range append(append([]string(nil), static...), m.Addresses(membership.RoleController)...) {
			if a != "" && !seen[a] {
				seen[a] = true
				addrs = append(addrs, a)
			}
		}
		tr.SetAddrs(addrs)
	}
	update()
	go func() {
		w := m.Watch()
		for {
			select {
			case <-ctx.Done():
				return
			case _, ok := <-w:
				if !ok {
					return
				}
				update()
			}
		}
	}()
}

// controllerAddrs returns the static controller addresses, or, when there
// are none, waits (up to a minute) for gossip to name one.
func controllerAddrs(ctx context.Context, static []string, m *membership.Membership) ([]string, error) {
	if len(static) > 0 {
		return static, nil
	}
	if m == nil {
		return nil, usageError{fmt.Errorf("give --controllers, or --seeds to find the controllers through gossip")}
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	for {
		if addrs := m.Addresses(membership.RoleController); len(addrs) > 0 {
			return addrs, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("no controller found through gossip (seeds %v): %w", m.AdvertiseAddr(), ctx.Err())
		case <-m.Watch():
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// reachControllers joins the gossip as self and returns a transport to the
// controllers (the --controllers list, plus those gossip names, kept
// current) and an HTTP client over it; stop leaves the gossip and closes
// idle connections.
func reachControllers(ctx context.Context, g gossipConfig, self membership.Member, controllers string, log *slog.Logger) (*failover.Transport, *http.Client, func(), error) {
	gossip, err := g.start(ctx, self, log)
	if err != nil {
		return nil, nil, nil, err
	}
	leave := func() {
		if gossip != nil {
			_ = gossip.Close()
		}
	}
	static := splitList(controllers)
	addrs, err := controllerAddrs(ctx, static, gossip)
	if err != nil {
		leave()
		return nil, nil, nil, err
	}
	tr, hc, err := controllerClients(addrs)
	if err != nil {
		leave()
		return nil, nil, nil, usageError{err}
	}
	followControllers(ctx, gossip, tr, static)
	return tr, hc, func() { tr.CloseIdleConnections(); leave() }, nil
}
