// Package membership lets every StreamHouse process (controller, agent,
// gateway) announce itself and learn about the others over gossip.
//
// It is a thin wrapper over hashicorp/memberlist (SWIM): each process is one
// memberlist node named after its unique identity (agent id, controller node
// id, gateway host:port) and carries a small JSON document (its Member) as
// node metadata. The local view is kept up to date from memberlist's event
// callbacks, so reads (Members, Addresses) never touch the network.
//
// Gossip uses both TCP and UDP on the same port (7946 by default); both must
// be reachable between every pair of processes.
package membership

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"maps"
	"math/rand/v2"
	"net"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
)

// Role is the kind of StreamHouse process a member is.
type Role string

// The roles a StreamHouse process can announce.
const (
	RoleController Role = "controller"
	RoleAgent      Role = "agent"
	RoleGateway    Role = "gateway"
)

func (r Role) valid() bool {
	switch r {
	case RoleController, RoleAgent, RoleGateway:
		return true
	}
	return false
}

// Member is what a process announces about itself.
type Member struct {
	// Name identifies the process in the cluster and must be unique: the
	// agent id, the controller node id, the gateway host:port.
	Name string
	// Role is the kind of process.
	Role Role
	// APIAddress is the host:port other processes use to talk to it.
	APIAddress string
	// Zone is the availability zone, if known.
	Zone string
	// Meta holds small extra labels. Everything except Name must fit, JSON
	// encoded, in memberlist's 512-byte node metadata.
	Meta map[string]string
}

func (m Member) clone() Member {
	if m.Meta != nil {
		m.Meta = maps.Clone(m.Meta)
	}
	return m
}

// wireMember is the node metadata. The name is not repeated: memberlist
// already carries it as the node name.
type wireMember struct {
	Role       Role              `json:"r"`
	APIAddress string            `json:"a,omitempty"`
	Zone       string            `json:"z,omitempty"`
	Meta       map[string]string `json:"m,omitempty"`
}

// MetaMaxSize is the largest encoded metadata a member may announce.
const MetaMaxSize = memberlist.MetaMaxSize

// ErrMetadataTooLarge is returned by Start when the announced Member does not
// fit in memberlist's node metadata.
var ErrMetadataTooLarge = errors.New("membership: node metadata too large")

// ErrClosed is returned by Leave after Close.
var ErrClosed = errors.New("membership: closed")

// DefaultPort is the default gossip port (TCP and UDP).
const DefaultPort = 7946

// Tuning. memberlist.DefaultLANConfig with faster probing and gossip, so a
// cluster of a few dozen processes on a LAN converges in well under a second
// and notices a dead process in a few seconds.
const (
	probeInterval      = 500 * time.Millisecond // default 1s
	probeTimeout       = 250 * time.Millisecond // default 500ms; must be < probeInterval
	gossipInterval     = 100 * time.Millisecond // default 200ms
	pushPullInterval   = 5 * time.Second        // default 30s; full-state anti-entropy, also what lets a restarted process back in after a name conflict
	gossipToTheDead    = 15 * time.Second       // default 30s
	tcpTimeout         = 2 * time.Second        // default 10s; bounds joins, push/pull and Close
	deadNodeReclaim    = time.Second            // default 0 (never): lets a restarted process reuse its name from a new address once the old one is dead
	closeLeaveTimeout  = time.Second
	joinBackoffInitial = 100 * time.Millisecond
	joinBackoffMax     = 5 * time.Second
	// rejoinInterval is how often a member that has ended up alone (every
	// peer gone or unreachable) tries its seeds again. A partition into two
	// groups that are each larger than one member does not heal this way.
	rejoinInterval = 10 * time.Second
)

// Config configures Start.
type Config struct {
	// Self is what this process announces. Name and Role are required.
	Self Member
	// BindAddress is the host:port to gossip on (TCP and UDP). The host must
	// be an IP literal or empty (all interfaces); port 0 picks a free port,
	// see LocalAddr. Empty means 0.0.0.0:7946.
	BindAddress string
	// Advertise is the host:port others use to reach us, if not the bound
	// address (NAT, containers, binding to all interfaces). A host name is
	// resolved once at Start. If empty and BindAddress binds all interfaces,
	// memberlist advertises the first private IPv4 address.
	Advertise string
	// Seeds are host:port gossip addresses of members to join. They are
	// tried in the background until one answers; our own address may be
	// listed (it is skipped), so every process can share one seed list.
	// Host names are resolved on every attempt.
	Seeds []string
	// Logger receives membership events; memberlist's own log lines go to it
	// at debug level. Nil means slog.Default().
	Logger *slog.Logger
}

// Membership is a running gossip member. Its methods are safe for concurrent
// use.
type Membership struct {
	list   *memberlist.Memberlist
	logger *slog.Logger
	self   Member
	seeds  []string
	meta   []byte

	bindIP    net.IP
	boundPort int

	mu       sync.RWMutex
	view     map[string]Member // alive members by name, including self
	watchers []chan struct{}
	closed   bool // under mu: no more watchers, watchers closed

	lifeMu sync.Mutex // serialises Leave and Close
	left   bool
	shut   bool

	stopJoin context.CancelFunc
	joinDone chan struct{}
}

// Start creates the local member, starts gossiping and, in the background,
// joins the cluster through cfg.Seeds. It returns once the gossip listeners
// are up; use Members or Watch to learn when peers appear. The background
// join stops when ctx is done or on Leave or Close; ctx does not otherwise
// limit the membership's lifetime: call Close.
func Start(ctx context.Context, cfg Config) (*Membership, error) {
	self := cfg.Self.clone()
	if self.Name == "" {
		return nil, errors.New("membership: Self.Name is required")
	}
	if !self.Role.valid() {
		return nil, fmt.Errorf("membership: Self.Role %q is not one of %q, %q, %q",
			self.Role, RoleController, RoleAgent, RoleGateway)
	}
	meta, err := json.Marshal(wireMember{Role: self.Role, APIAddress: self.APIAddress, Zone: self.Zone, Meta: self.Meta})
	if err != nil {
		return nil, fmt.Errorf("membership: encode metadata: %w", err)
	}
	if len(meta) > MetaMaxSize {
		return nil, fmt.Errorf("%w: member %q announces %d bytes of metadata (role, API address, zone and Meta, JSON encoded), the limit is %d",
			ErrMetadataTooLarge, self.Name, len(meta), MetaMaxSize)
	}

	logger := cfg.Logger
	if logger == nil {
		logger = slog.Default()
	}
	logger = logger.With("member", self.Name)

	conf := memberlist.DefaultLANConfig()
	conf.Name = self.Name
	conf.ProbeInterval = probeInterval
	conf.ProbeTimeout = probeTimeout
	conf.GossipInterval = gossipInterval
	conf.PushPullInterval = pushPullInterval
	conf.GossipToTheDeadTime = gossipToTheDead
	conf.TCPTimeout = tcpTimeout
	conf.DeadNodeReclaimTime = deadNodeReclaim
	conf.Logger = log.New(&logWriter{logger: logger}, "", 0)

	bindHost, bindPort, err := splitHostPort(cfg.BindAddress, "0.0.0.0", DefaultPort)
	if err != nil {
		return nil, fmt.Errorf("membership: BindAddress: %w", err)
	}
	if net.ParseIP(bindHost) == nil {
		return nil, fmt.Errorf("membership: BindAddress host %q must be an IP address", bindHost)
	}
	conf.BindAddr = bindHost
	conf.BindPort = bindPort
	conf.AdvertisePort = bindPort
	if cfg.Advertise != "" {
		host, port, err := splitHostPort(cfg.Advertise, "", bindPort)
		if err != nil {
			return nil, fmt.Errorf("membership: Advertise: %w", err)
		}
		if host == "" {
			return nil, fmt.Errorf("membership: Advertise %q has no host", cfg.Advertise)
		}
		ip, err := resolveOne(ctx, host)
		if err != nil {
			return nil, fmt.Errorf("membership: Advertise: %w", err)
		}
		conf.AdvertiseAddr = ip
		conf.AdvertisePort = port
	}

	m := &Membership{
		logger:   logger,
		self:     self,
		seeds:    slices.Clone(cfg.Seeds),
		meta:     meta,
		view:     make(map[string]Member),
		joinDone: make(chan struct{}),
	}
	d := &delegate{m: m}
	conf.Delegate = d
	conf.Events = d
	conf.Conflict = d

	list, err := memberlist.Create(conf)
	if err != nil {
		return nil, fmt.Errorf("membership: start gossip on %s: %w", net.JoinHostPort(bindHost, strconv.Itoa(bindPort)), err)
	}
	m.list = list
	// memberlist writes the port it actually bound back into conf when asked
	// for port 0, before it starts any goroutine.
	m.bindIP = net.ParseIP(bindHost)
	m.boundPort = conf.BindPort

	joinCtx, cancel := context.WithCancel(ctx)
	m.stopJoin = cancel
	go m.joinLoop(joinCtx)

	logger.Info("membership: started", "role", self.Role, "gossip", m.LocalAddr(), "advertise", m.AdvertiseAddr(), "seeds", cfg.Seeds)
	return m, nil
}

// Members returns the alive members with the given role, including this
// process, sorted by name. An empty role returns every member.
func (m *Membership) Members(role Role) []Member {
	m.mu.RLock()
	out := make([]Member, 0, len(m.view))
	for _, mem := range m.view {
		if role == "" || mem.Role == role {
			out = append(out, mem.clone())
		}
	}
	m.mu.RUnlock()
	slices.SortFunc(out, func(a, b Member) int {
		if a.Name < b.Name {
			return -1
		} else if a.Name > b.Name {
			return 1
		}
		return 0
	})
	return out
}

// Addresses returns the API addresses of Members(role), in the same order.
func (m *Membership) Addresses(role Role) []string {
	members := m.Members(role)
	out := make([]string, 0, len(members))
	for _, mem := range members {
		out = append(out, mem.APIAddress)
	}
	return out
}

// Watch returns a channel that receives a value whenever the membership
// changes (a member joins, leaves, fails or changes its metadata). Sends never
// block: changes that happen while a value is pending are coalesced into it,
// so re-read Members after each receive. Each call returns a new channel; call
// it once per consumer. The channel is closed by Close.
func (m *Membership) Watch() <-chan struct{} {
	ch := make(chan struct{}, 1)
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		close(ch)
		return ch
	}
	m.watchers = append(m.watchers, ch)
	return ch
}

// LocalAddr returns the gossip address actually bound (with the real port
// when BindAddress asked for port 0). When bound to all interfaces the host
// is 0.0.0.0; use AdvertiseAddr for the address peers dial.
func (m *Membership) LocalAddr() string {
	return net.JoinHostPort(m.bindIP.String(), strconv.Itoa(m.boundPort))
}

// AdvertiseAddr returns the gossip address peers use to reach this process;
// other processes may list it in their Seeds.
func (m *Membership) AdvertiseAddr() string {
	return m.list.LocalNode().Address()
}

// Leave announces that this process is leaving and waits up to timeout for
// the announcement to reach a peer. Peers drop it from their views at once
// instead of waiting for failure detection. The process keeps answering
// gossip until Close, and does not rejoin.
func (m *Membership) Leave(timeout time.Duration) error {
	m.lifeMu.Lock()
	defer m.lifeMu.Unlock()
	if m.shut {
		return ErrClosed
	}
	return m.leaveLocked(timeout)
}

func (m *Membership) leaveLocked(timeout time.Duration) error {
	m.stopJoinLoop()
	if m.left {
		return nil
	}
	m.left = true
	if err := m.list.Leave(timeout); err != nil {
		return fmt.Errorf("membership: leave: %w", err)
	}
	m.logger.Info("membership: left")
	return nil
}

// Close leaves the cluster (waiting at most a second for the announcement),
// shuts gossip down, closes the Watch channels and returns once every
// goroutine it and memberlist started has stopped. That takes about half a
// second (one probe interval, see drain) plus, at worst, a couple of seconds
// for an in-flight join attempt to an unresponsive seed to time out. It is
// safe to call more than once.
func (m *Membership) Close() error {
	m.lifeMu.Lock()
	defer m.lifeMu.Unlock()
	if m.shut {
		return nil
	}
	leaveErr := m.leaveLocked(closeLeaveTimeout)
	m.shut = true
	err := m.list.Shutdown()
	m.drain()

	m.mu.Lock()
	m.closed = true
	for _, ch := range m.watchers {
		close(ch)
	}
	m.watchers = nil
	m.mu.Unlock()

	if err != nil {
		return fmt.Errorf("membership: shutdown: %w", err)
	}
	// A leave that timed out (no peer acknowledged in time) is not worth
	// failing Close for: peers will detect the shutdown by probing.
	if leaveErr != nil {
		m.logger.Debug("membership: leave on close", "err", leaveErr)
	}
	return nil
}

// drain waits for memberlist's goroutines that outlive Shutdown. Shutdown
// closes the transport and tells the probe, gossip and push/pull loops to
// stop, but does not wait for them: a probe in flight (one whose target did
// not answer, or that lost its socket to Shutdown) waits for its ack timer,
// ProbeInterval scaled by the health score, before it returns. Nothing else
// of memberlist's lasts that long on its own, so waiting out that timer
// leaves no goroutine behind.
func (m *Membership) drain() {
	scale := time.Duration(m.list.GetHealthScore() + 1)
	time.Sleep(scale*probeInterval + 50*time.Millisecond)
}

func (m *Membership) stopJoinLoop() {
	m.stopJoin()
	<-m.joinDone
}

// joinLoop contacts the seeds until one answers, with jittered exponential
// backoff; afterwards it retries every rejoinInterval while this member is
// alone, so a member that lost every peer finds its way back.
func (m *Membership) joinLoop(ctx context.Context) {
	defer close(m.joinDone)
	backoff := joinBackoffInitial
	joined := false
	for {
		if !joined || m.list.NumMembers() <= 1 {
			seeds := m.otherSeeds(ctx)
			if len(seeds) == 0 {
				if !joined {
					m.logger.Info("membership: no seeds other than ourselves; waiting for others to join us")
				}
				joined = true // nothing to do until the next check
			} else if n, err := m.list.Join(seeds); err == nil {
				if !joined {
					m.logger.Info("membership: joined cluster", "seeds_contacted", n, "members", m.list.NumMembers())
				} else {
					m.logger.Info("membership: rejoined cluster", "seeds_contacted", n, "members", m.list.NumMembers())
				}
				joined = true
				backoff = joinBackoffInitial
			} else if ctx.Err() == nil {
				m.logger.Warn("membership: no seed answered; retrying", "seeds", seeds, "err", err, "retry_in", backoff)
			}
		}

		wait := rejoinInterval
		if !joined {
			wait = backoff/2 + rand.N(backoff/2+1)
			backoff = min(2*backoff, joinBackoffMax)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// otherSeeds resolves the seeds and drops any that are this process.
func (m *Membership) otherSeeds(ctx context.Context) []string {
	adv := m.list.LocalNode()
	var out []string
	for _, s := range m.seeds {
		host, port, err := splitHostPort(s, "", DefaultPort)
		if err != nil || host == "" {
			m.logger.Warn("membership: ignoring bad seed", "seed", s, "err", err)
			continue
		}
		ips, err := net.DefaultResolver.LookupIP(ctx, "ip", host)
		if err != nil {
			m.logger.Debug("membership: cannot resolve seed", "seed", s, "err", err)
			// Let memberlist try (and report) it anyway.
			out = append(out, s)
			continue
		}
		for _, ip := range ips {
			if m.isSelf(ip, port, adv) {
				continue
			}
			out = append(out, net.JoinHostPort(ip.String(), strconv.Itoa(port)))
		}
	}
	return out
}

func (m *Membership) isSelf(ip net.IP, port int, adv *memberlist.Node) bool {
	if ip.Equal(adv.Addr) && port == int(adv.Port) {
		return true
	}
	if port != m.boundPort {
		return false
	}
	if ip.Equal(m.bindIP) {
		return true
	}
	if !m.bindIP.IsUnspecified() {
		return false
	}
	if ip.IsLoopback() || ip.IsUnspecified() {
		return true
	}
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return false
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.Equal(ip) {
			return true
		}
	}
	return false
}

func (m *Membership) notify() {
	for _, ch := range m.watchers {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// delegate implements memberlist's Delegate, EventDelegate and
// ConflictDelegate.
type delegate struct{ m *Membership }

func (d *delegate) NodeMeta(limit int) []byte {
	if len(d.m.meta) > limit {
		// Start checked against MetaMaxSize; memberlist always passes it.
		return nil
	}
	return d.m.meta
}

func (d *delegate) NotifyMsg([]byte)                           {}
func (d *delegate) GetBroadcasts(overhead, limit int) [][]byte { return nil }
func (d *delegate) LocalState(join bool) []byte                { return nil }
func (d *delegate) MergeRemoteState(buf []byte, join bool)     {}

func (d *delegate) NotifyJoin(n *memberlist.Node) { d.upsert(n, "joined") }

func (d *delegate) NotifyUpdate(n *memberlist.Node) { d.upsert(n, "updated") }

func (d *delegate) NotifyLeave(n *memberlist.Node) {
	m := d.m
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.view[n.Name]; !ok {
		return
	}
	delete(m.view, n.Name)
	how := "failed"
	if n.State == memberlist.StateLeft {
		how = "left"
	}
	m.logger.Info("membership: member gone", "name", n.Name, "how", how, "gossip", n.Address())
	m.notify()
}

func (d *delegate) upsert(n *memberlist.Node, what string) {
	m := d.m
	var w wireMember
	if err := json.Unmarshal(n.Meta, &w); err != nil || !w.Role.valid() {
		m.logger.Warn("membership: ignoring node with unreadable metadata", "name", n.Name, "gossip", n.Address(), "err", err)
		return
	}
	mem := Member{Name: n.Name, Role: w.Role, APIAddress: w.APIAddress, Zone: w.Zone, Meta: w.Meta}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.view[n.Name] = mem
	m.logger.Info("membership: member "+what, "name", n.Name, "role", w.Role, "api", w.APIAddress, "gossip", n.Address())
	m.notify()
}

func (d *delegate) NotifyConflict(existing, other *memberlist.Node) {
	d.m.logger.Warn("membership: two processes announce the same member name from different addresses; names must be unique",
		"name", existing.Name, "existing", existing.Address(), "other", other.Address())
}

// splitHostPort splits host:port, defaulting an empty host or a missing
// port.
func splitHostPort(addr, defHost string, defPort int) (string, int, error) {
	if addr == "" {
		return defHost, defPort, nil
	}
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		// No port: a bare host or IP.
		var ae *net.AddrError
		if errors.As(err, &ae) && ae.Err == "missing port in address" {
			host, portStr = addr, ""
		} else {
			return "", 0, err
		}
	}
	if host == "" {
		host = defHost
	}
	port := defPort
	if portStr != "" {
		p, err := strconv.ParseUint(portStr, 10, 16)
		if err != nil {
			return "", 0, fmt.Errorf("bad port in %q", addr)
		}
		port = int(p)
	}
	return host, port, nil
}

func resolveOne(ctx context.Context, host string) (string, error) {
	if ip := net.ParseIP(host); ip != nil {
		return ip.String(), nil
	}
	ips, err := net.DefaultResolver.LookupIP(ctx, "ip", host)
	if err != nil {
		return "", err
	}
	for _, ip := range ips {
		if ip.To4() != nil {
			return ip.String(), nil
		}
	}
	if len(ips) == 0 {
		return "", fmt.Errorf("no address for %q", host)
	}
	return ips[0].String(), nil
}
