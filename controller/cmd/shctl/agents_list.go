package main

import (
	"github.com/spf13/cobra"

	v1 "github.com/streamhouse/streamhouse/api/gen/streamhouse/v1"
)

func newAgentsListCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List the agents the controller leader knows, with their partitions and heartbeats",
		Example: `  shctl agents list
  shctl agents list --output json | jq -r '.agents[].id'`,
		Args: exactArgs(),
		RunE: func(cmd *cobra.Command, args []string) error {
			st, err := clusterStatus(cmd.Context())
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
