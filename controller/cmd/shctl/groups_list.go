package main

import (
	"fmt"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"

	v1 "github.com/streamhouse/streamhouse/api/gen/streamhouse/v1"
)

func newGroupsListCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List the consumer groups with their state, members and total lag",
		Long: `List every consumer group: its state (empty: no members; reconciling:
members are moving to a new assignment; stable), its member count, group
epoch, assignor and total lag (end offset minus committed offset, summed
over the partitions with a committed offset).`,
		Example: `  shctl groups list
  shctl groups list --output json`,
		Args: exactArgs(),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			c, srv, err := gatewayClient()
			if err != nil {
				return err
			}
			defer c.Close()
			rctx, cancel := rpcCtx(ctx)
			defer cancel()
			resp, err := c.Groups().ListGroups(rctx, connect.NewRequest(&v1.ListGroupsRequest{}))
			if err != nil {
				return apiError(ctx, err, srv, "list groups", "")
			}
			w := cmd.OutOrStdout()
			if jsonOutput() {
				return printProto(w, resp.Msg)
			}
			if len(resp.Msg.GetGroups()) == 0 {
				fmt.Fprintln(w, "no consumer groups")
				return nil
			}
			t := newTable(w, "GROUP", "STATE", "MEMBERS", "EPOCH", "ASSIGNOR", "LAG")
			for _, g := range resp.Msg.GetGroups() {
				t.row(g.GetGroupId(), groupStateName(g.GetState()), g.GetMembers(), g.GetGroupEpoch(), g.GetAssignor(), g.GetLag())
			}
			return t.flush()
		},
	}
}
