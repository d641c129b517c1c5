package controller

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	v1 "github.com/streamhouse/streamhouse/api/gen/streamhouse/v1"
	"github.com/streamhouse/streamhouse/api/gen/streamhouse/v1/streamhousev1connect"
	"github.com/streamhouse/streamhouse/controller/fsm"
)

// TestLargeSnapshotRestore fills a three-voter cluster with 1,000,000
// object-index entries, snapshots the leader, and adds a fourth voter that
// must restore from the snapshot. It reports the snapshot size, the time the
// new voter took to restore, and the memory in use. It takes about a minute,
// so it runs when STREAMHOUSE_LARGE_SNAPSHOT=1 (task bench:snapshot).
func TestLargeSnapshotRestore(t *testing.T) {
	if os.Getenv("STREAMHOUSE_LARGE_SNAPSHOT") == "" {
		t.Skip("set STREAMHOUSE_LARGE_SNAPSHOT=1 to run (about a minute)")
	}
	const entries, perCommit, partitions = 1_000_000, 2000, 100
	ms, _ := startThree(t)
	waitFor(t, 10*time.Second, "a leader", func() bool { return leaderOf(ms) != nil })
	leader := leaderOf(ms)
	ctx := context.Background()
	if _, err := leader.node.Admin().CreateTopic(ctx, connect.NewRequest(&v1.CreateTopicRequest{Name: "big", Partitions: partitions})); err != nil {
		t.Fatal(err)
	}
	grant := fsm.GrantLeases{AgentID: "a", Incarnation: "1", NowMs: 0, ExpiresMs: 1 << 62}
	for p := range int32(partitions) {
		grant.Partitions = append(grant.Partitions, fsm.PartitionRef{Topic: "big", Partition: p})
	}
	if _, err := leader.node.apply(ctx, fsm.GrantLeasesType, grant); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	ends := make([]int64, partitions)
	for c := 0; c < entries/perCommit; c++ {
		cmd := fsm.CommitObject{AgentID: "a", Key: fmt.Sprintf("00/2026112700/a-%08d.obj", c)}
		for i := range perCommit {
			p := int32(i % partitions)
			cmd.Sections = append(cmd.Sections, fsm.CommitSection{Topic: "big", Partition: p, Section: fsm.Section{
				Epoch: 1, BaseOffset: ends[p], EndOffset: ends[p] + 1000, Position: int64(i) * 4096, Length: 4096, MaxTimestampMs: 1}})
			ends[p] += 1000
		}
		if _, err := leader.node.apply(ctx, fsm.CommitObjectType, cmd); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("committed %d index entries in %v", entries, time.Since(start))
	start = time.Now()
	if err := leader.node.Snapshot(); err != nil {
		t.Fatal(err)
	}
	snaps, _ := filepath.Glob(filepath.Join(leader.dir, "raft", "snapshots", "*", "state.bin"))
	var size int64
	for _, s := range snaps {
		if st, err := os.Stat(s); err == nil && st.Size() > size {
			size = st.Size()
		}
	}
	t.Logf("leader snapshot took %v, %.1f MiB on disk", time.Since(start), float64(size)/(1<<20))

	c4 := newMember(t, "c4")
	t.Cleanup(func() { c4.stop(); c4.srv.Close() })
	c4.start(t, nil)
	hc := h2cClient()
	defer hc.CloseIdleConnections()
	cluster := streamhousev1connect.NewClusterServiceClient(hc, "http://"+leader.srv.Listener.Addr().String())
	start = time.Now()
	if _, err := cluster.AddVoter(ctx, connect.NewRequest(&v1.AddVoterRequest{Id: "c4", RaftAddress: c4.raftLn.Addr().String()})); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Minute, "the new voter to restore the snapshot", func() bool {
		n := 0
		c4.node.fsm.Read(func(s *fsm.State) {
			if tp, ok := s.Topics["big"]; ok {
				for _, p := range tp.Partitions {
					n += len(p.Sections)
				}
			}
		})
		return n == entries
	})
	t.Logf("new voter restored %d entries %v after AddVoter", entries, time.Since(start))
	var mem runtime.MemStats
	runtime.ReadMemStats(&mem)
	status, _ := os.ReadFile("/proc/self/status")
	rss := ""
	for _, line := range strings.Split(string(status), "\n") {
		if strings.HasPrefix(line, "VmRSS") {
			rss = strings.TrimSpace(strings.TrimPrefix(line, "VmRSS:"))
		}
	}
	t.Logf("memory: Go heap in use %.0f MiB; process RSS %s (4 voters in this one test process)", float64(mem.HeapInuse)/(1<<20), rss)
}
