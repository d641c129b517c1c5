package main

import (
	"fmt"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"

	v1 "github.com/streamhouse/streamhouse/api/gen/streamhouse/v1"
)

// lease is one row of `leases list`.
type lease struct {
	Topic     string `json:"topic"`
	Partition int32  `json:"partition"`
	Holder    string `json:"holder"`
	Address   string `json:"address"`
	Epoch     int64  `json:"epoch"`
}

func newLeasesListCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "list [TOPIC]",
		Short: "List the write lease of every partition (of one topic, or all)",
		Long: `List the write lease of every partition: which agent holds it, at which
address, and the lease epoch (it grows every time the lease changes hands, and
fences the previous holder). Read from the gateway's DescribeTopic; a
partition no agent holds shows "-".`,
		Example: `  shctl leases list
  shctl leases list orders --output json`,
		Args: rangeArgs(0, 1, "[TOPIC]"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			c, srv, err := gatewayClient()
			if err != nil {
				return err
			}
			defer c.Close()
			var topics []string
			if len(args) == 1 {
				topics = args
			} else {
				rctx, cancel := rpcCtx(ctx)
				resp, err := c.Admin().ListTopics(rctx, connect.NewRequest(&v1.ListTopicsRequest{}))
				cancel()
				if err != nil {
					return apiError(ctx, err, srv, "list topics", "")
				}
				for _, t := range resp.Msg.GetTopics() {
					topics = append(topics, t.GetName())
				}
			}
			leases := []lease{}
			for _, name := range topics {
				rctx, cancel := rpcCtx(ctx)
				resp, err := c.Admin().DescribeTopic(rctx, connect.NewRequest(&v1.DescribeTopicRequest{Name: name}))
				cancel()
				if err != nil {
					if len(args) == 0 && connect.CodeOf(err) == connect.CodeNotFound {
						continue // deleted since the listing
					}
					return apiError(ctx, err, srv, fmt.Sprintf("describe topic %q", name), topicMissing(name))
				}
				for _, p := range resp.Msg.GetPartitions() {
					leases = append(leases, lease{Topic: name, Partition: p.GetPartition(),
						Holder: p.GetLeaderAgentId(), Address: p.GetLeaderAddress(), Epoch: p.GetLeaderEpoch()})
				}
			}
			w := cmd.OutOrStdout()
			if jsonOutput() {
				return printJSON(w, map[string]any{"leases": leases})
			}
			t := newTable(w, "TOPIC", "PARTITION", "HOLDER", "ADDRESS", "EPOCH")
			for _, l := range leases {
				t.row(l.Topic, l.Partition, l.Holder, l.Address, l.Epoch)
			}
			return t.flush()
		},
	}
}
