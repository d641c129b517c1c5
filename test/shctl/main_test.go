// Package shctl_test runs the built shctl binary against a real
// `streamhouse dev` process, command by command, including the error output
// and exit codes for an unreachable cluster and a missing topic.
package shctl_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"go.uber.org/goleak"

	"github.com/streamhouse/streamhouse/test/devproc"
)

var (
	serverBin string // streamhouse
	shctlBin  string // shctl
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	dir, err := os.MkdirTemp("", "shctl-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	if serverBin, err = devproc.Build(dir); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	shctlBin = filepath.Join(dir, "shctl")
	out, err := exec.Command("go", "build", "-race", "-o", shctlBin, "github.com/streamhouse/streamhouse/controller/cmd/shctl").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "build shctl: %v\n%s", err, out)
		return 1
	}
	code := m.Run()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: %v\n", err)
			return 1
		}
	}
	return code
}
