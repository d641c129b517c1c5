package main

import "github.com/spf13/cobra"

func newObjectsCommand() *cobra.Command {
	c := &cobra.Command{
		Use:   "objects",
		Short: "Check the objects in the object store",
		Example: `  shctl objects verify --local-dir ./data/objects
  shctl objects verify --object-store s3 --s3-endpoint https://s3.eu-west-1.amazonaws.com --s3-bucket my-bucket`,
	}
	c.AddCommand(newObjectsVerifyCommand())
	return c
}
