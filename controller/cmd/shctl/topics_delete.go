package main

import (
	"bufio"
	"fmt"
	"os"
	"strings"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	v1 "github.com/streamhouse/streamhouse/api/gen/streamhouse/v1"
)

func newTopicsDeleteCommand() *cobra.Command {
	var yes bool
	c := &cobra.Command{
		Use:   "delete NAME [--yes]",
		Short: "Delete a topic and all its data",
		Long: `Delete a topic and all its data. This cannot be undone. It asks for
confirmation when stdin is a terminal; otherwise (scripts, pipes) --yes is
required.`,
		Example: `  shctl topics delete orders
  shctl topics delete orders --yes`,
		Args: exactArgs("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			if !yes {
				if !term.IsTerminal(int(os.Stdin.Fd())) {
					return usagef("topics delete %s: stdin is not a terminal, so there is no one to confirm; add --yes", name)
				}
				fmt.Fprintf(cmd.ErrOrStderr(), "Delete topic %q and all its data? This cannot be undone. Type the topic name to confirm: ", name)
				line, _ := bufio.NewReader(cmd.InOrStdin()).ReadString('\n')
				if strings.TrimSpace(line) != name {
					return withCode(exitError, fmt.Errorf("topic %q not deleted: not confirmed", name))
				}
			}
			ctx := cmd.Context()
			c, srv, err := gatewayClient()
			if err != nil {
				return err
			}
			defer c.Close()
			rctx, cancel := rpcCtx(ctx)
			defer cancel()
			if _, err := c.Admin().DeleteTopic(rctx, connect.NewRequest(&v1.DeleteTopicRequest{Name: name})); err != nil {
				return apiError(ctx, err, srv, fmt.Sprintf("delete topic %q", name), topicMissing(name))
			}
			if jsonOutput() {
				return printJSON(cmd.OutOrStdout(), map[string]string{"deleted": name})
			}
			fmt.Fprintf(cmd.OutOrStdout(), "deleted topic %s\n", name)
			return nil
		},
	}
	c.Flags().BoolVarP(&yes, "yes", "y", false, "do not ask for confirmation")
	return c
}
