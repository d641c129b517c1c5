package main

import (
	"github.com/spf13/cobra"

	v1 "github.com/streamhouse/streamhouse/api/gen/streamhouse/v1"
)

func newAgentsListCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List the agents the controller leader knows, with their partitions and heartbeats",
		Long: `List the agents the controller leader knows. The request is answered by the
leader, even when --controller names a follower (which forwards it).

Columns:
  PARTITIONS     partitions it holds a valid lease on
  HEARTBEAT AGO  time since the leader last heard from the agent; it keeps
                 growing for an agent that stopped heartbeating (its leases
                 lapse after the lease duration and its partitions move).
                 "-": not heard from since this leader took over (a new
                 leader learns within one heartbeat interval), or the agent
                 shut down cleanly and released its leases.
  DRAINING       it gives up its partitions and gets no new ones`,
		Example: `  shctl agents list
  shctl agents list --output json | jq -r '.agents[].id'`,
		Args: exactArgs(),
		RunE: func(cmd *cobra.Command, args []string) error {
			st, err := clusterStatus(cmd.Context(), true)
			if err != nil {
				return err
			}
			if jsonOutput() {
				return printProto(cmd.OutOrStdout(), &v1.StatusResponse{Agents: st.GetAgents()})
			}
			return printAgents(cmd.OutOrStdout(), st.GetAgents())
		},
	}
}
