package main

import "github.com/spf13/cobra"

func newAgentsUndrainCommand() *cobra.Command {
	return &cobra.Command{
		Use:     "undrain ID",
		Short:   "Let a drained agent be given partitions again",
		Example: `  shctl agents undrain agent-2`,
		Args:    exactArgs("ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return setDraining(cmd.Context(), cmd.OutOrStdout(), args[0], false)
		},
	}
}
