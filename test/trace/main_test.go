// Package trace checks StreamHouse's tracing end to end: real streamhouse
// processes export over OTLP to a real Jaeger (package jaeger), and the
// tests read the traces back through Jaeger's query API.
package trace

import (
	"os"
	"testing"

	"github.com/streamhouse/streamhouse/test/devproc"
)

// bin is the streamhouse binary built once for all tests.
var bin string

// TestMain builds the binary once; devproc.Main also checks with goleak
// that no goroutine outlives the tests.
func TestMain(m *testing.M) {
	os.Exit(devproc.Main(m, func(dir string) (err error) {
		bin, err = devproc.Build(dir)
		return err
	}))
}
