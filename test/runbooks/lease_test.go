package runbooks

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	v1 "github.com/streamhouse/streamhouse/api/gen/streamhouse/v1"
	"github.com/streamhouse/streamhouse/pkg/objstore/s3test"
	"github.com/streamhouse/streamhouse/test/devproc"
)

// lease is one row of `shctl leases list --output json`.
type lease struct {
	Topic     string `json:"topic"`
	Partition int32  `json:"partition"`
	Holder    string `json:"holder"`
	Address   string `json:"address"`
	Epoch     int64  `json:"epoch"`
}

// listLeases runs `shctl leases list TOPIC --output json`.
func listLeases(t *testing.T, gateway, topic string) []lease {
	t.Helper()
	r := shctlQuiet(t, "", "--gateway", gateway, "leases", "list", topic, "--output", "json")
	if r.Code != 0 {
		t.Fatalf("shctl leases list: exit %d: %s", r.Code, r.Output())
	}
	var out struct {
		Leases []lease `json:"leases"`
	}
	if err := json.Unmarshal([]byte(r.Stdout), &out); err != nil {
		t.Fatalf("shctl leases list --output json: %v\n%s", err, r.Stdout)
	}
	return out.Leases
}

// listAgents runs `shctl agents list --output json` against a controller.
func listAgents(t *testing.T, controller string) *v1.StatusResponse {
	t.Helper()
	r := shctlQuiet(t, "", "--controller", controller, "agents", "list", "--output", "json")
	if r.Code != 0 {
		t.Fatalf("shctl agents list: exit %d: %s", r.Code, r.Output())
	}
	var st v1.StatusResponse
	if err := protojson.Unmarshal([]byte(r.Stdout), &st); err != nil {
		t.Fatalf("shctl agents list --output json: %v\n%s", err, r.Stdout)
	}
	return &st
}

// TestLeaseRebalancing reproduces runbooks/lease-rebalancing.md on a
// deployment of one controller, two agents (sharing an S3 bucket) and a
// gateway: an agent holding partitions with records not yet uploaded is
// frozen (SIGSTOP, as a long GC pause or a stalled disk would). Its
// heartbeat age grows (streamhouse_controller_agent_heartbeat_age_seconds,
// the metric of StreamHouseAgentHeartbeatMissing, and HEARTBEAT AGO in
// `shctl agents list`), its leases expire and `shctl leases list` shows its
// partitions on the other agent with a higher epoch. When it wakes, its
// late commit is fenced: StreamHouseLeaseConflicts's expression turns true.
// The runbook's fix, draining the agent (`shctl agents drain`) while its
// cause is found, then undraining it, leaves it holding nothing, stops the
// fencing and keeps writes flowing.
func TestLeaseRebalancing(t *testing.T) {
	t.Parallel()
	const leaseDur = 3 * time.Second
	s3 := s3test.Start(t)
	raft := devproc.FreeAddr(t)
	ctl := devproc.StartCmd(t, bin, "controller", "--node-id", "c1", "--data-dir", t.TempDir(), "--raft-listen", raft,
		"--initial-cluster", "c1="+raft, "--gossip-listen", "off", "--lease-duration", leaseDur.String())
	var agents []*devproc.Proc
	for range 2 {
		// A 1 s flush interval: the frozen agent holds acknowledged-to-WAL
		// records it has not committed, and tries to commit them late.
		agents = append(agents, devproc.StartCmd(t, bin, "agent", append([]string{"--data-dir", t.TempDir(),
			"--controllers", ctl.Addr, "--gossip-listen", "off", "--flush-interval", "1s"}, s3Args(s3, s3.Endpoint)...)...))
	}
	gwp := devproc.StartCmd(t, bin, "gateway", "--controllers", ctl.Addr, "--gossip-listen", "off")
	gw := hostPort(gwp)
	if r := shctl(t, "", "--gateway", gw, "--controller", ctl.Addr, "topics", "create", "orders", "--partitions", "4"); r.Code != 0 {
		t.Fatalf("create topic: %s", r.Output())
	}
	pr := startPrometheus(t, targets{
		"streamhouse-controller": {ctl.Addr},
		"streamhouse-agent":      {agents[0].Addr, agents[1].Addr},
		"streamhouse-gateway":    {gwp.Addr},
	})
	conflicts := pr.alert("StreamHouseLeaseConflicts", "runbooks/lease-rebalancing.md")
	heartbeat := pr.alert("StreamHouseAgentHeartbeatMissing", "runbooks/lease-rebalancing.md")
	pr.waitScraped(4)
	pr.waitFalse("StreamHouseLeaseConflicts before the pause", conflicts.Query, 30*time.Second)
	pr.waitFalse("StreamHouseAgentHeartbeatMissing before the pause", heartbeat.Query, 30*time.Second)

	// Both agents hold partitions.
	var before []lease
	eventually(t, 30*time.Second, "leases on both agents", func() (bool, string) {
		before = listLeases(t, gw, "orders")
		holders := map[string]bool{}
		for _, l := range before {
			holders[l.Address] = l.Holder != "" && l.Holder != "-"
		}
		return holders[agents[0].Addr] && holders[agents[1].Addr], fmt.Sprint(before)
	})
	zombie := agents[0]
	var zombieID string
	owned := map[int32]int64{}
	for _, l := range before {
		if l.Address == zombie.Addr {
			zombieID = l.Holder
			owned[l.Partition] = l.Epoch
		}
	}

	c := newClients(t, gwp.URL)
	tr := startTrickle(t, c, "orders", 4, 5, 0, 20*time.Millisecond, v1.Acks_ACKS_WAL)
	eventually(t, 30*time.Second, "writes flowing", func() (bool, string) { return tr.ok.Load() > 20, fmt.Sprint(tr.ok.Load()) })

	zombie.Pause()
	paused := time.Now()
	// Its leases expire and move to the other agent with a new epoch.
	var after []lease
	eventually(t, 3*leaseDur+15*time.Second, "shctl leases list shows the frozen agent's partitions moved", func() (bool, string) {
		after = listLeases(t, gw, "orders")
		for _, l := range after {
			if e, ok := owned[l.Partition]; ok && (l.Address != agents[1].Addr || l.Epoch <= e) {
				return false, fmt.Sprint(after)
			}
		}
		return true, ""
	})
	t.Logf("partitions %v moved off the frozen agent %s after %v: %v", owned, zombieID, time.Since(paused).Round(100*time.Millisecond), after)
	shctl(t, "", "--gateway", gw, "leases", "list", "orders")
	// Its heartbeat age grows: what StreamHouseAgentHeartbeatMissing
	// compares with 120 s.
	pr.waitTrue("the frozen agent's heartbeat age passes the lease duration",
		fmt.Sprintf(`streamhouse_controller_agent_heartbeat_age_seconds{agent=%q} > %g`, zombieID, leaseDur.Seconds()), 30*time.Second)
	// shctl agents list: the frozen agent holds nothing, and its HEARTBEAT
	// AGO is past the lease (the leader heard from it in its own term).
	for _, a := range listAgents(t, ctl.Addr).Agents {
		if a.Id == zombieID && (a.Partitions != 0 || a.LastHeartbeatMsAgo < leaseDur.Milliseconds()) {
			t.Errorf("shctl agents list: the frozen agent holds %d partitions, heartbeat %d ms ago; want 0 and past the lease", a.Partitions, a.LastHeartbeatMsAgo)
		}
	}
	shctl(t, "", "--controller", ctl.Addr, "agents", "list")

	zombie.Resume()
	pr.waitTrue("StreamHouseLeaseConflicts", conflicts.Query, 30*time.Second)
	eventually(t, 15*time.Second, "the zombie logs that it dropped its partitions", func() (bool, string) {
		return strings.Contains(zombie.Stderr(), "dropped partition"), ""
	})

	// The fix: drain the agent while the cause is found; it holds nothing
	// and is given nothing.
	if r := shctl(t, "", "--controller", ctl.Addr, "agents", "drain", zombieID); r.Code != 0 {
		t.Fatalf("shctl agents drain: exit %d: %s", r.Code, r.Output())
	}
	eventually(t, 30*time.Second, "the drained agent holds no partition", func() (bool, string) {
		for _, a := range listAgents(t, ctl.Addr).Agents {
			if a.Id == zombieID {
				return a.Draining && a.Partitions == 0, a.String()
			}
		}
		return false, "agent not listed"
	})
	// No more fenced commits: the counter stops moving.
	pr.waitTrue("no fenced commit in the last 10 s", `sum(increase(streamhouse_controller_fenced_commits_total[10s])) == 0`, 30*time.Second)
	ok0 := tr.ok.Load()
	eventually(t, 30*time.Second, "writes keep flowing", func() (bool, string) { return tr.ok.Load() > ok0+50, fmt.Sprint(tr.ok.Load() - ok0) })
	if r := shctl(t, "", "--controller", ctl.Addr, "agents", "undrain", zombieID); r.Code != 0 {
		t.Fatalf("shctl agents undrain: exit %d: %s", r.Code, r.Output())
	}
	shctl(t, "", "--controller", ctl.Addr, "agents", "list")
	tr.halt()
	codes, last := tr.errs()
	t.Logf("writes: %d accepted, failed by code %v (last: %v)", tr.ok.Load(), codes, last)
}
