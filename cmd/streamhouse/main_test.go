package main

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// run executes the CLI with args and returns its error and output.
func run(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := newRootCommand()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs(args)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := cmd.ExecuteContext(ctx)
	return out.String(), err
}

func TestHelpNamesEveryFlagsVariable(t *testing.T) {
	out, err := run(t, "dev", "--help")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"--data-dir", "STREAMHOUSE_DATA_DIR", "--listen", "STREAMHOUSE_LISTEN", `(default ":8080")`,
		"STREAMHOUSE_S3_SECRET_KEY", "Example", "SIGTERM"} {
		if !strings.Contains(out, want) {
			t.Errorf("dev --help does not mention %q:\n%s", want, out)
		}
	}
}

func TestEnvironmentFillsFlagsAndFlagsWin(t *testing.T) {
	cmd := newDevCommand()
	t.Setenv("STREAMHOUSE_DATA_DIR", "/from/env")
	t.Setenv("STREAMHOUSE_LISTEN", ":9999")
	if err := cmd.Flags().Parse([]string{"--listen", ":7777"}); err != nil {
		t.Fatal(err)
	}
	if err := applyEnv(cmd.Flags()); err != nil {
		t.Fatal(err)
	}
	if got, _ := cmd.Flags().GetString("data-dir"); got != "/from/env" {
		t.Errorf("data-dir = %q, want the environment's /from/env", got)
	}
	if got, _ := cmd.Flags().GetString("listen"); got != ":7777" {
		t.Errorf("listen = %q, want the flag's :7777 (flags win)", got)
	}
}

func TestBadSettingsAreUsageErrors(t *testing.T) {
	cases := []struct {
		env  map[string]string
		args []string
		want string
	}{
		{args: []string{"dev", "--flush-interval", "1ms"}, want: "--flush-interval 1ms is below"},
		{args: []string{"dev", "--object-store", "ftp"}, want: `--object-store "ftp": use local or s3`},
		{args: []string{"dev", "--object-store", "s3"}, want: "--s3-endpoint is required"},
		{args: []string{"dev", "--prefix-count", "0"}, want: "--prefix-count 0"},
		{args: []string{"dev", "--no-such-flag"}, want: "unknown flag"},
		{args: []string{"dev", "--log-level", "loud"}, want: `--log-level "loud"`},
		{env: map[string]string{"STREAMHOUSE_FLUSH_BYTES": "lots"}, args: []string{"dev"}, want: `STREAMHOUSE_FLUSH_BYTES="lots"`},
	}
	for _, tc := range cases {
		for k, v := range tc.env {
			t.Setenv(k, v)
		}
		_, err := run(t, append(tc.args, "--data-dir", t.TempDir(), "--listen", "127.0.0.1:0")...)
		var ue usageError
		if !errors.As(err, &ue) || exitCode(err) != 2 {
			t.Errorf("%v %v: err = %v, want a usage error (exit 2)", tc.env, tc.args, err)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: message %q does not contain %q", tc.args, err, tc.want)
		}
		for k := range tc.env {
			t.Setenv(k, "")
		}
	}
}
