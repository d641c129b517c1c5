package main

import (
	"fmt"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"

	v1 "github.com/streamhouse/streamhouse/api/gen/streamhouse/v1"
)

func newTopicsAlterCommand() *cobra.Command {
	var retention, retentionBytes, maxRecordBytes, maxBatchBytes string
	c := &cobra.Command{
		Use:   "alter NAME [--retention D] [--retention-bytes N] [--max-record-bytes N] [--max-batch-bytes N]",
		Short: "Change a topic's retention and size limits",
		Long: `Change a topic's settings; settings not given keep their value. The
partition count and durability cannot change.`,
		Example: `  shctl topics alter orders --retention 14d
  shctl topics alter orders --retention forever --retention-bytes -1`,
		Args: exactArgs("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			req := &v1.AlterTopicRequest{Name: args[0]}
			f := cmd.Flags()
			if f.Changed("retention") {
				ms, err := parseRetention(retention)
				if err != nil {
					return usagef("--retention: %v", err)
				}
				req.RetentionMs = &ms
			}
			if f.Changed("retention-bytes") {
				n, err := parseBytes(retentionBytes)
				if err != nil {
					return usagef("--retention-bytes: %v", err)
				}
				req.RetentionBytes = &n
			}
			if f.Changed("max-record-bytes") {
				n, err := parseInt32Bytes("max-record-bytes", maxRecordBytes)
				if err != nil {
					return err
				}
				req.MaxRecordBytes = &n
			}
			if f.Changed("max-batch-bytes") {
				n, err := parseInt32Bytes("max-batch-bytes", maxBatchBytes)
				if err != nil {
					return err
				}
				req.MaxBatchBytes = &n
			}
			if req.RetentionMs == nil && req.RetentionBytes == nil && req.MaxRecordBytes == nil && req.MaxBatchBytes == nil {
				return usagef("topics alter: nothing to change; give --retention, --retention-bytes, --max-record-bytes or --max-batch-bytes")
			}
			ctx := cmd.Context()
			c, srv, err := gatewayClient()
			if err != nil {
				return err
			}
			defer c.Close()
			rctx, cancel := rpcCtx(ctx)
			defer cancel()
			resp, err := c.Admin().AlterTopic(rctx, connect.NewRequest(req))
			if err != nil {
				return apiError(ctx, err, srv, fmt.Sprintf("alter topic %q", req.Name), topicMissing(req.Name))
			}
			w := cmd.OutOrStdout()
			if jsonOutput() {
				return printProto(w, resp.Msg.GetTopic())
			}
			fmt.Fprintf(w, "altered topic %s\n", resp.Msg.GetTopic().GetName())
			return printTopicInfo(w, resp.Msg.GetTopic())
		},
	}
	f := c.Flags()
	f.StringVar(&retention, "retention", "", "how long records are kept: a duration like 36h or 7d, or forever")
	f.StringVar(&retentionBytes, "retention-bytes", "", "size kept per partition, e.g. 10GiB; -1 for no limit")
	f.StringVar(&maxRecordBytes, "max-record-bytes", "", "largest record accepted, e.g. 1MiB")
	f.StringVar(&maxBatchBytes, "max-batch-bytes", "", "largest pre-encoded batch accepted, e.g. 8MiB")
	return c
}
