// Package trace checks StreamHouse's tracing end to end: real streamhouse
// processes export over OTLP to a real Jaeger (package jaeger), and the
// tests read the traces back through Jaeger's query API.
package trace

import (
	"fmt"
	"os"
	"testing"

	"go.uber.org/goleak"

	"github.com/streamhouse/streamhouse/test/devproc"
)

// bin is the streamhouse binary built once for all tests.
var bin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "streamhouse-trace-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	bin, err = devproc.Build(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}
