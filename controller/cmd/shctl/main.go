// Command shctl is StreamHouse's admin CLI. It talks to a cluster only
// through the public API: the gateway's AdminService, ProduceService and
// ConsumeService (through the Go SDK where one exists) and a controller's
// ClusterService. `objects verify` reads the object store directly.
//
//	shctl cluster status | add-voter | remove-voter
//	shctl topics create | list | describe | alter | delete
//	shctl produce TOPIC
//	shctl consume TOPIC
//	shctl leases list | release
//	shctl agents list | drain | undrain
//	shctl objects verify
//	shctl groups list | describe | reset-offsets | delete
//
// Every flag can also be set with an environment variable STREAMHOUSE_<FLAG>,
// upper-cased with dashes as underscores (--gateway: STREAMHOUSE_GATEWAY).
// A flag given on the command line wins over the environment.
//
// Errors are one line on stderr, prefixed "shctl: ", and the exit code says
// what kind of failure it was (see the exit* constants).
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// Exit codes, in the spirit of etcdctl's cobrautl (ExitBadConnection,
// ExitInvalidInput, ...). Scripts may rely on them; 0 is success.
const (
	// exitError is any other failure (a server error, a corrupt object, a
	// failed produce).
	exitError = 1
	// exitUsage is bad input: unknown flags or commands, missing arguments,
	// invalid values, or a request the server rejected as invalid
	// (InvalidArgument, OutOfRange).
	exitUsage = 2
	// exitNotFound: the topic, partition, agent or controller does not exist.
	exitNotFound = 3
	// exitUnreachable: no connection could be made to the gateway or the
	// controller, or it did not answer within --timeout.
	exitUnreachable = 4
	// exitUnavailable: the server answered but the cluster cannot serve the
	// request now (Unavailable: no controller leader, no lease holder yet).
	exitUnavailable = 5
	// exitInterrupted: stopped by SIGINT or SIGTERM before finishing.
	exitInterrupted = 130
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := newRootCommand().ExecuteContext(ctx)
	interrupted := ctx.Err() != nil
	stop()
	if err != nil {
		code := exitCode(err)
		if interrupted && (errors.Is(err, context.Canceled) || code == exitError) {
			code = exitInterrupted
			err = errors.New("interrupted")
		}
		fmt.Fprintln(os.Stderr, "shctl: "+oneLine(err.Error()))
		os.Exit(code)
	}
}

// oneLine keeps an error message on one line.
func oneLine(s string) string {
	s = strings.TrimSpace(s)
	return strings.Join(strings.Fields(strings.ReplaceAll(s, "\n", "; ")), " ")
}

// exitErr is an error with its exit code.
type exitErr struct {
	code int
	err  error
}

func (e *exitErr) Error() string { return e.err.Error() }
func (e *exitErr) Unwrap() error { return e.err }

// withCode attaches an exit code to err.
func withCode(code int, err error) error {
	if err == nil {
		return nil
	}
	return &exitErr{code: code, err: err}
}

// usagef reports bad input (exit 2).
func usagef(format string, args ...any) error {
	return withCode(exitUsage, fmt.Errorf(format, args...))
}

func exitCode(err error) int {
	var ee *exitErr
	if errors.As(err, &ee) {
		return ee.code
	}
	// Cobra's own errors (unknown command, bad arguments) are usage errors.
	msg := err.Error()
	for _, p := range []string{"unknown command", "unknown flag", "unknown shorthand", "accepts ", "requires at least", "invalid argument"} {
		if strings.Contains(msg, p) {
			return exitUsage
		}
	}
	return exitError
}

// globals are the persistent flags every command shares.
type globals struct {
	gateway    string
	controller string
	output     string
	timeout    time.Duration
}

var global globals

func newRootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:   "shctl",
		Short: "shctl administers a StreamHouse cluster",
		Long: `shctl administers a StreamHouse cluster: the controllers, topics, leases and
agents; it also produces and consumes records and verifies the objects in
the object store.

It talks to the gateway (--gateway) for topics, produce and consume, and to a
controller (--controller) for the cluster, leases and agents. ` + "`streamhouse dev`" + `
serves both on one port, so --controller defaults to the --gateway address.

Every flag can also be set with an environment variable STREAMHOUSE_<FLAG>
(upper case, dashes as underscores): --gateway is STREAMHOUSE_GATEWAY.
A flag on the command line wins over the environment.

Exit codes: 0 success, 1 error, 2 bad input or usage, 3 not found,
4 cluster unreachable (or no answer within --timeout), 5 cluster unavailable
(it answered but cannot serve now, e.g. no leader), 130 interrupted.`,
		Example: `  shctl --gateway localhost:8080 topics list
  STREAMHOUSE_GATEWAY=gw:8080 shctl topics describe orders --output json
  shctl --controller ctl-0:7001,ctl-1:7001,ctl-2:7001 cluster status`,
		Version:           version,
		SilenceUsage:      true,
		SilenceErrors:     true,
		CompletionOptions: cobra.CompletionOptions{DisableDefaultCmd: true},
		PersistentPreRunE: func(cmd *cobra.Command, args []string) error {
			if err := applyEnv(cmd.Flags()); err != nil {
				return err
			}
			return global.validate(cmd)
		},
	}
	root.SetFlagErrorFunc(func(cmd *cobra.Command, err error) error {
		return usagef("%v (see %s --help)", err, cmd.CommandPath())
	})
	pf := root.PersistentFlags()
	pf.StringVar(&global.gateway, "gateway", "localhost:8080", "gateway address, host:port or http(s):// URL")
	pf.StringVar(&global.controller, "controller", "", "controller API address(es), host:port, comma-separated for a cluster (default: the --gateway address, as streamhouse dev serves both)")
	pf.StringVarP(&global.output, "output", "o", "table", "output format: table or json")
	pf.DurationVar(&global.timeout, "timeout", 10*time.Second, "how long to wait for each request")
	root.AddCommand(
		newClusterCommand(),
		newTopicsCommand(),
		newProduceCommand(),
		newConsumeCommand(),
		newLeasesCommand(),
		newAgentsCommand(),
		newObjectsCommand(),
		newGroupsCommand(),
	)
	annotateEnvTree(root)
	return root
}

func (g *globals) validate(cmd *cobra.Command) error {
	if g.timeout <= 0 {
		return usagef("--timeout must be positive, got %v", g.timeout)
	}
	// consume has its own --output (raw|json|table) and checks it itself.
	if f := cmd.Flags().Lookup("output"); f != nil && f.Value == cmd.Root().PersistentFlags().Lookup("output").Value {
		if g.output != "table" && g.output != "json" {
			return usagef("--output %q: use table or json", g.output)
		}
	}
	return nil
}

// envName is the environment variable that sets a flag.
func envName(flag string) string {
	return "STREAMHOUSE_" + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

// applyEnv sets every flag not given on the command line from its
// STREAMHOUSE_* variable, if set (as cmd/streamhouse does).
func applyEnv(fs *pflag.FlagSet) error {
	var errs []error
	fs.VisitAll(func(f *pflag.Flag) {
		if f.Changed || f.Name == "help" || f.Name == "version" {
			return
		}
		v, ok := os.LookupEnv(envName(f.Name))
		if !ok {
			return
		}
		if err := fs.Set(f.Name, v); err != nil {
			errs = append(errs, fmt.Errorf("%s=%q: %w", envName(f.Name), v, err))
		}
	})
	if err := errors.Join(errs...); err != nil {
		return withCode(exitUsage, err)
	}
	return nil
}

// annotateEnvTree appends "[$STREAMHOUSE_X]" to the usage of every flag of
// every command so --help shows the variable.
func annotateEnvTree(c *cobra.Command) {
	annotate := func(f *pflag.Flag) {
		if f.Name == "help" || strings.Contains(f.Usage, "[$STREAMHOUSE_") {
			return
		}
		f.Usage = fmt.Sprintf("%s [$%s]", f.Usage, envName(f.Name))
	}
	c.Flags().VisitAll(annotate)
	c.PersistentFlags().VisitAll(annotate)
	for _, sub := range c.Commands() {
		annotateEnvTree(sub)
	}
}

// exactArgs is cobra.ExactArgs with a usage error naming the arguments.
func exactArgs(names ...string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != len(names) {
			return usagef("%s takes %d argument(s): %s, got %d (see --help)", cmd.CommandPath(), len(names), strings.Join(names, " "), len(args))
		}
		return nil
	}
}

// rangeArgs accepts between lo and hi arguments.
func rangeArgs(lo, hi int, usage string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) < lo || len(args) > hi {
			return usagef("usage: %s %s (see --help)", cmd.CommandPath(), usage)
		}
		return nil
	}
}
