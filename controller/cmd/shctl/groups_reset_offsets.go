package main

import (
	"fmt"
	"time"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"

	v1 "github.com/streamhouse/streamhouse/api/gen/streamhouse/v1"
)

func newGroupsResetOffsetsCommand() *cobra.Command {
	var (
		topic            string
		partitions       []int32
		earliest, latest bool
		toTimestamp      string
		toOffset         int64
		dryRun           bool
	)
	c := &cobra.Command{
		Use:   "reset-offsets GROUP --topic T [--partition P] (--to-earliest | --to-latest | --to-timestamp TIME | --to-offset N) [--dry-run]",
		Short: "Set a consumer group's committed offsets (only while it has no members)",
		Long: `Set a consumer group's committed offsets of a topic (every partition, or
the ones given with --partition) to the earliest readable offset, the end
offset, the first batch holding records at or after a time, or an offset
(clamped to the partition's range). As in Kafka, this works only while the
group has no members: stop its consumers first. A group that does not exist
is created. --dry-run shows the new offsets without storing them.

--to-timestamp takes RFC 3339 (2026-01-02T15:04:05Z) or Unix milliseconds.
The time resolution is a stored batch: the offset is the start of the first
batch whose newest record is at or after the time.`,
		Example: `  shctl groups reset-offsets billing --topic orders --to-earliest --dry-run
  shctl groups reset-offsets billing --topic orders --partition 3 --to-offset 1200
  shctl groups reset-offsets billing --topic orders --to-timestamp 2026-01-02T15:04:05Z`,
		Args: exactArgs("GROUP"),
		RunE: func(cmd *cobra.Command, args []string) error {
			req := &v1.ResetOffsetsRequest{GroupId: args[0], Topic: topic, Partitions: partitions, DryRun: dryRun}
			n := 0
			if earliest {
				n++
				req.To = &v1.ResetOffsetsRequest_Earliest{Earliest: true}
			}
			if latest {
				n++
				req.To = &v1.ResetOffsetsRequest_Latest{Latest: true}
			}
			if cmd.Flags().Changed("to-timestamp") {
				n++
				ms, err := parseTimestamp(toTimestamp)
				if err != nil {
					return usagef("--to-timestamp %q: %v", toTimestamp, err)
				}
				req.To = &v1.ResetOffsetsRequest_TimestampMs{TimestampMs: ms}
			}
			if cmd.Flags().Changed("to-offset") {
				n++
				if toOffset < 0 {
					return usagef("--to-offset %d is negative", toOffset)
				}
				req.To = &v1.ResetOffsetsRequest_Offset{Offset: toOffset}
			}
			switch {
			case topic == "":
				return usagef("--topic is required")
			case n != 1:
				return usagef("give exactly one of --to-earliest, --to-latest, --to-timestamp or --to-offset")
			}
			ctx := cmd.Context()
			c, srv, err := gatewayClient()
			if err != nil {
				return err
			}
			defer c.Close()
			rctx, cancel := rpcCtx(ctx)
			defer cancel()
			resp, err := c.Groups().ResetOffsets(rctx, connect.NewRequest(req))
			if err != nil {
				return apiError(ctx, err, srv, fmt.Sprintf("reset offsets of group %q", args[0]), topicMissing(topic))
			}
			w := cmd.OutOrStdout()
			if jsonOutput() {
				return printProto(w, resp.Msg)
			}
			t := newTable(w, "TOPIC", "PARTITION", "PREVIOUS OFFSET", "NEW OFFSET")
			for _, o := range resp.Msg.GetOffsets() {
				prev := fmt.Sprint(o.GetPreviousOffset())
				if o.GetPreviousOffset() < 0 {
					prev = "-"
				}
				t.row(o.GetTopic(), o.GetPartition(), prev, o.GetNewOffset())
			}
			if err := t.flush(); err != nil {
				return err
			}
			if dryRun {
				fmt.Fprintln(w, "dry run: nothing was changed")
			} else {
				fmt.Fprintf(w, "reset %d partition(s) of group %s\n", len(resp.Msg.GetOffsets()), args[0])
			}
			return nil
		},
	}
	f := c.Flags()
	f.StringVar(&topic, "topic", "", "topic whose offsets to reset (required)")
	f.Int32SliceVar(&partitions, "partition", nil, "partitions to reset (repeat or comma-separate; default all)")
	f.BoolVar(&earliest, "to-earliest", false, "reset to the earliest readable offset")
	f.BoolVar(&latest, "to-latest", false, "reset to the end offset")
	f.StringVar(&toTimestamp, "to-timestamp", "", "reset to the first batch at or after this time (RFC 3339 or Unix ms)")
	f.Int64Var(&toOffset, "to-offset", 0, "reset to this offset")
	f.BoolVar(&dryRun, "dry-run", false, "show the new offsets without storing them")
	return c
}

// parseTimestamp parses RFC 3339 or Unix milliseconds.
func parseTimestamp(s string) (int64, error) {
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t.UnixMilli(), nil
	}
	var ms int64
	if _, err := fmt.Sscanf(s, "%d", &ms); err == nil && fmt.Sprint(ms) == s {
		return ms, nil
	}
	return 0, fmt.Errorf("want RFC 3339 (2026-01-02T15:04:05Z) or Unix milliseconds")
}

func msToTime(ms int64) time.Time { return time.UnixMilli(ms) }

// eventName is the short name of an assignment event type.
func eventName(t v1.AssignmentEventType) string {
	switch t {
	case v1.AssignmentEventType_ASSIGNMENT_EVENT_TYPE_JOINED:
		return "joined"
	case v1.AssignmentEventType_ASSIGNMENT_EVENT_TYPE_LEFT:
		return "left"
	case v1.AssignmentEventType_ASSIGNMENT_EVENT_TYPE_EVICTED:
		return "evicted"
	case v1.AssignmentEventType_ASSIGNMENT_EVENT_TYPE_ASSIGNED:
		return "assigned"
	case v1.AssignmentEventType_ASSIGNMENT_EVENT_TYPE_REVOKING:
		return "revoking"
	case v1.AssignmentEventType_ASSIGNMENT_EVENT_TYPE_RELEASED:
		return "released"
	case v1.AssignmentEventType_ASSIGNMENT_EVENT_TYPE_EPOCH:
		return "new epoch"
	case v1.AssignmentEventType_ASSIGNMENT_EVENT_TYPE_STABLE:
		return "stable"
	case v1.AssignmentEventType_ASSIGNMENT_EVENT_TYPE_STATIC_LEFT:
		return "static leave"
	case v1.AssignmentEventType_ASSIGNMENT_EVENT_TYPE_STATIC_REJOINED:
		return "static rejoin"
	}
	return t.String()
}
