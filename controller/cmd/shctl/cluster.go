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

// Status is answered by whichever controller receives it; with this header
// a follower forwards it to the leader (controller.ReadFromHeader and
// ReadFromLeader; the CLI imports only the public API, hence the copy).
const readFromHeader, readFromLeader = "Streamhouse-Read-From", "leader"

// clusterStatus fetches ClusterService.Status from --controller: that
// controller's own view, or with fromLeader the leader's (which alone
// knows the agents' heartbeats; Unavailable while there is no leader).
func clusterStatus(ctx context.Context, fromLeader bool) (*v1.StatusResponse, error) {
	cc, srv, closeIdle, err := clusterClient()
	if err != nil {
		return nil, err
	}
	defer closeIdle()
	rctx, cancel := rpcCtx(ctx)
	defer cancel()
	req := connect.NewRequest(&v1.StatusRequest{})
	if fromLeader {
		req.Header().Set(readFromHeader, readFromLeader)
	}
	resp, err := cc.Status(rctx, req)
	if err != nil {
		return nil, apiError(ctx, err, srv, "cluster status", "")
	}
	return resp.Msg, nil
}
