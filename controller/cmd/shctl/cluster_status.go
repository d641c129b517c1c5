package main

import (
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

func newClusterStatusCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Show the voters, the leader, Raft's term and indexes, the agents and the gateways",
		Long: `Show the controller cluster as the controller that answers sees it: each
voter (the leader marked with *), Raft's term, commit and applied index, and
each agent with the partitions it holds, the age of its last heartbeat and
whether it is draining. Heartbeats reach only the leader: when a follower
answers, every HEARTBEAT AGO is "-" (shctl agents list always asks the
leader).`,
		Example: `  shctl cluster status
  shctl cluster status --output json | jq .leaderId`,
		Args: exactArgs(),
		RunE: func(cmd *cobra.Command, args []string) error {
			st, err := clusterStatus(cmd.Context(), false)
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			if jsonOutput() {
				return printProto(w, st)
			}
			leader := st.GetLeaderId()
			if leader == "" {
				leader = "(none)"
			}
			fmt.Fprintf(w, "answered by: %s\nleader:      %s\nterm:        %d\ncommit:      %d\napplied:     %d\n\n",
				st.GetNodeId(), leader, st.GetTerm(), st.GetCommitIndex(), st.GetAppliedIndex())
			t := newTable(w, "VOTER", "LEADER", "SUFFRAGE", "RAFT ADDRESS", "API ADDRESS")
			for _, v := range st.GetVoters() {
				mark := ""
				if v.GetLeader() {
					mark = "*"
				}
				t.row(v.GetId(), mark, v.GetSuffrage(), v.GetRaftAddress(), v.GetApiAddress())
			}
			if err := t.flush(); err != nil {
				return err
			}
			fmt.Fprintln(w)
			if err := printAgents(w, st.GetAgents()); err != nil {
				return err
			}
			if gws := st.GetGateways(); len(gws) > 0 {
				fmt.Fprintf(w, "\ngateways:    %s\n", strings.Join(gws, ", "))
			} else {
				fmt.Fprintf(w, "\ngateways:    (none known; gateways announce themselves through gossip)\n")
			}
			return nil
		},
	}
}

// heartbeatAge formats AgentStatus.last_heartbeat_ms_ago.
func heartbeatAge(ms int64) string {
	if ms < 0 {
		return "-"
	}
	return (time.Duration(ms) * time.Millisecond).Round(time.Millisecond).String()
}
