package main

import (
	"testing"

	"github.com/streamhouse/streamhouse/controller"
)

// TestReadFromLeaderHeader: the CLI's copy of the header that has a
// follower forward ClusterService.Status to the leader matches the
// controller's, or `shctl agents list` would be answered by followers.
func TestReadFromLeaderHeader(t *testing.T) {
	if readFromHeader != controller.ReadFromHeader || readFromLeader != controller.ReadFromLeader {
		t.Fatalf("shctl sends %s: %s, the controller forwards on %s: %s",
			readFromHeader, readFromLeader, controller.ReadFromHeader, controller.ReadFromLeader)
	}
}
