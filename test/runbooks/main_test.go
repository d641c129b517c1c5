// Package runbooks reproduces, on a real deployment, each failure that an
// operator runbook in runbooks/ describes, and checks that what the runbook
// says an operator will see is what they do see: the alert's expression
// (read from the chart's rules file) turns true in a real Prometheus that
// scrapes the real processes, the `shctl` command the runbook names shows
// what the runbook quotes, and the fix the runbook gives clears the symptom.
//
// The tests need a Prometheus server: STREAMHOUSE_PROMETHEUS names it (`go
// tool task test` builds bin/prometheus from tools/prometheus and sets it),
// else one on PATH. They fail, not skip, without it.
package runbooks

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/streamhouse/streamhouse/api/gen/streamhouse/v1/streamhousev1connect"
	"github.com/streamhouse/streamhouse/test/devproc"
)

// Binaries built once for every test: the streamhouse server (with -race,
// as devproc builds it) and the shctl admin CLI.
var (
	bin      string
	shctlBin string
)

func TestMain(m *testing.M) {
	os.Exit(devproc.Main(m, func(dir string) (err error) {
		if bin, err = devproc.Build(dir); err != nil {
			return err
		}
		shctlBin, err = devproc.BuildPackage(dir, "shctl", "github.com/streamhouse/streamhouse/controller/cmd/shctl")
		return err
	}))
}

// shctlResult is one run of shctl.
type shctlResult struct {
	Stdout, Stderr string
	Code           int // exit code
}

// Output is stdout and stderr together, as an operator sees them.
func (r shctlResult) Output() string { return r.Stdout + r.Stderr }

// shctl runs the shctl binary with args (and stdin, if not empty), waits at
// most a minute and returns what it printed and its exit code. It logs the
// command and its output, so a test's log reads like the runbook's steps.
func shctl(t *testing.T, stdin string, args ...string) shctlResult {
	t.Helper()
	return runShctl(t, true, stdin, args...)
}

// shctlQuiet is shctl without the log, for polling.
func shctlQuiet(t *testing.T, stdin string, args ...string) shctlResult {
	t.Helper()
	return runShctl(t, false, stdin, args...)
}

func runShctl(t *testing.T, log bool, stdin string, args ...string) shctlResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, shctlBin, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	// Only the flags the test gives count: no STREAMHOUSE_* from the
	// environment.
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "STREAMHOUSE_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	err := cmd.Run()
	res := shctlResult{Stdout: stdout.String(), Stderr: stderr.String()}
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			res.Code = ee.ExitCode()
		} else {
			t.Fatalf("shctl %s: %v", strings.Join(args, " "), err)
		}
	}
	if !log {
		return res
	}
	out := strings.Split(strings.TrimRight(res.Output(), "\n"), "\n")
	if len(out) > 24 {
		out = append(append(out[:12:12], fmt.Sprintf("... (%d lines)", len(out)-22)), out[len(out)-10:]...)
	}
	t.Logf("$ shctl %s  (exit %d)\n%s", strings.Join(args, " "), res.Code, strings.Join(out, "\n"))
	return res
}

// hostPort is the host:port a process serves on, as shctl's --gateway and
// --controller take it.
func hostPort(p *devproc.Proc) string { return p.Addr }

// httpClient returns a client whose idle connections are closed at the end
// of the test (goleak checks for their goroutines).
func httpClient(t *testing.T) *http.Client {
	hc := &http.Client{Transport: &http.Transport{}}
	t.Cleanup(hc.CloseIdleConnections)
	return hc
}

// clients are Connect clients of one gateway (or `streamhouse dev`).
type clients struct {
	admin   streamhousev1connect.AdminServiceClient
	produce streamhousev1connect.ProduceServiceClient
	consume streamhousev1connect.ConsumeServiceClient
	cluster streamhousev1connect.ClusterServiceClient
}

func newClients(t *testing.T, url string) clients {
	hc := httpClient(t)
	return clients{
		admin:   streamhousev1connect.NewAdminServiceClient(hc, url),
		produce: streamhousev1connect.NewProduceServiceClient(hc, url),
		consume: streamhousev1connect.NewConsumeServiceClient(hc, url),
		cluster: streamhousev1connect.NewClusterServiceClient(hc, url),
	}
}

// ctxT is a context that ends after d or with the test.
func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// eventually polls cond every 100 ms until it returns true, and fails the
// test with what (and cond's last note) if that takes longer than limit.
func eventually(t *testing.T, limit time.Duration, what string, cond func() (bool, string)) time.Duration {
	t.Helper()
	start := time.Now()
	var note string
	for {
		var ok bool
		if ok, note = cond(); ok {
			return time.Since(start)
		}
		if time.Since(start) > limit {
			t.Fatalf("%s: not seen within %v (last: %s)", what, limit, note)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
