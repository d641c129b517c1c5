package main

import (
	"fmt"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"

	v1 "github.com/streamhouse/streamhouse/api/gen/streamhouse/v1"
)

func newGroupsDeleteCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "delete GROUP",
		Short: "Delete a consumer group and its committed offsets",
		Long: `Delete a consumer group and its committed offsets. Like Kafka, only a group
without members can be deleted: stop its consumers first.`,
		Example: `  shctl groups delete billing`,
		Args:    exactArgs("GROUP"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			c, srv, err := gatewayClient()
			if err != nil {
				return err
			}
			defer c.Close()
			rctx, cancel := rpcCtx(ctx)
			defer cancel()
			if _, err := c.Groups().DeleteGroup(rctx, connect.NewRequest(&v1.DeleteGroupRequest{GroupId: args[0]})); err != nil {
				return apiError(ctx, err, srv, fmt.Sprintf("delete group %q", args[0]), groupMissing(args[0]))
			}
			if jsonOutput() {
				return printJSON(cmd.OutOrStdout(), map[string]string{"deleted": args[0]})
			}
			fmt.Fprintf(cmd.OutOrStdout(), "deleted group %s\n", args[0])
			return nil
		},
	}
}
