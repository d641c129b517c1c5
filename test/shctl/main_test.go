// Package shctl_test runs the built shctl binary against a real
// `streamhouse dev` process, command by command, including the error output
// and exit codes for an unreachable cluster and a missing topic.
package shctl_test

import (
	"os"
	"testing"

	"github.com/streamhouse/streamhouse/test/devproc"
)

var (
	serverBin string // streamhouse
	shctlBin  string // shctl
)

func TestMain(m *testing.M) {
	os.Exit(devproc.Main(m, func(dir string) (err error) {
		if serverBin, err = devproc.Build(dir); err != nil {
			return err
		}
		shctlBin, err = devproc.BuildPackage(dir, "shctl", "github.com/streamhouse/streamhouse/controller/cmd/shctl")
		return err
	}))
}
