package main

import (
	"fmt"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"

	v1 "github.com/streamhouse/streamhouse/api/gen/streamhouse/v1"
)

func newTopicsDescribeCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "describe NAME",
		Short: "Show a topic's settings and the state of each partition",
		Long: `Show a topic's settings and, per partition: the start offset (first
readable), the high watermark (consumers read below it), the committed end
offset (what the controller's object index holds), and the agent holding the
partition's write lease with its epoch.`,
		Example: `  shctl topics describe orders
  shctl topics describe orders --output json | jq '.partitions[].highWatermark'`,
		Args: exactArgs("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			c, srv, err := gatewayClient()
			if err != nil {
				return err
			}
			defer c.Close()
			rctx, cancel := rpcCtx(ctx)
			defer cancel()
			resp, err := c.Admin().DescribeTopic(rctx, connect.NewRequest(&v1.DescribeTopicRequest{Name: args[0]}))
			if err != nil {
				return apiError(ctx, err, srv, fmt.Sprintf("describe topic %q", args[0]), topicMissing(args[0]))
			}
			w := cmd.OutOrStdout()
			if jsonOutput() {
				return printProto(w, resp.Msg)
			}
			if err := printTopicInfo(w, resp.Msg.GetTopic()); err != nil {
				return err
			}
			fmt.Fprintln(w)
			t := newTable(w, "PARTITION", "START OFFSET", "HIGH WATERMARK", "COMMITTED END", "LEADER AGENT", "ADDRESS", "EPOCH")
			for _, p := range resp.Msg.GetPartitions() {
				t.row(p.GetPartition(), p.GetStartOffset(), p.GetHighWatermark(), p.GetCommittedEndOffset(),
					p.GetLeaderAgentId(), p.GetLeaderAddress(), p.GetLeaderEpoch())
			}
			return t.flush()
		},
	}
}
