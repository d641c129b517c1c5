// Command streamhouse is StreamHouse's one server binary.
//
//	streamhouse dev        controller, agent and gateway in one process
//	streamhouse controller one Raft voter of the controller cluster
//	streamhouse agent      WAL, uploads and reads for the partitions it leases
//	streamhouse gateway    the public API, routing to agents
//
// Every flag can also be set with an environment variable STREAMHOUSE_<FLAG>,
// upper-cased with dashes as underscores (--data-dir: STREAMHOUSE_DATA_DIR).
// A flag given on the command line wins over the environment.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := newRootCommand().ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "streamhouse:", err)
		os.Exit(exitCode(err))
	}
}

// usageError marks errors in the user's input (exit code 2).
type usageError struct{ error }

func exitCode(err error) int {
	var ue usageError
	if errors.As(err, &ue) {
		return 2
	}
	return 1
}

func newRootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:   "streamhouse",
		Short: "StreamHouse: Kafka's model with the log in object storage",
		Long: `StreamHouse is an S3-native event streaming platform: topics, partitions,
offsets and durable produce/fetch, with the log kept in an object store.

Every flag can also be set with an environment variable STREAMHOUSE_<FLAG>
(upper case, dashes as underscores): --data-dir is STREAMHOUSE_DATA_DIR.
A flag on the command line wins over the environment.`,
		Version:       version,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, args []string) error {
			return applyEnv(cmd.Flags())
		},
	}
	root.SetFlagErrorFunc(func(cmd *cobra.Command, err error) error {
		return usageError{fmt.Errorf("%w (see %s --help)", err, cmd.CommandPath())}
	})
	root.AddCommand(newDevCommand(), newControllerCommand(), newAgentCommand(), newGatewayCommand())
	return root
}

// envName is the environment variable that sets a flag.
func envName(flag string) string {
	return "STREAMHOUSE_" + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

// applyEnv sets every flag not given on the command line from its
// STREAMHOUSE_* variable, if set.
func applyEnv(fs *pflag.FlagSet) error {
	var errs []error
	fs.VisitAll(func(f *pflag.Flag) {
		if f.Changed || f.Name == "help" {
			return
		}
		v, ok := os.LookupEnv(envName(f.Name))
		if !ok {
			return
		}
		if err := fs.Set(f.Name, v); err != nil {
			errs = append(errs, usageError{fmt.Errorf("%s=%q: %w", envName(f.Name), v, err)})
		}
	})
	return errors.Join(errs...)
}

// annotateEnv appends "[$STREAMHOUSE_X]" to every flag's usage so --help
// shows the variable.
func annotateEnv(fs *pflag.FlagSet) {
	fs.VisitAll(func(f *pflag.Flag) {
		f.Usage = fmt.Sprintf("%s [$%s]", f.Usage, envName(f.Name))
	})
}
