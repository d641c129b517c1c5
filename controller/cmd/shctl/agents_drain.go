package main

import "github.com/spf13/cobra"

func newAgentsDrainCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "drain ID",
		Short: "Move every partition off an agent and give it no new ones",
		Long: `Mark an agent draining: it uploads and commits what its WAL holds, gives up
its partition leases (other agents take them with a new epoch) and is given
no new partitions until undrained. Use before taking a machine away.`,
		Example: `  shctl agents drain agent-2
  shctl agents list   # wait for PARTITIONS to reach 0`,
		Args: exactArgs("ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return setDraining(cmd.Context(), cmd.OutOrStdout(), args[0], true)
		},
	}
}
