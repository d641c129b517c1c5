package main

import (
	"fmt"
	"net"
	"time"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"

	v1 "github.com/streamhouse/streamhouse/api/gen/streamhouse/v1"
)

func newClusterAddVoterCommand() *cobra.Command {
	var (
		id, raftAddr, apiAddr string
		force                 bool
	)
	c := &cobra.Command{
		Use:   "add-voter --id ID --raft-address HOST:PORT [--api-address HOST:PORT]",
		Short: "Add a controller to the Raft configuration as a voter",
		Long: `Add a controller to the Raft configuration as a voter. Start the new
controller first (joining, not bootstrapping); the leader then replicates
its log to it. The change needs a majority of the new configuration, so add
one voter at a time and only reachable ones: a voter that cannot be reached
costs the cluster its quorum (with one voter, adding an unreachable second
one stops all writes). So add-voter first checks that --raft-address accepts
TCP connections, and refuses otherwise (--force skips the check).`,
		Example: `  shctl --controller ctl-0:7001 cluster add-voter --id ctl-3 --raft-address 10.0.0.4:7000 --api-address 10.0.0.4:7001`,
		Args:    exactArgs(),
		RunE: func(cmd *cobra.Command, args []string) error {
			if id == "" || raftAddr == "" {
				return usagef("add-voter needs --id and --raft-address")
			}
			if _, _, err := net.SplitHostPort(raftAddr); err != nil {
				return usagef("--raft-address %q: want host:port: %v", raftAddr, err)
			}
			if !force {
				d := net.Dialer{Timeout: min(global.timeout, 5*time.Second)}
				conn, err := d.DialContext(cmd.Context(), "tcp", raftAddr)
				if err != nil {
					reason, ok := unreachable(err)
					if !ok {
						reason = err.Error()
					}
					return withCode(exitUnreachable, fmt.Errorf("cannot reach the new voter's raft address %s: %s; start the controller first (an unreachable voter costs the cluster its quorum), or pass --force", raftAddr, reason))
				}
				_ = conn.Close()
			}
			cc, srv, closeIdle, err := clusterClient()
			if err != nil {
				return err
			}
			defer closeIdle()
			ctx, cancel := rpcCtx(cmd.Context())
			defer cancel()
			_, err = cc.AddVoter(ctx, connect.NewRequest(&v1.AddVoterRequest{Id: id, RaftAddress: raftAddr, ApiAddress: apiAddr}))
			if err != nil {
				return apiError(cmd.Context(), err, srv, fmt.Sprintf("add voter %q", id), "")
			}
			if jsonOutput() {
				return printJSON(cmd.OutOrStdout(), map[string]string{"added": id, "raftAddress": raftAddr, "apiAddress": apiAddr})
			}
			fmt.Fprintf(cmd.OutOrStdout(), "added voter %s (raft %s)\n", id, raftAddr)
			return nil
		},
	}
	c.Flags().StringVar(&id, "id", "", "the new controller's node id (required)")
	c.Flags().StringVar(&raftAddr, "raft-address", "", "the new controller's Raft address, host:port (required)")
	c.Flags().BoolVar(&force, "force", false, "skip the check that --raft-address is reachable")
	c.Flags().StringVar(&apiAddr, "api-address", "", "the new controller's API address, host:port")
	return c
}
