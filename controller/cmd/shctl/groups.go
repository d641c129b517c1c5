package main

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	v1 "github.com/streamhouse/streamhouse/api/gen/streamhouse/v1"
)

func newGroupsCommand() *cobra.Command {
	c := &cobra.Command{
		Use:     "groups",
		Aliases: []string{"group"},
		Short:   "List, describe, reset the offsets of, and delete consumer groups",
		Example: `  shctl groups list
  shctl groups describe billing
  shctl groups reset-offsets billing --topic orders --to-earliest --dry-run`,
	}
	c.AddCommand(newGroupsListCommand(), newGroupsDescribeCommand(), newGroupsResetOffsetsCommand(), newGroupsDeleteCommand())
	return c
}

// groupMissing is the message for a group that does not exist.
func groupMissing(id string) string { return fmt.Sprintf("group %q does not exist", id) }

// groupStateName is the short name of a group state.
func groupStateName(s v1.GroupState) string {
	switch s {
	case v1.GroupState_GROUP_STATE_EMPTY:
		return "empty"
	case v1.GroupState_GROUP_STATE_RECONCILING:
		return "reconciling"
	case v1.GroupState_GROUP_STATE_STABLE:
		return "stable"
	}
	return s.String()
}

// partitionsString renders topic partitions as "orders:0,1,2 payments:3".
func partitionsString(tps []*v1.TopicPartitions) string {
	var parts []string
	for _, tp := range tps {
		nums := make([]string, len(tp.GetPartitions()))
		for i, p := range tp.GetPartitions() {
			nums[i] = fmt.Sprint(p)
		}
		parts = append(parts, tp.GetTopic()+":"+strings.Join(nums, ","))
	}
	return strings.Join(parts, " ")
}
