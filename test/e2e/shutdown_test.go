package e2e

import (
	"strings"
	"testing"

	v1 "github.com/streamhouse/streamhouse/api/gen/streamhouse/v1"
	"github.com/streamhouse/streamhouse/test/devproc"
)

// TestGracefulShutdown: SIGTERM uploads and commits what the WAL holds
// before the process exits 0. The restart uses a flush interval of an hour,
// so only the shutdown itself can have committed the records.
func TestGracefulShutdown(t *testing.T) {
	dir := t.TempDir()
	p := devproc.Start(t, bin, dir, "--flush-interval", "1h")
	c := newClients(t, p.URL)
	createTopic(t, c, "g", 2, v1.Durability_DURABILITY_WAL)
	produceN(t, c, "g", 0, 500, v1.Acks_ACKS_WAL, "a")
	produceN(t, c, "g", 1, 300, v1.Acks_ACKS_WAL, "b")
	if d := describe(t, c, "g"); d.Partitions[0].CommittedEndOffset != 0 {
		t.Fatalf("committed before shutdown (flush interval 1h): %v", d.Partitions)
	}
	p.Stop()
	if code := p.ExitCode(); code != 0 {
		t.Fatalf("exit code after SIGTERM = %d, want 0; stderr:\n%s", code, p.Stderr())
	}
	if !strings.Contains(p.Stderr(), "stopped cleanly") {
		t.Errorf("no clean-stop log line; stderr:\n%s", p.Stderr())
	}
	p.Restart()
	d := describe(t, c, "g")
	if got0, got1 := d.Partitions[0].CommittedEndOffset, d.Partitions[1].CommittedEndOffset; got0 != 500 || got1 != 300 {
		t.Fatalf("committed ends after a clean shutdown = %d, %d; want 500, 300", got0, got1)
	}
}
