package main

import (
	"context"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"

	v1 "github.com/streamhouse/streamhouse/api/gen/streamhouse/v1"
)

func newClusterCommand() *cobra.Command {
	c := &cobra.Command{
		Use:   "cluster",
		Short: "Inspect and change the controller cluster (Raft voters)",
		Example: `  shctl cluster status
  shctl --controller ctl-0:7001,ctl-1:7001 cluster add-voter --id ctl-3 --raft-address ctl-3:7000 --api-address ctl-3:7001`,
	}
	c.AddCommand(newClusterStatusCommand(), newClusterAddVoterCommand(), newClusterRemoveVoterCommand())
	return c
}

// clusterStatus fetches ClusterService.Status from --controller.
func clusterStatus(ctx context.Context) (*v1.StatusResponse, error) {
	cc, srv, closeIdle, err := clusterClient()
	if err != nil {
		return nil, err
	}
	defer closeIdle()
	rctx, cancel := rpcCtx(ctx)
	defer cancel()
	resp, err := cc.Status(rctx, connect.NewRequest(&v1.StatusRequest{}))
	if err != nil {
		return nil, apiError(ctx, err, srv, "cluster status", "")
	}
	return resp.Msg, nil
}
