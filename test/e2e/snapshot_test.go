package e2e

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	v1 "github.com/streamhouse/streamhouse/api/gen/streamhouse/v1"
	"github.com/streamhouse/streamhouse/api/gen/streamhouse/v1/streamhousev1connect"
	"github.com/streamhouse/streamhouse/test/devproc"
)

// TestSnapshotIntoNewVoter: three `streamhouse controller` processes get
// 1,000,000 object-index entries, the leader writes a snapshot, and a
// fourth controller joins and restores it. It reports the snapshot size,
// the time to restore and the leader's RSS. About a minute and several GiB
// with the race detector, so it runs when STREAMHOUSE_LARGE_SNAPSHOT=1
// (use STREAMHOUSE_E2E_NORACE=1 for figures worth quoting).
func TestSnapshotIntoNewVoter(t *testing.T) {
	if os.Getenv("STREAMHOUSE_LARGE_SNAPSHOT") == "" {
		t.Skip("set STREAMHOUSE_LARGE_SNAPSHOT=1 to run (about a minute)")
	}
	const entries, perCommit, partitions = 1_000_000, 2000, 100
	var raft, initial, dirs []string
	for i := range 3 {
		raft = append(raft, devproc.FreeAddr(t))
		initial = append(initial, fmt.Sprintf("c%d=%s", i+1, raft[i]))
		dirs = append(dirs, t.TempDir())
	}
	c := &cluster{t: t, hc: h2c()}
	defer c.hc.CloseIdleConnections()
	for i := range 3 {
		c.controllers = append(c.controllers, devproc.StartCmd(t, bin, "controller", "--gossip-listen", "off",
			"--node-id", fmt.Sprintf("c%d", i+1), "--data-dir", dirs[i], "--raft-listen", raft[i],
			"--initial-cluster", strings.Join(initial, ",")))
	}
	leader, _ := c.waitLeader(nil)
	ctx := context.Background()
	admin := streamhousev1connect.NewAdminServiceClient(c.hc, leader.URL)
	if _, err := admin.CreateTopic(ctx, connect.NewRequest(&v1.CreateTopicRequest{Name: "big", Partitions: partitions})); err != nil {
		t.Fatal(err)
	}
	ctl := streamhousev1connect.NewControllerServiceClient(c.hc, leader.URL, connect.WithGRPC())
	hb, err := ctl.Heartbeat(ctx, connect.NewRequest(&v1.HeartbeatRequest{AgentId: "a", Incarnation: "1", Address: "x"}))
	if err != nil || len(hb.Msg.Leases) != partitions {
		t.Fatalf("leases: %v", err)
	}
	start := time.Now()
	ends := make([]int64, partitions)
	for k := range entries / perCommit {
		if k%50 == 0 { // keep the leases
			if _, err := ctl.Heartbeat(ctx, connect.NewRequest(&v1.HeartbeatRequest{AgentId: "a", Incarnation: "1", Address: "x"})); err != nil {
				t.Fatal(err)
			}
		}
		req := &v1.CommitObjectRequest{AgentId: "a", ObjectKey: fmt.Sprintf("00/2026112700/a-%08d.obj", k), ObjectSize: perCommit * 4096}
		for i := range perCommit {
			p := int32(i % partitions)
			req.Sections = append(req.Sections, &v1.ObjectSection{Topic: "big", Partition: p, Epoch: 1, BaseOffset: ends[p], EndOffset: ends[p] + 1000,
				Position: int64(i) * 4096, Length: 4096, MaxTimestampMs: 1})
			ends[p] += 1000
		}
		res, err := ctl.CommitObject(ctx, connect.NewRequest(req))
		if err != nil || !res.Msg.Results[0].Committed {
			t.Fatalf("commit %d: %v %v", k, err, res)
		}
	}
	t.Logf("committed %d index entries in %v", entries, time.Since(start))
	cs := streamhousev1connect.NewClusterServiceClient(c.hc, leader.URL)
	start = time.Now()
	if _, err := cs.Snapshot(ctx, connect.NewRequest(&v1.SnapshotRequest{})); err != nil {
		t.Fatal(err)
	}
	var size int64
	for i, p := range c.controllers {
		if p != leader {
			continue
		}
		snaps, _ := filepath.Glob(filepath.Join(dirs[i], "raft", "snapshots", "*", "state.bin"))
		for _, s := range snaps {
			if st, err := os.Stat(s); err == nil {
				size = max(size, st.Size())
			}
		}
	}
	t.Logf("leader snapshot in %v: %.1f MiB; leader RSS %.0f MiB", time.Since(start), float64(size)/(1<<20), float64(leader.RSS())/(1<<20))

	c4raft := devproc.FreeAddr(t)
	c4 := devproc.StartCmd(t, bin, "controller", "--gossip-listen", "off", "--node-id", "c4", "--data-dir", t.TempDir(), "--raft-listen", c4raft)
	start = time.Now()
	if _, err := cs.AddVoter(ctx, connect.NewRequest(&v1.AddVoterRequest{Id: "c4", RaftAddress: c4raft, ApiAddress: c4.Addr})); err != nil {
		t.Fatal(err)
	}
	lst, err := cs.Status(ctx, connect.NewRequest(&v1.StatusRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	c4s := streamhousev1connect.NewClusterServiceClient(c.hc, c4.URL)
	for {
		st, err := c4s.Status(ctx, connect.NewRequest(&v1.StatusRequest{}))
		if err == nil && st.Msg.AppliedIndex >= lst.Msg.CommitIndex {
			break
		}
		if time.Since(start) > 5*time.Minute {
			t.Fatalf("the new voter did not catch up: %v %v", st, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("new voter restored the snapshot and caught up %v after AddVoter; its RSS %.0f MiB, the leader's %.0f MiB",
		time.Since(start), float64(c4.RSS())/(1<<20), float64(leader.RSS())/(1<<20))
}

// h2c is an HTTP client speaking HTTP/2 without TLS (for gRPC).
func h2c() *http.Client {
	tr := &http.Transport{}
	tr.Protocols = new(http.Protocols)
	tr.Protocols.SetHTTP1(true)
	tr.Protocols.SetUnencryptedHTTP2(true)
	return &http.Client{Transport: tr}
}
