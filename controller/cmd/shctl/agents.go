package main

import (
	"context"
	"fmt"
	"io"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"

	v1 "github.com/streamhouse/streamhouse/api/gen/streamhouse/v1"
)

func newAgentsCommand() *cobra.Command {
	c := &cobra.Command{
		Use:   "agents",
		Short: "List, drain and undrain agents",
		Example: `  shctl agents list
  shctl agents drain agent-2`,
	}
	c.AddCommand(newAgentsListCommand(), newAgentsDrainCommand(), newAgentsUndrainCommand())
	return c
}

// printAgents writes the agents table.
func printAgents(w io.Writer, agents []*v1.AgentStatus) error {
	t := newTable(w, "AGENT", "ADDRESS", "ZONE", "PARTITIONS", "HEARTBEAT AGO", "DRAINING")
	for _, a := range agents {
		t.row(a.GetId(), a.GetAddress(), a.GetZone(), a.GetPartitions(), heartbeatAge(a.GetLastHeartbeatMsAgo()), a.GetDraining())
	}
	return t.flush()
}

// setDraining calls ClusterService.DrainAgent.
func setDraining(ctx context.Context, w io.Writer, id string, drain bool) error {
	cc, srv, closeIdle, err := clusterClient()
	if err != nil {
		return err
	}
	defer closeIdle()
	verb := "drain"
	if !drain {
		verb = "undrain"
	}
	rctx, cancel := rpcCtx(ctx)
	defer cancel()
	if _, err := cc.DrainAgent(rctx, connect.NewRequest(&v1.DrainAgentRequest{AgentId: id, Undrain: !drain})); err != nil {
		return apiError(ctx, err, srv, fmt.Sprintf("%s agent %q", verb, id), fmt.Sprintf("agent %q does not exist (see shctl agents list)", id))
	}
	if jsonOutput() {
		return printJSON(w, map[string]any{"agent": id, "draining": drain})
	}
	if drain {
		fmt.Fprintf(w, "agent %s is draining: it uploads what it holds, gives up its partitions and gets no new ones\n", id)
	} else {
		fmt.Fprintf(w, "agent %s is no longer draining: it can be given partitions again\n", id)
	}
	return nil
}
