package shctl_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/streamhouse/streamhouse/test/devproc"
)

// result is one shctl run.
type result struct {
	stdout, stderr string
	code           int
}

// shctl runs the binary with args against gateway (empty: none given) and
// stdin, with no STREAMHOUSE_* variables from the test's environment.
func shctl(t *testing.T, gateway, stdin string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if gateway != "" {
		args = append([]string{"--gateway", gateway}, args...)
	}
	cmd := exec.CommandContext(ctx, shctlBin, args...)
	cmd.Env = cleanEnv()
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if err != nil {
		ee, ok := err.(*exec.ExitError)
		if !ok {
			t.Fatalf("shctl %v: %v", args, err)
		}
		code = ee.ExitCode()
	}
	return result{stdout: out.String(), stderr: errb.String(), code: code}
}

func cleanEnv() []string {
	// The race runtime sleeps 1 s at a normal exit by default.
	env := []string{"GORACE=atexit_sleep_ms=0 halt_on_error=1"}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "STREAMHOUSE_") && !strings.HasPrefix(kv, "AWS_") && !strings.HasPrefix(kv, "GORACE=") {
			env = append(env, kv)
		}
	}
	return env
}

// ok fails the test unless r succeeded.
func (r result) ok(t *testing.T, what string) result {
	t.Helper()
	if r.code != 0 {
		t.Fatalf("%s: exit %d\nstdout:\n%s\nstderr:\n%s", what, r.code, r.stdout, r.stderr)
	}
	return r
}

// fails checks the exit code and that stderr is exactly one "shctl: " line
// containing want.
func (r result) fails(t *testing.T, what string, code int, want string) {
	t.Helper()
	if r.code != code {
		t.Errorf("%s: exit %d, want %d\nstdout:\n%s\nstderr:\n%s", what, r.code, code, r.stdout, r.stderr)
	}
	lines := strings.Split(strings.TrimRight(r.stderr, "\n"), "\n")
	if len(lines) != 1 || !strings.HasPrefix(lines[0], "shctl: ") || !strings.Contains(lines[0], want) {
		t.Errorf("%s: stderr is not one \"shctl: ...%s...\" line:\n%s", what, want, r.stderr)
	}
}

// jsonOf parses stdout as one JSON document.
func (r result) jsonOf(t *testing.T, what string) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &m); err != nil {
		t.Fatalf("%s: output is not JSON: %v\n%s", what, err, r.stdout)
	}
	return m
}

// jsonLines parses stdout as JSON lines.
func jsonLines(t *testing.T, s string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for line := range strings.SplitSeq(strings.TrimSpace(s), "\n") {
		if line == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("not a JSON line: %v: %q", err, line)
		}
		out = append(out, m)
	}
	return out
}

func num(v any) int64 {
	switch x := v.(type) {
	case float64:
		return int64(x)
	case string:
		n, _ := strconv.ParseInt(x, 10, 64)
		return n
	}
	return -1
}

// closedAddr returns an address nothing listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func TestCommandsAgainstDev(t *testing.T) {
	dataDir := t.TempDir()
	dev := devproc.Start(t, serverBin, dataDir)
	gw := dev.Addr

	t.Run("cluster status", func(t *testing.T) {
		r := shctl(t, gw, "", "cluster", "status").ok(t, "cluster status")
		for _, want := range []string{"leader:", "term:", "commit:", "applied:", "VOTER", "AGENT", "HEARTBEAT AGO", "DRAINING", "*"} {
			if !strings.Contains(r.stdout, want) {
				t.Errorf("cluster status lacks %q:\n%s", want, r.stdout)
			}
		}
		m := shctl(t, gw, "", "cluster", "status", "--output", "json").ok(t, "status json").jsonOf(t, "status json")
		voters, _ := m["voters"].([]any)
		if len(voters) != 1 || m["leaderId"] == "" || num(m["term"]) < 1 {
			t.Errorf("cluster status json: %v", m)
		}
		// --controller given explicitly, as a list with a dead address first
		// (failover moves on from refused connections).
		shctl(t, "", "", "--controller", closedAddr(t)+","+gw, "cluster", "status").ok(t, "status with failover")
		// The environment sets flags too.
		cmd := exec.Command(shctlBin, "cluster", "status", "-o", "json")
		cmd.Env = append(cleanEnv(), "STREAMHOUSE_GATEWAY="+gw)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("STREAMHOUSE_GATEWAY not honoured: %v\n%s", err, out)
		}
	})

	t.Run("topics", func(t *testing.T) {
		r := shctl(t, gw, "", "topics", "create", "orders", "--partitions", "3", "--retention", "3d", "--max-record-bytes", "512KiB").ok(t, "create")
		if !strings.Contains(r.stdout, "created topic orders") || !strings.Contains(r.stdout, "3d") || !strings.Contains(r.stdout, "512KiB") {
			t.Errorf("create output:\n%s", r.stdout)
		}
		m := shctl(t, gw, "", "topics", "create", "events", "-p", "2", "--durability", "wal", "-o", "json").ok(t, "create json").jsonOf(t, "create json")
		if m["name"] != "events" || num(m["partitions"]) != 2 || m["durability"] != "DURABILITY_WAL" {
			t.Errorf("create json: %v", m)
		}
		shctl(t, gw, "", "topics", "create", "orders", "-p", "1").fails(t, "create existing", 1, "already exists")
		shctl(t, gw, "", "topics", "create", "bad/name", "-p", "1").fails(t, "create bad name", 2, "bad/name")
		shctl(t, gw, "", "topics", "create", "x").fails(t, "create without partitions", 2, "--partitions")
		shctl(t, gw, "", "topics", "create", "x", "-p", "1", "--durability", "maybe").fails(t, "bad durability", 2, "--durability")
		shctl(t, gw, "", "topics", "create", "x", "-p", "1", "--retention", "soon").fails(t, "bad retention", 2, "--retention")

		r = shctl(t, gw, "", "topics", "list").ok(t, "list")
		if !strings.Contains(r.stdout, "NAME") || !strings.Contains(r.stdout, "orders") || !strings.Contains(r.stdout, "events") {
			t.Errorf("list:\n%s", r.stdout)
		}
		m = shctl(t, gw, "", "topics", "list", "-o", "json").ok(t, "list json").jsonOf(t, "list json")
		if ts, _ := m["topics"].([]any); len(ts) != 2 {
			t.Errorf("list json: %v", m)
		}

		r = shctl(t, gw, "", "topics", "describe", "orders").ok(t, "describe")
		for _, want := range []string{"START OFFSET", "HIGH WATERMARK", "COMMITTED END", "LEADER AGENT", "EPOCH"} {
			if !strings.Contains(r.stdout, want) {
				t.Errorf("describe lacks %q:\n%s", want, r.stdout)
			}
		}
		m = shctl(t, gw, "", "topics", "describe", "orders", "-o", "json").ok(t, "describe json").jsonOf(t, "describe json")
		if ps, _ := m["partitions"].([]any); len(ps) != 3 {
			t.Errorf("describe json: %v", m)
		}

		r = shctl(t, gw, "", "topics", "alter", "orders", "--retention", "forever", "--retention-bytes", "1GiB").ok(t, "alter")
		if !strings.Contains(r.stdout, "forever") || !strings.Contains(r.stdout, "1GiB") {
			t.Errorf("alter output:\n%s", r.stdout)
		}
		m = shctl(t, gw, "", "topics", "alter", "orders", "--retention", "7d", "-o", "json").ok(t, "alter json").jsonOf(t, "alter json")
		if num(m["retentionMs"]) != 7*24*3600*1000 {
			t.Errorf("alter json: %v", m)
		}
		shctl(t, gw, "", "topics", "alter", "orders").fails(t, "alter nothing", 2, "nothing to change")
	})

	t.Run("missing topic", func(t *testing.T) {
		const want = `topic "nope" does not exist`
		for _, args := range [][]string{
			{"topics", "describe", "nope"},
			{"topics", "alter", "nope", "--retention", "1d"},
			{"topics", "delete", "nope", "--yes"},
			{"produce", "nope"},
			{"consume", "nope"},
			{"leases", "list", "nope"},
			{"leases", "release", "nope", "0"},
		} {
			shctl(t, gw, "x\n", args...).fails(t, strings.Join(args, " "), 3, want)
			shctl(t, gw, "x\n", append(args, "-o", "json")...).fails(t, strings.Join(args, " ")+" json", 3, want)
		}
		shctl(t, gw, "", "consume", "orders", "--partition", "7").fails(t, "missing partition", 3, `topic "orders" has no partition 7`)
		shctl(t, gw, "", "leases", "release", "orders", "7").fails(t, "release missing partition", 3, `topic "orders" has no partition 7`)
	})

	var hwm0 int64
	t.Run("produce and consume", func(t *testing.T) {
		var lines strings.Builder
		for i := range 20 {
			fmt.Fprintf(&lines, "value-%02d\n", i)
		}
		r := shctl(t, gw, lines.String(), "produce", "orders", "--partition", "0").ok(t, "produce lines")
		if strings.TrimSpace(r.stdout) != "produced 20 records to orders (0 failed)" {
			t.Errorf("produce output: %q", r.stdout)
		}
		jsonIn := `{"key":"alice","value":"hello","headers":{"source":"cli"},"partition":1}
{"key":"bob","value":"world","partition":1}

{"value":"no key","partition":2}
`
		m := shctl(t, gw, jsonIn, "produce", "orders", "--format", "json", "--acks", "durable", "-o", "json").ok(t, "produce json").jsonOf(t, "produce json")
		if num(m["produced"]) != 3 || num(m["failed"]) != 0 {
			t.Errorf("produce json: %v", m)
		}
		// From a file, keyed.
		file := filepath.Join(t.TempDir(), "in.txt")
		if err := os.WriteFile(file, []byte("a\nb\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		shctl(t, gw, "", "produce", "orders", "--file", file, "--key", "k", "--partition", "2").ok(t, "produce file")
		shctl(t, gw, "{not json\n", "produce", "orders", "--format", "json").fails(t, "bad json line", 2, "input line 1")
		shctl(t, gw, "x\n", "produce", "orders", "--partition", "9").fails(t, "bad partition", 2, "records failed")

		// raw: partition 0 in order.
		r = shctl(t, gw, "", "consume", "orders", "--partition", "0").ok(t, "consume raw")
		got := strings.Split(strings.TrimSpace(r.stdout), "\n")
		if len(got) != 20 || got[0] != "value-00" || got[19] != "value-19" {
			t.Errorf("consume raw: %q", got)
		}
		// all partitions.
		r = shctl(t, gw, "", "consume", "orders", "--from-beginning").ok(t, "consume all")
		if n := len(strings.Split(strings.TrimSpace(r.stdout), "\n")); n != 25 {
			t.Errorf("consume all: %d records, want 25:\n%s", n, r.stdout)
		}
		// json, with headers and keys.
		r = shctl(t, gw, "", "consume", "orders", "-p", "1", "-o", "json").ok(t, "consume json")
		recs := jsonLines(t, r.stdout)
		if len(recs) != 2 || recs[0]["key"] != "alice" || recs[0]["value"] != "hello" || num(recs[1]["offset"]) != 1 {
			t.Errorf("consume json: %v", recs)
		}
		if h, _ := recs[0]["headers"].(map[string]any); h["source"] != "cli" {
			t.Errorf("headers: %v", recs[0])
		}
		// The JSON consume prints is what produce --format json reads.
		shctl(t, gw, r.stdout, "produce", "events", "--format", "json").ok(t, "round trip")
		rt := jsonLines(t, shctl(t, gw, "", "consume", "events", "-p", "1", "-o", "json").ok(t, "round trip consume").stdout)
		if len(rt) != 2 || rt[0]["key"] != "alice" {
			t.Errorf("round trip: %v", rt)
		}
		// table.
		r = shctl(t, gw, "", "consume", "orders", "-p", "1", "--output", "table").ok(t, "consume table")
		if !strings.Contains(r.stdout, "PARTITION") || !strings.Contains(r.stdout, "source=cli") {
			t.Errorf("consume table:\n%s", r.stdout)
		}
		// --max and --from-offset.
		r = shctl(t, gw, "", "consume", "orders", "-p", "0", "--from-offset", "5", "--max", "3").ok(t, "consume offset max")
		if strings.TrimSpace(r.stdout) != "value-05\nvalue-06\nvalue-07" {
			t.Errorf("--from-offset 5 --max 3: %q", r.stdout)
		}
		shctl(t, gw, "", "consume", "orders", "-p", "0", "--from-offset", "99").fails(t, "offset out of range", 2, "out of range")
		shctl(t, gw, "", "consume", "orders", "--from-end", "--from-beginning").fails(t, "two starts", 2, "at most one")
		shctl(t, gw, "", "consume", "orders", "-o", "yaml").fails(t, "bad output", 2, "raw, json or table")

		// --from-time skips what is older.
		shctl(t, gw, "", "topics", "create", "timed", "-p", "1").ok(t, "create timed")
		shctl(t, gw, "old-1\nold-2\n", "produce", "timed").ok(t, "produce old")
		time.Sleep(50 * time.Millisecond)
		from := time.Now().UTC().Format(time.RFC3339Nano)
		time.Sleep(50 * time.Millisecond)
		shctl(t, gw, "new-1\nnew-2\n", "produce", "timed").ok(t, "produce new")
		r = shctl(t, gw, "", "consume", "timed", "--from-time", from).ok(t, "consume from time")
		if strings.TrimSpace(r.stdout) != "new-1\nnew-2" {
			t.Errorf("--from-time: %q", r.stdout)
		}
		shctl(t, gw, "", "consume", "timed", "--from-time", "yesterday").fails(t, "bad time", 2, "RFC 3339")

		m = shctl(t, gw, "", "topics", "describe", "orders", "-o", "json").ok(t, "describe").jsonOf(t, "describe")
		hwm0 = num(m["partitions"].([]any)[0].(map[string]any)["highWatermark"])
		if hwm0 != 20 {
			t.Errorf("high watermark of orders/0 is %d, want 20", hwm0)
		}
	})

	t.Run("consume follow", func(t *testing.T) {
		cmd := exec.Command(shctlBin, "--gateway", gw, "consume", "orders", "-p", "0", "--from-offset", strconv.FormatInt(hwm0, 10), "--follow")
		cmd.Env = cleanEnv()
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		lines := make(chan string, 16)
		go func() {
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
				lines <- sc.Text()
			}
			close(lines)
			done <- cmd.Wait()
		}()
		defer func() {
			_ = cmd.Process.Kill()
			for range lines {
			}
		}()
		shctl(t, gw, "tail-1\ntail-2\ntail-3\n", "produce", "orders", "-p", "0").ok(t, "produce while following")
		var got []string
		deadline := time.After(30 * time.Second)
		for len(got) < 3 {
			select {
			case l, ok := <-lines:
				if !ok {
					t.Fatalf("follow exited early: %s", stderr.String())
				}
				got = append(got, l)
			case <-deadline:
				t.Fatalf("follow printed %q within 30s", got)
			}
		}
		if !slices.Equal(got, []string{"tail-1", "tail-2", "tail-3"}) {
			t.Errorf("follow: %q", got)
		}
		// Ctrl-C ends it cleanly.
		if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
			t.Fatal(err)
		}
		for range lines {
		}
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("follow after SIGINT: %v (stderr %q)", err, stderr.String())
			}
		case <-time.After(10 * time.Second):
			t.Fatal("follow did not exit within 10s of SIGINT")
		}
	})

	var agentID string
	t.Run("leases and agents", func(t *testing.T) {
		r := shctl(t, gw, "", "leases", "list").ok(t, "leases list")
		if !strings.Contains(r.stdout, "HOLDER") || !strings.Contains(r.stdout, "orders") || !strings.Contains(r.stdout, "events") {
			t.Errorf("leases list:\n%s", r.stdout)
		}
		m := shctl(t, gw, "", "leases", "list", "orders", "-o", "json").ok(t, "leases json").jsonOf(t, "leases json")
		leases, _ := m["leases"].([]any)
		if len(leases) != 3 {
			t.Fatalf("leases json: %v", m)
		}
		l0 := leases[0].(map[string]any)
		epoch := num(l0["epoch"])
		agentID, _ = l0["holder"].(string)
		if agentID == "" || epoch < 1 {
			t.Fatalf("lease of orders/0: %v", l0)
		}

		r = shctl(t, gw, "", "leases", "release", "orders", "0").ok(t, "release")
		if !strings.Contains(r.stdout, "released orders/0") {
			t.Errorf("release: %s", r.stdout)
		}
		m = shctl(t, gw, "", "leases", "release", "orders", "1", "-o", "json").ok(t, "release json").jsonOf(t, "release json")
		if m["topic"] != "orders" {
			t.Errorf("release json: %v", m)
		}
		waitFor(t, "a new epoch for orders/0", func() bool {
			m := shctl(t, gw, "", "leases", "list", "orders", "-o", "json").ok(t, "leases json").jsonOf(t, "leases json")
			l := m["leases"].([]any)[0].(map[string]any)
			return num(l["epoch"]) > epoch && l["holder"] != ""
		})
		shctl(t, gw, "", "leases", "release", "orders", "x").fails(t, "bad partition arg", 2, "PARTITION")

		r = shctl(t, gw, "", "agents", "list").ok(t, "agents list")
		if !strings.Contains(r.stdout, agentID) || !strings.Contains(r.stdout, "DRAINING") {
			t.Errorf("agents list:\n%s", r.stdout)
		}
		// The agent heartbeats to the leader: its age is known, not "-" (-1).
		m = shctl(t, gw, "", "agents", "list", "-o", "json").ok(t, "agents json").jsonOf(t, "agents json")
		if a := m["agents"].([]any)[0].(map[string]any); a["id"] != agentID || num(a["lastHeartbeatMsAgo"]) < 0 {
			t.Errorf("agents list json: want a heartbeat age for %s: %v", agentID, a)
		}
		shctl(t, gw, "", "agents", "drain", agentID).ok(t, "drain")
		waitFor(t, "the agent to be draining with no partitions", func() bool {
			m := shctl(t, gw, "", "agents", "list", "-o", "json").ok(t, "agents json").jsonOf(t, "agents json")
			a := m["agents"].([]any)[0].(map[string]any)
			return a["draining"] == true && num(a["partitions"]) == 0
		})
		m = shctl(t, gw, "", "agents", "undrain", agentID, "-o", "json").ok(t, "undrain").jsonOf(t, "undrain")
		if m["draining"] != false {
			t.Errorf("undrain json: %v", m)
		}
		waitFor(t, "the agent to hold partitions again", func() bool {
			m := shctl(t, gw, "", "agents", "list", "-o", "json").ok(t, "agents json").jsonOf(t, "agents json")
			a := m["agents"].([]any)[0].(map[string]any)
			return a["draining"] == false && num(a["partitions"]) > 0
		})
		shctl(t, gw, "", "agents", "drain", "no-such-agent").fails(t, "drain missing agent", 3, `agent "no-such-agent" does not exist`)
		shctl(t, gw, "", "agents", "drain").fails(t, "drain without id", 2, "ID")
	})

	t.Run("cluster voters", func(t *testing.T) {
		// dev has one in-memory voter; a voter that cannot be reached
		// is refused before the cluster is asked.
		shctl(t, gw, "", "cluster", "add-voter", "--id", "c2", "--raft-address", closedAddr(t)).fails(t, "add unreachable voter", 4, "cannot reach the new voter's raft address")
		shctl(t, gw, "", "cluster", "add-voter", "--id", "c2").fails(t, "add-voter without address", 2, "--raft-address")
		shctl(t, gw, "", "cluster", "remove-voter", "nope").fails(t, "remove missing voter", 3, `controller "nope" is not a voter`)
		shctl(t, gw, "", "cluster", "remove-voter").fails(t, "remove-voter without id", 2, "ID")
		// The cluster still works.
		shctl(t, gw, "", "topics", "list").ok(t, "list after voter errors")
	})

	t.Run("topics delete", func(t *testing.T) {
		shctl(t, gw, "", "topics", "delete", "events").fails(t, "delete without --yes off a terminal", 2, "--yes")
		r := shctl(t, gw, "", "topics", "delete", "events", "--yes").ok(t, "delete")
		if !strings.Contains(r.stdout, "deleted topic events") {
			t.Errorf("delete: %s", r.stdout)
		}
		shctl(t, gw, "", "topics", "describe", "events").fails(t, "describe deleted", 3, `topic "events" does not exist`)
		shctl(t, gw, "", "topics", "create", "gone", "-p", "1").ok(t, "create gone")
		m := shctl(t, gw, "", "topics", "delete", "gone", "-y", "-o", "json").ok(t, "delete json").jsonOf(t, "delete json")
		if m["deleted"] != "gone" {
			t.Errorf("delete json: %v", m)
		}
	})

	t.Run("objects verify", func(t *testing.T) {
		objDir := filepath.Join(dataDir, "objects")
		r := shctl(t, "", "", "objects", "verify", "--local-dir", objDir).ok(t, "verify")
		if !strings.Contains(r.stdout, "OK") || !strings.Contains(r.stdout, "0 corrupt") {
			t.Errorf("verify:\n%s", r.stdout)
		}
		m := shctl(t, "", "", "objects", "verify", "--local-dir", objDir, "-o", "json").ok(t, "verify json").jsonOf(t, "verify json")
		if num(m["checked"]) < 1 || num(m["ok"]) != num(m["checked"]) {
			t.Fatalf("verify json: %v", m)
		}
		// The environment names the folder too.
		cmd := exec.Command(shctlBin, "objects", "verify")
		cmd.Env = append(cleanEnv(), "STREAMHOUSE_LOCAL_DIR="+objDir)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("STREAMHOUSE_LOCAL_DIR: %v\n%s", err, out)
		}

		// Flip a byte in the middle of one object.
		var victim string
		err := filepath.WalkDir(objDir, func(p string, d os.DirEntry, err error) error {
			if err == nil && victim == "" && !d.IsDir() && strings.HasSuffix(p, ".obj") {
				victim = p
			}
			return err
		})
		if err != nil || victim == "" {
			t.Fatalf("no object under %s: %v", objDir, err)
		}
		b, err := os.ReadFile(victim)
		if err != nil {
			t.Fatal(err)
		}
		b[len(b)/2] ^= 0xff
		_ = os.Chmod(victim, 0o644)
		if err := os.WriteFile(victim, b, 0o644); err != nil {
			t.Fatal(err)
		}
		r = shctl(t, "", "", "objects", "verify", "--local-dir", objDir)
		r.fails(t, "verify corrupt", 1, "1 of")
		if !strings.Contains(r.stdout, "CORRUPT") || !strings.Contains(r.stdout, filepath.Base(victim)) || !strings.Contains(r.stdout, "1 corrupt") {
			t.Errorf("verify corrupt output:\n%s", r.stdout)
		}
		r = shctl(t, "", "", "objects", "verify", "--local-dir", objDir, "-o", "json")
		if r.code != 1 {
			t.Errorf("verify corrupt json: exit %d", r.code)
		}
		if m := r.jsonOf(t, "verify corrupt json"); num(m["corrupt"]) != 1 {
			t.Errorf("verify corrupt json: %v", m)
		}
		shctl(t, "", "", "objects", "verify", "--local-dir", filepath.Join(dataDir, "nope")).fails(t, "verify missing dir", 3, "not a folder")
		shctl(t, "", "", "objects", "verify", "--object-store", "s3").fails(t, "verify s3 without endpoint", 2, "--s3-endpoint")
	})
}

// waitFor polls cond until it holds or 30 s pass.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestUnreachable runs every command group against a closed port.
func TestUnreachable(t *testing.T) {
	addr := closedAddr(t)
	gwMsg := "cannot reach the gateway at " + addr + ": connection refused"
	ctlMsg := "cannot reach the controller at " + addr + ": connection refused"
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"cluster", "status"}, ctlMsg},
		{[]string{"cluster", "remove-voter", "c2"}, ctlMsg},
		{[]string{"topics", "list"}, gwMsg},
		{[]string{"topics", "create", "t", "-p", "1"}, gwMsg},
		{[]string{"topics", "describe", "t"}, gwMsg},
		{[]string{"topics", "alter", "t", "--retention", "1d"}, gwMsg},
		{[]string{"topics", "delete", "t", "--yes"}, gwMsg},
		{[]string{"produce", "t"}, gwMsg},
		{[]string{"consume", "t"}, gwMsg},
		{[]string{"consume", "t", "--follow"}, gwMsg},
		{[]string{"leases", "list"}, gwMsg},
		{[]string{"leases", "release", "t", "0"}, ctlMsg},
		{[]string{"agents", "list"}, ctlMsg},
		{[]string{"agents", "drain", "a"}, ctlMsg},
		{[]string{"agents", "undrain", "a"}, ctlMsg},
	} {
		name := strings.Join(c.args, " ")
		shctl(t, addr, "x\n", c.args...).fails(t, name, 4, c.want)
		shctl(t, addr, "x\n", append(c.args, "-o", "json")...).fails(t, name+" json", 4, c.want)
	}
	// --controller on its own, a list of dead addresses.
	shctl(t, "", "", "--controller", addr+","+closedAddr(t), "cluster", "status").fails(t, "dead controller list", 4, "cannot reach the controller")
	shctl(t, "", "", "--gateway", "no-such-host.invalid:8080", "topics", "list").fails(t, "unknown host", 4, "cannot reach the gateway")
}

// TestUsage checks help, examples and usage errors without a cluster.
func TestUsage(t *testing.T) {
	commands := [][]string{
		{"cluster", "status"}, {"cluster", "add-voter"}, {"cluster", "remove-voter"},
		{"topics", "create"}, {"topics", "list"}, {"topics", "describe"}, {"topics", "alter"}, {"topics", "delete"},
		{"produce"}, {"consume"}, {"leases", "list"}, {"leases", "release"},
		{"agents", "list"}, {"agents", "drain"}, {"agents", "undrain"}, {"objects", "verify"},
	}
	for _, c := range commands {
		r := shctl(t, "", "", append(c, "--help")...).ok(t, strings.Join(c, " ")+" --help")
		if !strings.Contains(r.stdout, "Examples:") || !strings.Contains(r.stdout, "[$STREAMHOUSE_GATEWAY]") {
			t.Errorf("%v --help lacks an example or the env names:\n%s", c, r.stdout)
		}
	}
	shctl(t, "", "", "nosuch").fails(t, "unknown command", 2, "unknown command")
	shctl(t, "", "", "topics", "list", "--bogus").fails(t, "unknown flag", 2, "unknown flag")
	shctl(t, "", "", "topics", "describe").fails(t, "missing argument", 2, "NAME")
	shctl(t, "", "", "topics", "list", "--output", "yaml").fails(t, "bad output", 2, "table or json")
	shctl(t, "", "", "--gateway", "http//x", "topics", "list").fails(t, "bad gateway", 2, "--gateway")
	cmd := exec.Command(shctlBin, "topics", "list")
	cmd.Env = append(cleanEnv(), "STREAMHOUSE_TIMEOUT=soon")
	out, err := cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 || !strings.Contains(string(out), "STREAMHOUSE_TIMEOUT") {
		t.Errorf("bad STREAMHOUSE_TIMEOUT: %v %s", err, out)
	}
}
