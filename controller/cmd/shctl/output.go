package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	v1 "github.com/streamhouse/streamhouse/api/gen/streamhouse/v1"
)

// jsonOutput reports whether --output is json.
func jsonOutput() bool { return global.output == "json" }

// printProto writes an API message as indented JSON (protojson: field names
// in lowerCamelCase, zero values included, bytes in base64).
func printProto(w io.Writer, m proto.Message) error {
	b, err := protojson.MarshalOptions{Multiline: true, Indent: "  ", EmitUnpopulated: true}.Marshal(m)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(w, string(b))
	return err
}

// printJSON writes v as indented JSON.
func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// table writes aligned columns.
type table struct{ tw *tabwriter.Writer }

func newTable(w io.Writer, header ...string) *table {
	t := &table{tw: tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)}
	if len(header) > 0 {
		t.row(anys(header)...)
	}
	return t
}

func anys(s []string) []any {
	out := make([]any, len(s))
	for i, v := range s {
		out[i] = v
	}
	return out
}

func (t *table) row(cells ...any) {
	parts := make([]string, len(cells))
	for i, c := range cells {
		s := fmt.Sprint(c)
		if s == "" {
			s = "-"
		}
		parts[i] = strings.NewReplacer("\t", " ", "\n", " ").Replace(s)
	}
	fmt.Fprintln(t.tw, strings.Join(parts, "\t"))
}

func (t *table) flush() error { return t.tw.Flush() }

// durabilityName is the short name of a durability.
func durabilityName(d v1.Durability) string {
	switch d {
	case v1.Durability_DURABILITY_WAL:
		return "wal"
	case v1.Durability_DURABILITY_DURABLE, v1.Durability_DURABILITY_UNSPECIFIED:
		return "durable"
	}
	return d.String()
}

// retentionString formats a retention in milliseconds.
func retentionString(ms int64) string {
	if ms < 0 {
		return "forever"
	}
	if ms == 0 {
		return "default"
	}
	d := time.Duration(ms) * time.Millisecond
	if d%(24*time.Hour) == 0 {
		return strconv.FormatInt(int64(d/(24*time.Hour)), 10) + "d"
	}
	return d.String()
}

// bytesString formats a byte count; negative means unlimited.
func bytesString(n int64) string {
	if n < 0 {
		return "unlimited"
	}
	const unit = 1024
	if n < unit {
		return strconv.FormatInt(n, 10) + "B"
	}
	for i, s := range []string{"KiB", "MiB", "GiB", "TiB", "PiB"} {
		div := int64(1) << (10 * (i + 1))
		if n < div*unit || s == "PiB" {
			if n%div == 0 {
				return strconv.FormatInt(n/div, 10) + s
			}
			return strconv.FormatFloat(float64(n)/float64(div), 'f', 1, 64) + s
		}
	}
	return strconv.FormatInt(n, 10)
}

// parseRetention parses a retention: a Go duration ("36h", "90m"), days
// ("7d"), or "forever"/"-1" for no limit. It returns milliseconds.
func parseRetention(s string) (int64, error) {
	s = strings.TrimSpace(strings.ToLower(s))
	switch s {
	case "forever", "infinite", "-1":
		return -1, nil
	}
	if d, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.ParseFloat(d, 64)
		if err != nil || n <= 0 {
			return 0, fmt.Errorf("retention %q: want a positive number of days like 7d, a duration like 36h, or forever", s)
		}
		return int64(n * 24 * float64(time.Hour/time.Millisecond)), nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < time.Millisecond {
		return 0, fmt.Errorf("retention %q: want a duration like 7d or 36h, or forever", s)
	}
	return d.Milliseconds(), nil
}

// parseBytes parses a size: a plain number of bytes, or with a unit (KB, MB,
// GB, TB powers of 1000; KiB, MiB, GiB, TiB powers of 1024); "-1" or
// "unlimited" is -1.
func parseBytes(s string) (int64, error) {
	t := strings.TrimSpace(s)
	switch strings.ToLower(t) {
	case "-1", "unlimited":
		return -1, nil
	}
	units := []struct {
		suffix string
		mult   float64
	}{
		{"kib", 1 << 10}, {"mib", 1 << 20}, {"gib", 1 << 30}, {"tib", 1 << 40},
		{"kb", 1e3}, {"mb", 1e6}, {"gb", 1e9}, {"tb", 1e12},
		{"k", 1 << 10}, {"m", 1 << 20}, {"g", 1 << 30}, {"t", 1 << 40}, {"b", 1},
	}
	lower := strings.ToLower(t)
	for _, u := range units {
		if num, ok := strings.CutSuffix(lower, u.suffix); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(num), 64)
			if err != nil || f < 0 {
				return 0, fmt.Errorf("size %q: want bytes like 1048576, 512KiB or 1GiB", s)
			}
			return int64(f * u.mult), nil
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("size %q: want bytes like 1048576, 512KiB or 1GiB", s)
	}
	return n, nil
}

// formatTime formats a timestamp for tables.
func formatTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format("2006-01-02T15:04:05.000Z")
}
