package runbooks

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	v1 "github.com/streamhouse/streamhouse/api/gen/streamhouse/v1"
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
	// 200 records in partition 0, acked durable: in the bucket when shctl
	// returns (usually one object; the damaged one holds partition 0 only).
	if r := shctl(t, lines("zero", 200), "--gateway", gw, "produce", "ledger", "--partition", "0"); r.Code != 0 {
		t.Fatalf("produce: %s", r.Output())
	}
	objs := objectFiles(t, srv.Dir)
	if len(objs) == 0 {
		t.Fatal("no object in the bucket after a durable produce")
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
	if log := p.Stderr(); !strings.Contains(log, `msg="corrupt batch in object"`) || !strings.Contains(log, key) {
		t.Errorf("the agent did not log the corrupt object %s:\n%s", key, tailStr(log, 3000))
	}
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

	t.Run("damaged WAL segment", testDamagedWALSegment)
}

// testDamagedWALSegment: an agent holding records of a wal topic it has not
// uploaded (a 1 h flush interval) is SIGKILLed, and a byte flips in a
// sealed WAL segment on its disk, inside the part its index had already
// checkpointed (so recovery does not rescan it). Restarted with a 100 ms
// flush interval, the agent uploads what precedes the damaged frame, then
// gives the partition up by itself: StreamHouseObjectCorruption turns true
// with source "wal", the log names the unreadable frame and the dropped
// partition, the lease is released and granted again with a new epoch from
// the committed end (the records from the damaged frame on are lost), and
// `shctl topics describe` shows HIGH WATERMARK = COMMITTED END. Nothing for
// the operator to repair in StreamHouse; an acks=durable produce succeeds.
func testDamagedWALSegment(t *testing.T) {
	dir := t.TempDir()
	// A 4 MiB budget makes 512 KiB segments.
	p := devproc.Start(t, bin, dir, "--flush-interval", "1h", "--wal-budget", fmt.Sprint(4<<20))
	gw := hostPort(p)
	if r := shctl(t, "", "--gateway", gw, "topics", "create", "audit", "--partitions", "1", "--durability", "wal"); r.Code != 0 {
		t.Fatalf("create topic: %s", r.Output())
	}
	pr := startPrometheus(t, targets{"streamhouse": {p.Addr}})
	corruption := pr.alert("StreamHouseObjectCorruption", "runbooks/corruption.md")
	pr.waitScraped(1)
	c := newClients(t, p.URL)
	// 1.5 MB in 30 requests of 100 records of 500 bytes: three segments.
	tr := startTrickle(t, c, "audit", 1, 100, 500, time.Millisecond, v1.Acks_ACKS_WAL)
	eventually(t, 60*time.Second, "1.5 MB written", func() (bool, string) { return tr.ok.Load() >= 30, fmt.Sprint(tr.ok.Load()) })
	tr.halt()
	p.Kill()
	segs, err := filepath.Glob(filepath.Join(dir, "agent", "wal", "segments", "*.wal"))
	if err != nil || len(segs) < 2 {
		t.Fatalf("want at least 2 WAL segments, got %v (%v)", segs, err)
	}
	sort.Strings(segs)
	data, err := os.ReadFile(segs[0])
	if err != nil {
		t.Fatal(err)
	}
	data[len(data)/2] ^= 0xff
	if err := os.WriteFile(segs[0], data, 0o644); err != nil {
		t.Fatal(err)
	}
	p.Args = []string{"--flush-interval", "100ms", "--wal-budget", fmt.Sprint(4 << 20)}
	p.Restart()

	pr.waitTrue(`StreamHouseObjectCorruption with source="wal"`, `(`+corruption.Query+`) and on (source) (max by (source) (streamhouse_agent_corruption_detected_total{source="wal"}) > 0)`, 30*time.Second)
	eventually(t, 30*time.Second, "the agent logs the unreadable frame and drops the partition", func() (bool, string) {
		log := p.Stderr()
		return strings.Contains(log, "unreadable WAL frame") && strings.Contains(log, "dropped partition"), ""
	})
	eventually(t, 30*time.Second, "the partition is granted again and restarts at its committed end", func() (bool, string) {
		d := describeTopic(t, gw, "audit").Partitions[0]
		// Epoch 1 was the first grant, 2 the grant after the restart (a new
		// incarnation); 3 is the grant after the release.
		return d.GetLeaderEpoch() >= 3 && d.HighWatermark == d.CommittedEndOffset, d.String()
	})
	if d := describeTopic(t, gw, "audit").Partitions[0]; d.CommittedEndOffset == 0 {
		t.Errorf("nothing committed: the frames before the damaged one should have been uploaded first (%v)", d)
	}
	if r := shctl(t, "new\n", "--gateway", gw, "produce", "audit", "--acks", "durable"); r.Code != 0 {
		t.Errorf("acks=durable produce after the partition was given up and granted again: exit %d: %s", r.Code, r.Output())
	}
	shctl(t, "", "--gateway", gw, "topics", "describe", "audit")
}
