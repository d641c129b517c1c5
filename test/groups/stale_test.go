package groups_test

import (
	"context"
	"fmt"
	"net/http"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"

	v1 "github.com/streamhouse/streamhouse/api/gen/streamhouse/v1"
	"github.com/streamhouse/streamhouse/api/gen/streamhouse/v1/streamhousev1connect"
	"github.com/streamhouse/streamhouse/pkg/client"
	"github.com/streamhouse/streamhouse/test/devproc"
)

// describeGroup asks the gateway for a group; nil while it is unavailable.
func describeGroup(gc streamhousev1connect.GroupServiceClient, id string, history bool) *v1.DescribeGroupResponse {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	res, err := gc.DescribeGroup(ctx, connect.NewRequest(&v1.DescribeGroupRequest{GroupId: id, IncludeHistory: history}))
	if err != nil {
		return nil
	}
	return res.Msg
}

// stableWith reports whether the group is stable with n active members.
func stableWith(d *v1.DescribeGroupResponse, n int) bool {
	if d == nil || d.State != v1.GroupState_GROUP_STATE_STABLE || len(d.Members) != n {
		return false
	}
	for _, m := range d.Members {
		if m.Left {
			return false
		}
	}
	return true
}

// TestStaleMemberFenced: a consumer stopped (SIGSTOP) past its session
// timeout is evicted; when it continues (SIGCONT) its commit is refused
// and it is told to rejoin, which it does.
func TestStaleMemberFenced(t *testing.T) {
	dev := devproc.Start(t, serverBin, t.TempDir(), "--group-heartbeat-interval", "100ms", "--group-session-timeout", "1s")
	hc := &http.Client{Transport: &http.Transport{}}
	t.Cleanup(hc.CloseIdleConnections)
	admin := streamhousev1connect.NewAdminServiceClient(hc, dev.URL)
	groups := streamhousev1connect.NewGroupServiceClient(hc, dev.URL)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, err := admin.CreateTopic(ctx, connect.NewRequest(&v1.CreateTopicRequest{Name: "s", Partitions: 2})); err != nil {
		t.Fatal(err)
	}
	sdk, err := client.New(dev.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer sdk.Close()
	prod, err := sdk.NewProducer("s")
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	produce := func(n int) {
		for i := range n {
			if r := prod.ProduceSync(ctx, client.Record{Key: []byte(fmt.Sprint(i)), Value: []byte("v")}); r.Err != nil {
				t.Fatal(r.Err)
			}
		}
	}
	produce(40)

	a := startConsumer(t, "a", dev.URL, "--group", "g", "--topics", "s")
	b := startConsumer(t, "b", dev.URL, "--group", "g", "--topics", "s")
	staleID := a.memberID(t)
	b.memberID(t)
	waitFor(t, "2 stable members", 30*time.Second, func() bool { return stableWith(describeGroup(groups, "g", false), 2) })

	a.signal(syscall.SIGSTOP)
	stopped := time.Now()
	waitFor(t, "the stopped member's eviction", 30*time.Second, func() bool {
		d := describeGroup(groups, "g", false)
		return stableWith(d, 1) && d.Members[0].MemberId != staleID
	})
	t.Logf("stopped member evicted %v after SIGSTOP (session timeout 1s)", time.Since(stopped).Round(time.Millisecond))
	produce(20)
	a.signal(syscall.SIGCONT)

	waitFor(t, "the stale member's refused commit and rejoin", 30*time.Second, func() bool {
		evs := a.events(t)
		return hasEvent(evs, "commit_error", "rejoin") && hasEvent(evs, "lost", "rejoin")
	})
	for _, e := range a.events(t) {
		if e.Ev == "commit_error" || e.Ev == "lost" {
			t.Logf("stale member output: %s: %s", e.Ev, e.Err)
		}
	}
	waitFor(t, "the stale member to rejoin", 30*time.Second, func() bool {
		d := describeGroup(groups, "g", false)
		if !stableWith(d, 2) {
			return false
		}
		for _, m := range d.Members {
			if m.MemberId == staleID {
				return false // it rejoins under a new member id
			}
		}
		return true
	})
	a.stop(t)
	b.stop(t)
}
