package main

import (
	"fmt"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"

	v1 "github.com/streamhouse/streamhouse/api/gen/streamhouse/v1"
)

func newGroupsDescribeCommand() *cobra.Command {
	var history bool
	c := &cobra.Command{
		Use:   "describe GROUP",
		Short: "Show a consumer group's members, assignment, offsets and lag",
		Long: `Show a consumer group: its state and epochs; each member with its epoch,
subscription, the partitions it owns (and those it is releasing), and its
lag; and each partition with its committed offset, end offset (the high
watermark), lag (end minus committed) and owner. The last line is the
total lag. With --history, also the coordinator's assignment history (the
last 10,000 events).`,
		Example: `  shctl groups describe billing
  shctl groups describe billing --output json | jq .totalLag`,
		Args: exactArgs("GROUP"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			c, srv, err := gatewayClient()
			if err != nil {
				return err
			}
			defer c.Close()
			rctx, cancel := rpcCtx(ctx)
			defer cancel()
			resp, err := c.Groups().DescribeGroup(rctx, connect.NewRequest(&v1.DescribeGroupRequest{GroupId: args[0], IncludeHistory: history}))
			if err != nil {
				return apiError(ctx, err, srv, fmt.Sprintf("describe group %q", args[0]), groupMissing(args[0]))
			}
			m := resp.Msg
			w := cmd.OutOrStdout()
			if jsonOutput() {
				return printProto(w, m)
			}
			t := newTable(w)
			t.row("group:", m.GetGroupId())
			t.row("state:", groupStateName(m.GetState()))
			t.row("group epoch:", m.GetGroupEpoch())
			t.row("assignor:", m.GetAssignor())
			t.row("rebalances:", m.GetRebalances())
			if err := t.flush(); err != nil {
				return err
			}
			fmt.Fprintln(w)
			if len(m.GetMembers()) == 0 {
				fmt.Fprintln(w, "no members")
			} else {
				t = newTable(w, "MEMBER", "INSTANCE", "EPOCH", "SUBSCRIPTION", "ASSIGNED", "RELEASING", "LAG", "LAST HEARTBEAT")
				for _, mem := range m.GetMembers() {
					sub := fmt.Sprint(mem.GetTopics())
					if mem.GetTopicRegex() != "" {
						sub = "/" + mem.GetTopicRegex() + "/"
					}
					seen := fmt.Sprintf("%dms ago", mem.GetLastHeartbeatMsAgo())
					if mem.GetLeft() {
						seen += " (left, static)"
					}
					t.row(mem.GetMemberId(), mem.GetInstanceId(), mem.GetMemberEpoch(), sub, partitionsString(mem.GetAssigned()),
						partitionsString(mem.GetRevoking()), mem.GetLag(), seen)
				}
				if err := t.flush(); err != nil {
					return err
				}
			}
			fmt.Fprintln(w)
			t = newTable(w, "TOPIC", "PARTITION", "COMMITTED", "END OFFSET", "LAG", "OWNER")
			for _, p := range m.GetPartitions() {
				committed := fmt.Sprint(p.GetCommittedOffset())
				if p.GetCommittedOffset() < 0 {
					committed = "-"
				}
				t.row(p.GetTopic(), p.GetPartition(), committed, p.GetEndOffset(), p.GetLag(), p.GetOwner())
			}
			if err := t.flush(); err != nil {
				return err
			}
			fmt.Fprintf(w, "\ntotal lag: %d\n", m.GetTotalLag())
			if history {
				fmt.Fprintln(w)
				t = newTable(w, "INDEX", "TIME", "EVENT", "EPOCH", "MEMBER", "PARTITIONS")
				for _, e := range m.GetHistory() {
					t.row(e.GetIndex(), formatTime(msToTime(e.GetTimeMs())), eventName(e.GetType()), e.GetGroupEpoch(), e.GetMemberId(), partitionsString(e.GetPartitions()))
				}
				return t.flush()
			}
			return nil
		},
	}
	c.Flags().BoolVar(&history, "history", false, "also show the coordinator's assignment history")
	return c
}
