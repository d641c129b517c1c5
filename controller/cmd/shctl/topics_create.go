package main

import (
	"fmt"
	"math"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"

	v1 "github.com/streamhouse/streamhouse/api/gen/streamhouse/v1"
)

func newTopicsCreateCommand() *cobra.Command {
	var (
		partitions                                  int32
		durability, retention                       string
		retentionBytes, maxRecordBytes, maxBatchSzs string
	)
	c := &cobra.Command{
		Use:   "create NAME --partitions N",
		Short: "Create a topic",
		Long: `Create a topic. The partition count and durability cannot change later.

--durability durable (the default) makes acks wait for the object store and
the controller, and consumers see records once they are there; wal acks after
the agent's WAL fsync and lets consumers see records at once (an agent whose
disk is lost loses what it had not uploaded).

--retention is a duration (36h, 7d) or forever; --retention-bytes and
--max-record-bytes take sizes like 1048576, 512KiB or 10GiB (-1: no limit).`,
		Example: `  shctl topics create orders --partitions 6
  shctl topics create clicks --partitions 12 --durability wal --retention 1d --retention-bytes 50GiB`,
		Args: exactArgs("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			req := &v1.CreateTopicRequest{Name: args[0], Partitions: partitions}
			if !cmd.Flags().Changed("partitions") {
				return usagef("topics create needs --partitions N")
			}
			switch durability {
			case "durable", "":
				req.Durability = v1.Durability_DURABILITY_DURABLE
			case "wal":
				req.Durability = v1.Durability_DURABILITY_WAL
			default:
				return usagef("--durability %q: use durable or wal", durability)
			}
			if retention != "" {
				ms, err := parseRetention(retention)
				if err != nil {
					return usagef("--retention: %v", err)
				}
				req.RetentionMs = ms
			}
			if retentionBytes != "" {
				n, err := parseBytes(retentionBytes)
				if err != nil {
					return usagef("--retention-bytes: %v", err)
				}
				req.RetentionBytes = n
			}
			var err error
			if req.MaxRecordBytes, err = parseInt32Bytes("max-record-bytes", maxRecordBytes); err != nil {
				return err
			}
			if req.MaxBatchBytes, err = parseInt32Bytes("max-batch-bytes", maxBatchSzs); err != nil {
				return err
			}
			ctx := cmd.Context()
			c, srv, err := gatewayClient()
			if err != nil {
				return err
			}
			defer c.Close()
			rctx, cancel := rpcCtx(ctx)
			defer cancel()
			resp, err := c.Admin().CreateTopic(rctx, connect.NewRequest(req))
			if err != nil {
				return apiError(ctx, err, srv, fmt.Sprintf("create topic %q", req.Name), "")
			}
			w := cmd.OutOrStdout()
			if jsonOutput() {
				return printProto(w, resp.Msg.GetTopic())
			}
			fmt.Fprintf(w, "created topic %s\n", resp.Msg.GetTopic().GetName())
			return printTopicInfo(w, resp.Msg.GetTopic())
		},
	}
	f := c.Flags()
	f.Int32VarP(&partitions, "partitions", "p", 0, "number of partitions, 1 to 10000 (required)")
	f.StringVar(&durability, "durability", "durable", "durable or wal: the default acks and what consumers may see")
	f.StringVar(&retention, "retention", "", "how long records are kept: a duration like 36h or 7d, or forever (default: the server's, 7d)")
	f.StringVar(&retentionBytes, "retention-bytes", "", "size kept per partition, e.g. 10GiB; -1 for no limit (default: no limit)")
	f.StringVar(&maxRecordBytes, "max-record-bytes", "", "largest record accepted, e.g. 1MiB (default: the server's, 1 MiB)")
	f.StringVar(&maxBatchSzs, "max-batch-bytes", "", "largest pre-encoded batch accepted, e.g. 8MiB (default: the server's, 8 MiB)")
	return c
}

// parseInt32Bytes parses an optional size flag that must fit an int32; ""
// is 0 (the server's default).
func parseInt32Bytes(flag, s string) (int32, error) {
	if s == "" {
		return 0, nil
	}
	n, err := parseBytes(s)
	if err != nil {
		return 0, usagef("--%s: %v", flag, err)
	}
	if n <= 0 || n > math.MaxInt32 {
		return 0, usagef("--%s %q: must be between 1 byte and 2GiB", flag, s)
	}
	return int32(n), nil
}
