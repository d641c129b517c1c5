package main

import (
	"fmt"
	"strconv"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"

	v1 "github.com/streamhouse/streamhouse/api/gen/streamhouse/v1"
)

func newLeasesReleaseCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "release TOPIC PARTITION",
		Short: "Take a partition's lease away from its holder now",
		Long: `Take a partition's write lease away from its holder now (through a
controller). The controller hands the partition to a live agent with a new
epoch, which fences the old holder: its later commits are rejected. Records
the old holder acknowledged with acks=durable are safe; on a wal topic, what
it had not uploaded yet may be lost (see DESIGN.md, unclean handoff).`,
		Example: `  shctl leases release orders 3`,
		Args:    exactArgs("TOPIC", "PARTITION"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			topic := args[0]
			p, err := strconv.ParseInt(args[1], 10, 32)
			if err != nil || p < 0 {
				return usagef("PARTITION %q: want a partition number (0, 1, ...)", args[1])
			}
			part := int32(p)
			cc, srv, closeIdle, err := clusterClient()
			if err != nil {
				return err
			}
			defer closeIdle()
			rctx, cancel := rpcCtx(ctx)
			defer cancel()
			resp, err := cc.ReleasePartition(rctx, connect.NewRequest(&v1.ReleasePartitionRequest{Topic: topic, Partition: part}))
			if err != nil {
				msg := ""
				if connect.CodeOf(err) == connect.CodeNotFound {
					msg = partitionMissing(cmd, topic, part)
				}
				return apiError(ctx, err, srv, fmt.Sprintf("release %s/%d", topic, part), msg)
			}
			prev := resp.Msg.GetPreviousHolder()
			w := cmd.OutOrStdout()
			if jsonOutput() {
				return printJSON(w, map[string]any{"topic": topic, "partition": part, "previousHolder": prev})
			}
			if prev == "" {
				fmt.Fprintf(w, "released %s/%d (no agent held it)\n", topic, part)
			} else {
				fmt.Fprintf(w, "released %s/%d from agent %s; the next holder gets a new epoch\n", topic, part, prev)
			}
			return nil
		},
	}
}

// partitionMissing tells whether the topic or only the partition is
// missing, asking the gateway.
func partitionMissing(cmd *cobra.Command, topic string, part int32) string {
	c, _, err := gatewayClient()
	if err == nil {
		defer c.Close()
		ctx, cancel := rpcCtx(cmd.Context())
		defer cancel()
		resp, err := c.Admin().DescribeTopic(ctx, connect.NewRequest(&v1.DescribeTopicRequest{Name: topic}))
		switch {
		case connect.CodeOf(err) == connect.CodeNotFound:
			return topicMissing(topic)
		case err == nil:
			return fmt.Sprintf("topic %q has no partition %d (it has %d)", topic, part, resp.Msg.GetTopic().GetPartitions())
		}
	}
	return fmt.Sprintf("topic %q or its partition %d does not exist", topic, part)
}
