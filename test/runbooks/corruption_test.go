package runbooks

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/streamhouse/streamhouse/pkg/objstore/s3test"
	"github.com/streamhouse/streamhouse/test/devproc"
)

// objectFiles lists the object files (*.obj) under a versitygw root.
func objectFiles(t *testing.T, root string) []string {
	t.Helper()
	var out []string
	err := filepath.Walk(root, func(path string, info os.FileInfo, err error) error {
		if err == nil && info.Mode().IsRegular() && strings.HasSuffix(path, ".obj") {
			out = append(out, path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(out)
	return out
}

// TestCorruption reproduces runbooks/corruption.md on an S3 store: an
// object holding acknowledged records is damaged in the bucket, and the
// agent is SIGKILLed and restarted with a torn WAL tail. The agent repairs
// its WAL on start (StreamHouseWALRecovery turns true; its log says it
// truncated the tail); a read of the damaged range fails with DataLoss
// naming the object (StreamHouseObjectCorruption turns true, source
// "object"); `shctl consume` shows the error and `shctl objects verify`
// names the object as CORRUPT. The runbook's steps then work: records past
// the damaged range stay readable with --from-offset, and restoring the
// object's previous version makes `shctl objects verify` pass and the
// whole partition readable, with no new corruption detected.
func TestCorruption(t *testing.T) {
	t.Parallel()
	srv := s3test.StartServer(t)
	s3 := srv.Config
	dir := t.TempDir()
	p := devproc.Start(t, bin, dir, append(s3Args(s3, s3.Endpoint), "--flush-interval", "100ms")...)
	gw := hostPort(p)
	for _, args := range [][]string{
		{"topics", "create", "ledger", "--partitions", "2"},
		{"topics", "create", "audit", "--partitions", "1", "--durability", "wal"},
	} {
		if r := shctl(t, "", append([]string{"--gateway", gw}, args...)...); r.Code != 0 {
			t.Fatalf("shctl %v: %s", args, r.Output())
		}
	}
	pr := startPrometheus(t, targets{"streamhouse": {p.Addr}})
	corruption := pr.alert("StreamHouseObjectCorruption", "runbooks/corruption.md")
	recovery := pr.alert("StreamHouseWALRecovery", "runbooks/corruption.md")
	pr.waitScraped(1)
	pr.waitFalse("StreamHouseObjectCorruption before the damage", corruption.Query, 30*time.Second)
	pr.waitFalse("StreamHouseWALRecovery before the crash", recovery.Query, 30*time.Second)

	lines := func(prefix string, n int) string {
		var b strings.Builder
		for i := range n {
			fmt.Fprintf(&b, "%s-%d\n", prefix, i)
		}
		return b.String()
	}
	// 200 records in partition 0, acked durable: one object holds them all.
	if r := shctl(t, lines("zero", 200), "--gateway", gw, "produce", "ledger", "--partition", "0"); r.Code != 0 {
		t.Fatalf("produce: %s", r.Output())
	}
	objs := objectFiles(t, srv.Dir)
	if len(objs) != 1 {
		t.Fatalf("want one object after the first durable produce, got %v", objs)
	}
	damaged := objs[0]
	key := filepath.Base(damaged)
	if r := shctl(t, lines("one", 200), "--gateway", gw, "produce", "ledger", "--partition", "1"); r.Code != 0 {
		t.Fatalf("produce: %s", r.Output())
	}
	if r := shctl(t, lines("audit", 100), "--gateway", gw, "produce", "audit", "--acks", "wal"); r.Code != 0 {
		t.Fatalf("produce: %s", r.Output())
	}

	// The process dies (SIGKILL), the last WAL segment ends in a torn
	// write, and a byte of the object flips in the bucket.
	p.Kill()
	segs, err := filepath.Glob(filepath.Join(dir, "agent", "wal", "segments", "*.wal"))
	if err != nil || len(segs) == 0 {
		t.Fatalf("no WAL segments: %v", err)
	}
	sort.Strings(segs)
	f, err := os.OpenFile(segs[len(segs)-1], os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(append([]byte{0, 0, 16, 0, 0xde, 0xad, 0xbe, 0xef}, strings.Repeat("torn", 64)...)); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	original, err := os.ReadFile(damaged)
	if err != nil {
		t.Fatal(err)
	}
	bad := append([]byte(nil), original...)
	bad[len(bad)/3] ^= 0xff // inside partition 0's records
	if err := os.WriteFile(damaged, bad, 0o644); err != nil {
		t.Fatal(err)
	}
	p.Restart()

	// WAL recovery: the alert and the log line the runbook quotes.
	pr.waitTrue("StreamHouseWALRecovery", recovery.Query, 30*time.Second)
	if !strings.Contains(p.Stderr(), "truncating torn WAL segment tail") {
		t.Errorf("the restarted agent did not log the torn tail it truncated; stderr:\n%s", tailStr(p.Stderr(), 3000))
	}
	pr.waitTrue("streamhouse_agent_wal_recoveries_total counted it", `streamhouse_agent_wal_recoveries_total > 0`, 10*time.Second)
	// The wal topic's acknowledged records survived the crash.
	if r := shctl(t, "", "--gateway", gw, "consume", "audit", "--partition", "0"); r.Code != 0 || strings.Count(r.Stdout, "\n") != 100 {
		t.Errorf("consume audit after the recovery: exit %d, %d records", r.Code, strings.Count(r.Stdout, "\n"))
	}

	// Reading the damaged range: DataLoss naming the object.
	r := shctl(t, "", "--gateway", gw, "consume", "ledger", "--partition", "0")
	if r.Code == 0 || !strings.Contains(r.Stderr, "data_loss") || !strings.Contains(r.Stderr, key) {
		t.Errorf("consume of the damaged partition: exit %d, %q; want a data_loss error naming %s", r.Code, r.Stderr, key)
	}
	pr.waitTrue("StreamHouseObjectCorruption", corruption.Query, 30*time.Second)
	pr.waitTrue(`corruption counted with source="object"`, `streamhouse_agent_corruption_detected_total{source="object"} > 0`, 10*time.Second)
	// shctl objects verify names the object.
	verify := []string{"objects", "verify", "--object-store", "s3", "--s3-endpoint", s3.Endpoint, "--s3-bucket", s3.Bucket,
		"--s3-access-key", s3.AccessKey, "--s3-secret-key", s3.SecretKey, "--s3-region", s3.Region}
	r = shctl(t, "", verify...)
	if r.Code != 1 || !strings.Contains(r.Stdout, "CORRUPT") || !strings.Contains(r.Stdout, key) {
		t.Errorf("objects verify: exit %d; want exit 1 and CORRUPT naming %s", r.Code, key)
	}
	// The other partition, in another object, reads.
	if r := shctl(t, "", "--gateway", gw, "consume", "ledger", "--partition", "1"); r.Code != 0 || strings.Count(r.Stdout, "\n") != 200 {
		t.Errorf("consume of the healthy partition: exit %d, %d records", r.Code, strings.Count(r.Stdout, "\n"))
	}

	// Without a copy of the object: records past the damaged range are
	// readable from the offset after it.
	if r := shctl(t, lines("new", 5), "--gateway", gw, "produce", "ledger", "--partition", "0"); r.Code != 0 {
		t.Fatalf("produce after the damage: %s", r.Output())
	}
	if r := shctl(t, "", "--gateway", gw, "consume", "ledger", "--partition", "0", "--from-offset", "200"); r.Code != 0 || r.Stdout != lines("new", 5) {
		t.Errorf("consume past the damaged range: exit %d, %q", r.Code, r.Stdout)
	}

	// With a copy (bucket versioning, a backup): restore it.
	detected, _ := pr.value(`max(streamhouse_agent_corruption_last_detected_timestamp_seconds{source="object"})`)
	if err := os.WriteFile(damaged, original, 0o644); err != nil {
		t.Fatal(err)
	}
	if r := shctl(t, "", verify...); r.Code != 0 || strings.Contains(r.Stdout, "CORRUPT") {
		t.Errorf("objects verify after the restore: exit %d", r.Code)
	}
	r = shctl(t, "", "--gateway", gw, "consume", "ledger", "--partition", "0")
	if r.Code != 0 || r.Stdout != lines("zero", 200)+lines("new", 5) {
		t.Errorf("consume after the restore: exit %d, %d records", r.Code, strings.Count(r.Stdout, "\n"))
	}
	// No new detection since the restore: the alert resolves 15 minutes
	// after the last one.
	eventually(t, 10*time.Second, "a scrape after the restore", func() (bool, string) {
		_, ok := pr.value(`streamhouse_agent_corruption_detected_total{source="object"} and (time() - timestamp(streamhouse_agent_corruption_detected_total{source="object"})) < 1`)
		return ok, ""
	})
	if now, _ := pr.value(`max(streamhouse_agent_corruption_last_detected_timestamp_seconds{source="object"})`); now != detected {
		t.Errorf("corruption detected again after the restore (last detection %v, was %v)", now, detected)
	}
}
