package main

import (
	"connectrpc.com/connect"
	"github.com/spf13/cobra"

	v1 "github.com/streamhouse/streamhouse/api/gen/streamhouse/v1"
)

func newTopicsListCommand() *cobra.Command {
	return &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List topics with their settings",
		Example: `  shctl topics list
  shctl topics list --output json | jq -r '.topics[].name'`,
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
			resp, err := c.Admin().ListTopics(rctx, connect.NewRequest(&v1.ListTopicsRequest{}))
			if err != nil {
				return apiError(ctx, err, srv, "list topics", "")
			}
			w := cmd.OutOrStdout()
			if jsonOutput() {
				return printProto(w, resp.Msg)
			}
			t := newTable(w, "NAME", "PARTITIONS", "DURABILITY", "RETENTION", "RETENTION BYTES", "CREATED")
			for _, ti := range resp.Msg.GetTopics() {
				t.row(ti.GetName(), ti.GetPartitions(), durabilityName(ti.GetDurability()),
					retentionString(ti.GetRetentionMs()), bytesString(ti.GetRetentionBytes()), formatTime(ti.GetCreatedAt().AsTime()))
			}
			return t.flush()
		},
	}
}
