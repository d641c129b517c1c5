package shctl_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/streamhouse/streamhouse/pkg/client"
	"github.com/streamhouse/streamhouse/test/devproc"
)

// TestGroupsCommands: a consumer group consumes and commits part of a
// topic; `groups list` and `groups describe` (table and JSON) and the
// controller's lag metrics report exactly the true lag; reset-offsets is
// refused while the group has a member, previews with --dry-run and resets
// once it is empty; delete removes the group and its metric series.
func TestGroupsCommands(t *testing.T) {
	dev := devproc.Start(t, serverBin, t.TempDir(), "--metrics-partition-lag", "--group-heartbeat-interval", "100ms", "--group-session-timeout", "2s")
	gw := dev.Addr
	shctl(t, gw, "", "topics", "create", "orders", "--partitions", "3").ok(t, "create topic")
	const perPartition = 20
	for p := range 3 {
		var in strings.Builder
		for i := range perPartition {
			fmt.Fprintf(&in, "p%d-%d\n", p, i)
		}
		shctl(t, gw, in.String(), "produce", "orders", "--partition", fmt.Sprint(p)).ok(t, "produce")
	}

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c, err := client.New(dev.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	gc, err := c.NewGroupConsumer(client.GroupConsumerConfig{Group: "billing", Topics: []string{"orders"}, ManualCommit: true,
		AutoOffsetReset: client.OffsetResetEarliest, MaxPollRecords: 5})
	if err != nil {
		t.Fatal(err)
	}
	pos := map[int32]int64{}
	processed := 0
	for processed < 40 {
		recs, err := gc.Poll(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range recs {
			pos[r.Partition] = r.Offset + 1
		}
		processed += len(recs)
		if err := gc.Commit(ctx); err != nil {
			t.Fatal(err)
		}
	}
	trueLag := int64(0)
	for p := range int32(3) {
		trueLag += perPartition - pos[p]
	}
	t.Logf("consumed and committed %d of %d records; true lag %d (positions %v)", processed, 3*perPartition, trueLag, pos)

	r := shctl(t, gw, "", "groups", "list").ok(t, "groups list")
	if !strings.Contains(r.stdout, "billing") || !strings.Contains(r.stdout, fmt.Sprint(trueLag)) {
		t.Errorf("groups list:\n%s", r.stdout)
	}
	shctl(t, gw, "", "groups", "reset-offsets", "billing", "--topic", "orders", "--to-earliest").
		fails(t, "reset with a live member", 1, "live member")

	d := shctl(t, gw, "", "groups", "describe", "billing", "-o", "json").ok(t, "describe json").jsonOf(t, "describe json")
	if num(d["totalLag"]) != trueLag {
		t.Errorf("describe totalLag %v, true lag %d", d["totalLag"], trueLag)
	}
	parts, _ := d["partitions"].([]any)
	for _, p := range parts {
		gp := p.(map[string]any)
		pn := int32(num(gp["partition"]))
		if num(gp["committedOffset"]) != pos[pn] || num(gp["endOffset"]) != perPartition || num(gp["lag"]) != perPartition-pos[pn] {
			t.Errorf("partition %d: %v, want committed %d", pn, gp, pos[pn])
		}
	}
	table := shctl(t, gw, "", "groups", "describe", "billing").ok(t, "describe").stdout
	for _, want := range []string{"state:", "MEMBER", "COMMITTED", "END OFFSET", fmt.Sprintf("total lag: %d", trueLag)} {
		if !strings.Contains(table, want) {
			t.Errorf("describe lacks %q:\n%s", want, table)
		}
	}
	metrics := scrape(t, dev.URL)
	if want := fmt.Sprintf("streamhouse_controller_group_lag_records{group=\"billing\"} %d", trueLag); !strings.Contains(metrics, want) {
		t.Errorf("metrics lack %q:\n%s", want, grep(metrics, "group"))
	}
	for p := range int32(3) {
		want := fmt.Sprintf("streamhouse_controller_group_partition_lag_records{group=\"billing\",topic=\"orders\",partition=\"%d\"} %d", p, perPartition-pos[p])
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	if !strings.Contains(metrics, `streamhouse_controller_group_members{group="billing"} 1`) {
		t.Errorf("members metric:\n%s", grep(metrics, "group"))
	}

	if err := gc.Close(ctx); err != nil {
		t.Fatal(err)
	}
	dry := shctl(t, gw, "", "groups", "reset-offsets", "billing", "--topic", "orders", "--partition", "1", "--to-earliest", "--dry-run").ok(t, "dry run").stdout
	if !strings.Contains(dry, "dry run") || !strings.Contains(dry, fmt.Sprintf("orders  1          %d", pos[1])) {
		t.Errorf("dry run:\n%s", dry)
	}
	if d := shctl(t, gw, "", "groups", "describe", "billing", "-o", "json").ok(t, "describe").jsonOf(t, "describe"); num(d["totalLag"]) != trueLag {
		t.Errorf("a dry run changed the lag: %v", d["totalLag"])
	}
	shctl(t, gw, "", "groups", "reset-offsets", "billing", "--topic", "orders", "--to-offset", "5").ok(t, "reset")
	if d := shctl(t, gw, "", "groups", "describe", "billing", "-o", "json").ok(t, "describe").jsonOf(t, "describe"); num(d["totalLag"]) != 3*(perPartition-5) {
		t.Errorf("after reset to 5: total lag %v", d["totalLag"])
	}
	// By time: before every record is the start, after every record the end.
	shctl(t, gw, "", "groups", "reset-offsets", "billing", "--topic", "orders", "--to-timestamp", "0").ok(t, "reset to time 0")
	if d := shctl(t, gw, "", "groups", "describe", "billing", "-o", "json").ok(t, "describe").jsonOf(t, "describe"); num(d["totalLag"]) != 3*perPartition {
		t.Errorf("after reset to time 0: total lag %v", d["totalLag"])
	}
	future := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
	shctl(t, gw, "", "groups", "reset-offsets", "billing", "--topic", "orders", "--to-timestamp", future).ok(t, "reset to the future")
	if d := shctl(t, gw, "", "groups", "describe", "billing", "-o", "json").ok(t, "describe").jsonOf(t, "describe"); num(d["totalLag"]) != 0 {
		t.Errorf("after reset to the future: total lag %v", d["totalLag"])
	}
	shctl(t, gw, "", "groups", "reset-offsets", "billing", "--topic", "orders").fails(t, "reset without a target", 2, "exactly one of")
	shctl(t, gw, "", "groups", "reset-offsets", "billing", "--topic", "nope", "--to-latest").fails(t, "reset of a missing topic", 3, `topic "nope" does not exist`)
	shctl(t, gw, "", "groups", "delete", "billing").ok(t, "delete")
	shctl(t, gw, "", "groups", "describe", "billing").fails(t, "describe deleted", 3, `group "billing" does not exist`)
	shctl(t, gw, "", "groups", "delete", "billing").fails(t, "delete twice", 3, "does not exist")
	if m := scrape(t, dev.URL); strings.Contains(m, `group="billing"`) {
		t.Errorf("a deleted group's series remain:\n%s", grep(m, "billing"))
	}
}

func scrape(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func grep(s, word string) string {
	var out []string
	for line := range strings.SplitSeq(s, "\n") {
		if strings.Contains(line, word) {
			out = append(out, line)
		}
	}
	return strings.Join(out, "\n")
}
