package membership

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// testLogger discards logs unless MEMBERSHIP_TEST_LOG is set (to "debug" for
// memberlist's own lines too). It never writes through t: memberlist may log
// from its goroutines for a moment after a test ends.
func testLogger() *slog.Logger {
	switch os.Getenv("MEMBERSHIP_TEST_LOG") {
	case "":
		return slog.New(slog.NewTextHandler(io.Discard, nil))
	case "debug":
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	default:
		return slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
}

func member(name string, role Role) Member {
	return Member{Name: name, Role: role, APIAddress: "127.0.0.1:7" + strconv.Itoa(len(name)) + "01", Zone: "z1",
		Meta: map[string]string{"name": name}}
}

func start(t *testing.T, self Member, bind string, seeds ...string) *Membership {
	t.Helper()
	if bind == "" {
		bind = "127.0.0.1:0"
	}
	m, err := Start(t.Context(), Config{Self: self, BindAddress: bind, Seeds: seeds, Logger: testLogger()})
	if err != nil {
		t.Fatalf("Start %s: %v", self.Name, err)
	}
	g, _ := groups.LoadOrStore(t, &group{})
	g.(*group).add(t, m)
	return m
}

// group closes a test's members concurrently (Close takes a probe interval
// to drain) when the first of their cleanups runs.
type group struct {
	mu      sync.Mutex
	members []*Membership
	once    sync.Once
}

var groups sync.Map // *testing.T -> *group

func (g *group) add(t *testing.T, m *Membership) {
	g.mu.Lock()
	g.members = append(g.members, m)
	g.mu.Unlock()
	t.Cleanup(func() {
		g.once.Do(func() {
			groups.Delete(t)
			g.mu.Lock()
			defer g.mu.Unlock()
			var wg sync.WaitGroup
			for _, m := range g.members {
				wg.Go(func() {
					if err := m.Close(); err != nil {
						t.Errorf("Close %s: %v", m.self.Name, err)
					}
				})
			}
			wg.Wait()
		})
	})
}

// waitFor polls cond until it holds or timeout passes, and returns how long
// it took.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	begin := time.Now()
	for !cond() {
		if time.Since(begin) > timeout {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return time.Since(begin)
}

func names(ms []Member) []string {
	out := make([]string, 0, len(ms))
	for _, m := range ms {
		out = append(out, m.Name)
	}
	return out
}

// sees reports whether m's view of every role is exactly want.
func sees(m *Membership, want map[Role][]string) bool {
	for role, ns := range want {
		if !slices.Equal(names(m.Members(role)), ns) {
			return false
		}
	}
	return true
}

// freePort returns a port that was just free on 127.0.0.1 for both TCP and
// UDP.
func freePort(t *testing.T) int {
	t.Helper()
	for range 20 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		u, err := net.ListenPacket("udp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		_ = l.Close()
		if err == nil {
			_ = u.Close()
			return port
		}
	}
	t.Fatal("no free port")
	return 0
}

// kill stops m abruptly, as a crash would: no leave message.
func (m *Membership) kill() {
	m.lifeMu.Lock()
	defer m.lifeMu.Unlock()
	m.stopJoinLoop()
	m.shut = true
	_ = m.list.Shutdown()
	m.mu.Lock()
	m.closed = true
	for _, ch := range m.watchers {
		close(ch)
	}
	m.watchers = nil
	m.mu.Unlock()
}

func TestClusterConverges(t *testing.T) {
	seed := start(t, member("ctl-1", RoleController), "")
	watch := seed.Watch()
	// The seed lists itself, as a shared seed list would.
	if got := names(seed.Members("")); !slices.Equal(got, []string{"ctl-1"}) {
		t.Fatalf("seed alone sees %v", got)
	}

	begin := time.Now()
	all := []*Membership{seed}
	for _, self := range []Member{
		member("ctl-2", RoleController),
		member("agent-1", RoleAgent),
		member("agent-2", RoleAgent),
		member("gw-127.0.0.1:9092", RoleGateway),
	} {
		all = append(all, start(t, self, "", seed.AdvertiseAddr()))
	}

	select {
	case _, ok := <-watch:
		if !ok {
			t.Fatal("watch closed")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Watch did not fire on join")
	}

	want := map[Role][]string{
		RoleController: {"ctl-1", "ctl-2"},
		RoleAgent:      {"agent-1", "agent-2"},
		RoleGateway:    {"gw-127.0.0.1:9092"},
		"":             {"agent-1", "agent-2", "ctl-1", "ctl-2", "gw-127.0.0.1:9092"},
	}
	for _, m := range all {
		waitFor(t, 5*time.Second, m.self.Name+" to see everyone", func() bool { return sees(m, want) })
	}
	t.Logf("5 members converged %v after the first joiner started", time.Since(begin))

	// Metadata travels intact.
	for _, m := range all {
		for _, got := range m.Members("") {
			want := member(got.Name, got.Role)
			if got.APIAddress != want.APIAddress || got.Zone != want.Zone || got.Meta["name"] != got.Name {
				t.Fatalf("%s sees %+v, want %+v", m.self.Name, got, want)
			}
		}
		if got, want := m.Addresses(RoleAgent), []string{member("agent-1", RoleAgent).APIAddress, member("agent-2", RoleAgent).APIAddress}; !slices.Equal(got, want) {
			t.Fatalf("%s: Addresses(agent) = %v, want %v", m.self.Name, got, want)
		}
	}
	// Callers cannot corrupt the view.
	seed.Members(RoleAgent)[0].Meta["name"] = "scribbled"
	if seed.Members(RoleAgent)[0].Meta["name"] != "agent-1" {
		t.Fatal("Members returned shared metadata")
	}
	if got := all[2].LocalAddr(); got != all[2].AdvertiseAddr() || strings.HasSuffix(got, ":0") {
		t.Fatalf("LocalAddr %q, AdvertiseAddr %q", got, all[2].AdvertiseAddr())
	}
}

func TestLeaveAndFailure(t *testing.T) {
	seed := start(t, member("ctl-1", RoleController), "")
	a1 := start(t, member("agent-1", RoleAgent), "", seed.AdvertiseAddr())
	a2 := start(t, member("agent-2", RoleAgent), "", seed.AdvertiseAddr())
	a3 := start(t, member("agent-3", RoleAgent), "", seed.AdvertiseAddr())
	gw := start(t, member("gw-1", RoleGateway), "", seed.AdvertiseAddr())
	all := []*Membership{seed, a1, a2, a3, gw}
	for _, m := range all {
		waitFor(t, 5*time.Second, m.self.Name+" to see 3 agents", func() bool { return len(m.Members(RoleAgent)) == 3 })
	}

	watch := seed.Watch()
	begin := time.Now()
	if err := a1.Leave(time.Second); err != nil {
		t.Fatalf("Leave: %v", err)
	}
	t.Logf("Leave returned after %v", time.Since(begin))
	for _, m := range []*Membership{seed, a2, a3, gw} {
		d := waitFor(t, 3*time.Second, m.self.Name+" to drop agent-1 after it left", func() bool {
			return slices.Equal(names(m.Members(RoleAgent)), []string{"agent-2", "agent-3"})
		})
		t.Logf("%s dropped agent-1 %v after Leave returned", m.self.Name, d)
	}
	t.Logf("graceful leave seen by all in %v", time.Since(begin))
	select {
	case <-watch:
	default:
		t.Fatal("Watch did not fire on leave")
	}
	if err := a1.Leave(time.Second); err != nil {
		t.Fatalf("second Leave: %v", err)
	}

	a2.kill()
	begin = time.Now()
	for _, m := range []*Membership{seed, a3, gw} {
		waitFor(t, 20*time.Second, m.self.Name+" to drop killed agent-2", func() bool {
			return slices.Equal(names(m.Members(RoleAgent)), []string{"agent-3"})
		})
	}
	t.Logf("crash detected by all in %v", time.Since(begin))

	// A crashed member restarted under the same name on a new port is
	// accepted once its old incarnation is dead long enough to reclaim.
	begin = time.Now()
	a2b := start(t, member("agent-2", RoleAgent), "", gw.AdvertiseAddr())
	for _, m := range []*Membership{seed, a3, gw, a2b} {
		waitFor(t, 20*time.Second, m.self.Name+" to see restarted agent-2", func() bool {
			return slices.Equal(names(m.Members(RoleAgent)), []string{"agent-2", "agent-3"})
		})
	}
	t.Logf("restarted agent-2 (new port, same name) accepted by all in %v", time.Since(begin))

	if err := a2.Close(); err != nil {
		t.Fatalf("Close after kill: %v", err)
	}
	if err := a1.Close(); err != nil {
		t.Fatalf("Close after Leave: %v", err)
	}
	if err := a1.Leave(time.Second); !errors.Is(err, ErrClosed) {
		t.Fatalf("Leave after Close = %v, want ErrClosed", err)
	}
	if _, ok := <-a1.Watch(); ok {
		t.Fatal("Watch after Close should be closed")
	}
}

func TestSeedDownAtStart(t *testing.T) {
	port := freePort(t)
	seedAddr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	a := start(t, member("agent-1", RoleAgent), "", seedAddr)
	g := start(t, member("gw-1", RoleGateway), "", seedAddr, "localhost:1") // a dead extra seed is harmless

	// Let a few join attempts fail (polling, not sleeping blindly: nothing
	// should change).
	deadline := time.Now().Add(700 * time.Millisecond)
	for time.Now().Before(deadline) {
		if n := len(a.Members("")); n != 1 {
			t.Fatalf("agent sees %d members before any seed is up", n)
		}
		time.Sleep(50 * time.Millisecond)
	}

	begin := time.Now()
	// The seed's own seed list is just itself.
	s := start(t, member("ctl-1", RoleController), seedAddr, seedAddr)
	want := map[Role][]string{"": {"agent-1", "ctl-1", "gw-1"}}
	for _, m := range []*Membership{s, a, g} {
		waitFor(t, 10*time.Second, m.self.Name+" to join through the late seed", func() bool { return sees(m, want) })
	}
	t.Logf("joined through a seed that came up late in %v", time.Since(begin))
	if s.LocalAddr() != seedAddr {
		t.Fatalf("LocalAddr = %q, want %q", s.LocalAddr(), seedAddr)
	}
}

func TestMetadataTooLarge(t *testing.T) {
	self := member("agent-1", RoleAgent)
	self.Meta["blob"] = strings.Repeat("x", MetaMaxSize)
	_, err := Start(t.Context(), Config{Self: self, BindAddress: "127.0.0.1:0", Logger: testLogger()})
	if !errors.Is(err, ErrMetadataTooLarge) {
		t.Fatalf("err = %v, want ErrMetadataTooLarge", err)
	}
	if !strings.Contains(err.Error(), `"agent-1"`) || !strings.Contains(err.Error(), fmt.Sprint(MetaMaxSize)) {
		t.Fatalf("error does not say who and what the limit is: %v", err)
	}

	// Just under the limit works.
	self.Meta["blob"] = ""
	base, err := Start(t.Context(), Config{Self: self, BindAddress: "127.0.0.1:0", Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	_ = base.Close()
}

func TestConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"no name", Config{Self: Member{Role: RoleAgent}}, "Name is required"},
		{"bad role", Config{Self: Member{Name: "x", Role: "broker"}}, "Role"},
		{"bind host name", Config{Self: Member{Name: "x", Role: RoleAgent}, BindAddress: "localhost:0"}, "must be an IP"},
		{"bad port", Config{Self: Member{Name: "x", Role: RoleAgent}, BindAddress: "127.0.0.1:99999"}, "bad port"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.Logger = testLogger()
			_, err := Start(t.Context(), tc.cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to mention %q", err, tc.want)
			}
		})
	}
}

func TestAdvertise(t *testing.T) {
	port := freePort(t)
	m, err := Start(t.Context(), Config{
		Self:        member("gw-1", RoleGateway),
		BindAddress: net.JoinHostPort("0.0.0.0", strconv.Itoa(port)),
		Advertise:   net.JoinHostPort("localhost", strconv.Itoa(port)),
		// Bound to all interfaces, loopback at our port is ourselves.
		Seeds:  []string{net.JoinHostPort("localhost", strconv.Itoa(port)), net.JoinHostPort("127.0.0.1", strconv.Itoa(port))},
		Logger: testLogger(),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = m.Close() }()
	if got, want := m.AdvertiseAddr(), net.JoinHostPort("127.0.0.1", strconv.Itoa(port)); got != want {
		t.Fatalf("AdvertiseAddr = %q, want %q", got, want)
	}
	if got, want := m.LocalAddr(), net.JoinHostPort("0.0.0.0", strconv.Itoa(port)); got != want {
		t.Fatalf("LocalAddr = %q, want %q", got, want)
	}
	if seeds := m.otherSeeds(t.Context()); len(seeds) != 0 {
		t.Fatalf("otherSeeds = %v, want none (they are all ourselves)", seeds)
	}
	a1 := start(t, member("agent-1", RoleAgent), "", m.AdvertiseAddr())
	start(t, member("agent-2", RoleAgent), "", a1.AdvertiseAddr())
	waitFor(t, 5*time.Second, "three members", func() bool { return len(m.Members("")) == 3 })
}

// TestCloseStopsGoroutines checks Close itself, not just the end of the
// package run.
func TestCloseStopsGoroutines(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a, err := Start(ctx, Config{Self: member("ctl-1", RoleController), BindAddress: "127.0.0.1:0", Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	b, err := Start(ctx, Config{Self: member("agent-1", RoleAgent), BindAddress: "127.0.0.1:0", Logger: testLogger(),
		Seeds: []string{a.AdvertiseAddr(), "127.0.0.1:1"}})
	if err != nil {
		t.Fatal(err)
	}
	// A third member whose seed never answers: Close must stop its retries.
	c, err := Start(ctx, Config{Self: member("gw-1", RoleGateway), BindAddress: "127.0.0.1:0", Logger: testLogger(),
		Seeds: []string{"127.0.0.1:1"}})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "two members", func() bool { return len(a.Members("")) == 2 && len(b.Members("")) == 2 })
	for _, m := range []*Membership{c, b, a} {
		if err := m.Close(); err != nil {
			t.Fatal(err)
		}
		if err := m.Close(); err != nil {
			t.Fatalf("second Close: %v", err)
		}
	}
}
