package main

import (
	"io"

	"github.com/spf13/cobra"

	v1 "github.com/streamhouse/streamhouse/api/gen/streamhouse/v1"
)

func newTopicsCommand() *cobra.Command {
	c := &cobra.Command{
		Use:     "topics",
		Aliases: []string{"topic"},
		Short:   "Create, list, describe, alter and delete topics",
		Example: `  shctl topics create orders --partitions 6 --retention 3d
  shctl topics describe orders`,
	}
	c.AddCommand(newTopicsCreateCommand(), newTopicsListCommand(), newTopicsDescribeCommand(),
		newTopicsAlterCommand(), newTopicsDeleteCommand())
	return c
}

// printTopicInfo writes one topic's settings as "key: value" lines.
func printTopicInfo(w io.Writer, ti *v1.TopicInfo) error {
	t := newTable(w)
	t.row("name:", ti.GetName())
	t.row("partitions:", ti.GetPartitions())
	t.row("durability:", durabilityName(ti.GetDurability()))
	t.row("retention:", retentionString(ti.GetRetentionMs()))
	t.row("retention bytes:", bytesString(ti.GetRetentionBytes()))
	t.row("max record bytes:", bytesString(int64(ti.GetMaxRecordBytes())))
	t.row("max batch bytes:", bytesString(int64(ti.GetMaxBatchBytes())))
	t.row("created:", formatTime(ti.GetCreatedAt().AsTime()))
	return t.flush()
}
