// Package observability checks the operator-facing observability contract:
// the Grafana dashboards and Prometheus alert rules in charts/streamhouse/files
// parse (metricsql and promtool, the real Prometheus parser), the alert rules
// pass their promtool unit tests, and every metric the dashboards and rules
// name is really exported by the components, scraped from running processes.
package observability

import (
	"os"
	"sync"
	"testing"

	"github.com/streamhouse/streamhouse/test/devproc"
)

// binDir holds the streamhouse binary, built at most once, and only when a
// test that starts processes runs (the promtool tests need none).
var (
	binDir   string
	binOnce  sync.Once
	binPath  string
	binBuild error
)

// streamhouseBin returns the path of the streamhouse binary, building it on
// first use.
func streamhouseBin(t *testing.T) string {
	t.Helper()
	binOnce.Do(func() { binPath, binBuild = devproc.Build(binDir) })
	if binBuild != nil {
		t.Fatal(binBuild)
	}
	return binPath
}

func TestMain(m *testing.M) {
	os.Exit(devproc.Main(m, func(dir string) error {
		binDir = dir
		return nil
	}))
}
