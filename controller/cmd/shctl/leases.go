package main

import "github.com/spf13/cobra"

func newLeasesCommand() *cobra.Command {
	c := &cobra.Command{
		Use:   "leases",
		Short: "List partition leases and take one away from its holder",
		Example: `  shctl leases list orders
  shctl leases release orders 3`,
	}
	c.AddCommand(newLeasesListCommand(), newLeasesReleaseCommand())
	return c
}
