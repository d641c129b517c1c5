package runbooks

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/streamhouse/streamhouse/test/devproc"
)

// controllers starts n controllers as one new Raft cluster (no gossip) and
// returns them with the comma-separated API addresses shctl's --controller
// takes.
func startControllers(t *testing.T, n int, args ...string) ([]*devproc.Proc, string) {
	t.Helper()
	var raft, initial []string
	for i := range n {
		raft = append(raft, devproc.FreeAddr(t))
		initial = append(initial, fmt.Sprintf("c%d=%s", i+1, raft[i]))
	}
	var procs []*devproc.Proc
	var addrs []string
	for i := range n {
		p := devproc.StartCmd(t, bin, "controller", append([]string{"--node-id", fmt.Sprintf("c%d", i+1),
			"--data-dir", t.TempDir(), "--raft-listen", raft[i], "--initial-cluster", strings.Join(initial, ","),
			"--gossip-listen", "off"}, args...)...)
		procs = append(procs, p)
		addrs = append(addrs, p.Addr)
	}
	return procs, strings.Join(addrs, ",")
}

// clusterLeader runs `shctl cluster status` against ctl and returns the
// leader id it reports ("" when it shows "(none)") and what shctl printed.
func clusterLeader(t *testing.T, ctl string) (string, shctlResult) {
	t.Helper()
	r := shctlQuiet(t, "", "--controller", ctl, "--timeout", "3s", "cluster", "status")
	for _, line := range strings.Split(r.Stdout, "\n") {
		if v, ok := strings.CutPrefix(line, "leader:"); ok {
			if v = strings.TrimSpace(v); v == "(none)" {
				v = ""
			}
			return v, r
		}
	}
	return "", r
}

// TestControllerFailover reproduces runbooks/controller-failover.md: two of
// three controllers die, so the survivor has no quorum and no leader.
// StreamHouseNoControllerLeader's expression turns true, `shctl cluster
// status` run against the survivor shows "leader: (none)", and
// topic changes fail. The runbook's fix, starting a lost controller again on
// its own data directory and Raft address, restores a quorum: a leader is
// elected, the expression goes false, and `shctl cluster status` names it.
func TestControllerFailover(t *testing.T) {
	t.Parallel()
	ctls, all := startControllers(t, 3)
	pr := startPrometheus(t, targets{"streamhouse-controller": {ctls[0].Addr, ctls[1].Addr, ctls[2].Addr}})
	noLeader := pr.alert("StreamHouseNoControllerLeader", "runbooks/controller-failover.md")
	applySlow := pr.alert("StreamHouseControllerApplySlow", "runbooks/controller-failover.md")
	pr.waitScraped(3)
	pr.waitFalse("StreamHouseNoControllerLeader with 3 controllers", noLeader.Query, 30*time.Second)
	pr.waitFalse("StreamHouseControllerApplySlow with 3 controllers", applySlow.Query, 30*time.Second)

	var leader string
	eventually(t, 30*time.Second, "a leader in shctl cluster status", func() (bool, string) {
		var r shctlResult
		leader, r = clusterLeader(t, all)
		return leader != "" && r.Code == 0, r.Output()
	})
	// Kill the leader and one follower: the survivor is a minority.
	var survivor *devproc.Proc
	var killed []*devproc.Proc
	for i, p := range ctls {
		if survivor == nil && fmt.Sprintf("c%d", i+1) != leader {
			survivor = p
			continue
		}
		p.Kill()
		killed = append(killed, p)
	}
	t.Logf("killed the leader %s and a follower; %s survives", leader, survivor.Addr)

	pr.waitTrue("StreamHouseNoControllerLeader", noLeader.Query, 60*time.Second)
	pr.waitTrue("the survivor's raft_has_leader is 0", `streamhouse_controller_raft_has_leader == 0`, 10*time.Second)
	pr.waitTrue("two controllers down", `count(up{job="streamhouse-controller"} == 0) == 2`, 10*time.Second)
	// shctl against the survivor: "leader: (none)".
	eventually(t, 30*time.Second, "shctl cluster status reports no leader", func() (bool, string) {
		l, r := clusterLeader(t, survivor.Addr)
		return l == "" && r.Code == 0 && strings.Contains(r.Stdout, "(none)"), fmt.Sprintf("leader %q exit %d: %s", l, r.Code, r.Output())
	})
	// The survivor's log names the peers it cannot reach.
	eventually(t, 30*time.Second, "the survivor logs failed vote requests", func() (bool, string) {
		return strings.Contains(survivor.Stderr(), "failed to make requestVote RPC"), ""
	})
	// Writes need a leader: creating a topic fails.
	if r := shctl(t, "", "--gateway", survivor.Addr, "--controller", survivor.Addr, "--timeout", "3s", "topics", "create", "t1", "--partitions", "1"); r.Code == 0 {
		t.Errorf("topics create without a controller leader succeeded: %s", r.Output())
	}

	// The fix: start a lost controller again with its data directory, node
	// id and Raft address (devproc restarts it with the same flags).
	back := killed[1]
	back.Restart()
	pr.waitFalse("StreamHouseNoControllerLeader after a controller is back", noLeader.Query, 60*time.Second)
	eventually(t, 30*time.Second, "shctl cluster status names a leader", func() (bool, string) {
		l, r := clusterLeader(t, survivor.Addr+","+back.Addr)
		return l != "" && r.Code == 0, r.Output()
	})
	if r := shctl(t, "", "--gateway", survivor.Addr, "--timeout", "10s", "topics", "create", "t1", "--partitions", "1"); r.Code != 0 {
		t.Errorf("topics create after the fix: exit %d: %s", r.Code, r.Output())
	}
	// The third one rejoins too: three voters, all with a leader.
	killed[0].Restart()
	pr.waitTrue("all 3 controllers see the leader", `sum(streamhouse_controller_raft_has_leader) == 3`, 60*time.Second)
	pr.waitFalse("StreamHouseControllerApplySlow after the fix", applySlow.Query, 30*time.Second)
}
