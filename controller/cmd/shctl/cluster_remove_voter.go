package main

import (
	"fmt"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"

	v1 "github.com/streamhouse/streamhouse/api/gen/streamhouse/v1"
)

func newClusterRemoveVoterCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "remove-voter ID",
		Short: "Remove a controller from the Raft configuration",
		Long: `Remove a controller from the Raft configuration. Removing the leader makes
it step down after the change commits. Keep an odd number of voters, and never
remove a majority at once.`,
		Example: `  shctl cluster remove-voter ctl-3`,
		Args:    exactArgs("ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			id := args[0]
			cc, srv, closeIdle, err := clusterClient()
			if err != nil {
				return err
			}
			defer closeIdle()
			ctx, cancel := rpcCtx(cmd.Context())
			defer cancel()
			if _, err := cc.RemoveVoter(ctx, connect.NewRequest(&v1.RemoveVoterRequest{Id: id})); err != nil {
				return apiError(cmd.Context(), err, srv, fmt.Sprintf("remove voter %q", id), fmt.Sprintf("controller %q is not a voter", id))
			}
			if jsonOutput() {
				return printJSON(cmd.OutOrStdout(), map[string]string{"removed": id})
			}
			fmt.Fprintf(cmd.OutOrStdout(), "removed voter %s\n", id)
			return nil
		},
	}
}
