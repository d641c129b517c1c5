package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"
	"text/tabwriter"
	"time"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"

	v1 "github.com/streamhouse/streamhouse/api/gen/streamhouse/v1"
	"github.com/streamhouse/streamhouse/pkg/batch"
	"github.com/streamhouse/streamhouse/pkg/client"
)

type consumeOpts struct {
	topic      string
	partition  *int32
	fromOffset *int64
	fromEnd    bool
	fromTime   time.Time // zero: not set
	follow     bool
	max        int64 // 0: no limit
	output     string
}

func newConsumeCommand() *cobra.Command {
	var (
		partition                      int32
		fromOffset                     int64
		fromBeginning, fromEnd, follow bool
		fromTime, output               string
		maxRecords                     int64
	)
	c := &cobra.Command{
		Use:   "consume TOPIC [--partition P] [--from-offset N | --from-beginning | --from-time T | --from-end] [--follow] [--max N]",
		Short: "Print a topic's records (one partition or all)",
		Long: `Print the records of TOPIC: of one partition (--partition) or of all its
partitions, through the Go SDK's partition readers. Consumers only ever see
records below the high watermark (see DESIGN.md, visibility).

Where to start (one of; default --from-beginning):
  --from-offset N   at offset N of every partition read
  --from-beginning  at each partition's first readable offset
  --from-time T     at the first record whose timestamp is at or after T
                    (RFC 3339, e.g. 2025-06-01T12:00:00Z). There is no time
                    index yet: this SCANS each partition from its start offset
                    and skips the older records, so it reads the whole log.
  --from-end        only records produced from now on (useful with --follow)

Without --follow it stops at the high watermark each partition had when it
started; with --follow it keeps tailing until Ctrl-C (which exits 0) or
--max records. Without --partition, partitions are read one after another
(or all at once with --follow).

Output (--output):
  raw    each record's value on its own line (the default)
  json   one JSON object per line: topic, partition, offset, timestamp, key,
         value, headers; strings as UTF-8 text, or key_base64/value_base64
         for bytes that are not UTF-8 (shctl produce --format json reads it)
  table  PARTITION OFFSET TIMESTAMP KEY VALUE HEADERS columns`,
		Example: `  shctl consume orders
  shctl consume orders --partition 2 --from-offset 1000 --max 10 --output table
  shctl consume orders --from-end --follow --output json
  shctl consume orders --from-time 2025-06-01T00:00:00Z --max 100`,
		Args: exactArgs("TOPIC"),
		RunE: func(cmd *cobra.Command, args []string) error {
			o := consumeOpts{topic: args[0], follow: follow, max: maxRecords, output: output, fromEnd: fromEnd}
			f := cmd.Flags()
			starts := 0
			for _, n := range []string{"from-offset", "from-beginning", "from-time", "from-end"} {
				if f.Changed(n) {
					starts++
				}
			}
			if starts > 1 {
				return usagef("give at most one of --from-offset, --from-beginning, --from-time and --from-end")
			}
			if f.Changed("partition") {
				if partition < 0 {
					return usagef("--partition %d: must be 0 or more", partition)
				}
				o.partition = &partition
			}
			if f.Changed("from-offset") {
				if fromOffset < 0 {
					return usagef("--from-offset %d: must be 0 or more (use --from-beginning or --from-end)", fromOffset)
				}
				o.fromOffset = &fromOffset
			}
			if f.Changed("from-time") {
				t, err := time.Parse(time.RFC3339Nano, fromTime)
				if err != nil {
					return usagef("--from-time %q: want RFC 3339 like 2025-06-01T12:00:00Z", fromTime)
				}
				o.fromTime = t
			}
			if maxRecords < 0 {
				return usagef("--max %d: must be 0 (no limit) or more", maxRecords)
			}
			switch output {
			case "raw", "json", "table":
			default:
				return usagef("--output %q: use raw, json or table", output)
			}
			_ = fromBeginning // the default
			return consume(cmd.Context(), cmd.OutOrStdout(), o)
		},
	}
	fl := c.Flags()
	fl.Int32VarP(&partition, "partition", "p", 0, "read only this partition (default: all)")
	fl.Int64Var(&fromOffset, "from-offset", 0, "start at this offset")
	fl.BoolVar(&fromBeginning, "from-beginning", false, "start at each partition's first readable offset (the default)")
	fl.StringVar(&fromTime, "from-time", "", "start at the first record at or after this RFC 3339 time (scans from the start offset)")
	fl.BoolVar(&fromEnd, "from-end", false, "start at the high watermark: only new records")
	fl.BoolVarP(&follow, "follow", "F", false, "keep waiting for new records until Ctrl-C")
	fl.Int64VarP(&maxRecords, "max", "n", 0, "stop after this many records (0: no limit)")
	fl.StringVarP(&output, "output", "o", "raw", "output format: raw, json or table")
	return c
}

// consumed is a batch of records of one partition, or a reader's error.
type consumed struct {
	partition int32
	recs      []batch.Record
	err       error
}

func consume(ctx context.Context, stdout io.Writer, o consumeOpts) error {
	c, srv, err := gatewayClient()
	if err != nil {
		return err
	}
	defer c.Close()
	rctx, cancel := rpcCtx(ctx)
	desc, err := c.Admin().DescribeTopic(rctx, connect.NewRequest(&v1.DescribeTopicRequest{Name: o.topic}))
	cancel()
	if err != nil {
		return apiError(ctx, err, srv, fmt.Sprintf("consume %q", o.topic), topicMissing(o.topic))
	}
	var parts []*v1.PartitionInfo
	for _, p := range desc.Msg.GetPartitions() {
		if o.partition == nil || p.GetPartition() == *o.partition {
			parts = append(parts, p)
		}
	}
	if len(parts) == 0 && o.partition != nil {
		return withCode(exitNotFound, fmt.Errorf("topic %q has no partition %d (it has %d)", o.topic, *o.partition, desc.Msg.GetTopic().GetPartitions()))
	}
	pr := newRecordPrinter(stdout, o.output, o.topic)
	defer pr.flush()
	printed := int64(0)
	minTs := int64(-1 << 63)
	if !o.fromTime.IsZero() {
		minTs = o.fromTime.UnixMilli()
	}
	// emit prints recs and reports whether --max is reached.
	emit := func(part int32, recs []batch.Record) (bool, error) {
		for _, r := range recs {
			if r.Timestamp < minTs {
				continue
			}
			if err := pr.print(part, r); err != nil {
				return true, err
			}
			printed++
			if o.max > 0 && printed >= o.max {
				return true, pr.flush()
			}
		}
		return false, pr.flush()
	}
	newReader := func(p *v1.PartitionInfo, wait time.Duration) *client.Reader {
		start := client.OffsetStart
		switch {
		case o.fromOffset != nil:
			start = *o.fromOffset
		case o.fromEnd:
			start = client.OffsetEnd
		}
		return c.NewReader(o.topic, p.GetPartition(), start, client.MaxWait(wait), client.ReaderRequestTimeout(global.timeout))
	}
	// next is one Next bounded by --timeout beyond the long poll, so a
	// vanished gateway fails the command instead of hanging it.
	next := func(r *client.Reader, wait time.Duration) ([]batch.Record, error) {
		nctx, cancel := context.WithTimeout(ctx, global.timeout+wait)
		defer cancel()
		return r.Next(nctx)
	}
	readErr := func(p int32, err error) error {
		if ctx.Err() != nil {
			return withCode(exitInterrupted, errors.New("interrupted"))
		}
		return apiError(ctx, err, srv, fmt.Sprintf("consume %s/%d", o.topic, p), topicMissing(o.topic))
	}

	if !o.follow {
		// Each partition up to its high watermark when we started: the
		// larger of DescribeTopic's and the first fetch's (an agent's WAL
		// end for wal topics can be ahead of the controller's view).
		for _, p := range parts {
			if o.fromEnd {
				continue // nothing to read
			}
			r := newReader(p, 0)
			end := int64(-1)
			for {
				recs, err := next(r, 0)
				if err != nil {
					return readErr(p.GetPartition(), err)
				}
				if end < 0 {
					end = max(p.GetHighWatermark(), r.HighWatermark())
				}
				var keep []batch.Record
				for _, rec := range recs {
					if rec.Offset < end {
						keep = append(keep, rec)
					}
				}
				done, err := emit(p.GetPartition(), keep)
				if err != nil || done {
					return err
				}
				if len(recs) == 0 || r.Offset() >= end {
					break
				}
			}
		}
		return nil
	}

	// --follow: one reader goroutine per partition, one printer.
	const wait = time.Second
	fctx, stop := context.WithCancel(ctx)
	defer stop()
	ch := make(chan consumed)
	var wg sync.WaitGroup
	for _, p := range parts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := newReader(p, wait)
			for {
				nctx, cancel := context.WithTimeout(fctx, global.timeout+wait)
				recs, err := r.Next(nctx)
				cancel()
				if fctx.Err() != nil {
					return
				}
				if err == nil && len(recs) == 0 {
					continue
				}
				select {
				case ch <- consumed{partition: p.GetPartition(), recs: recs, err: err}:
				case <-fctx.Done():
					return
				}
				if err != nil {
					return
				}
			}
		}()
	}
	defer func() {
		stop()
		wg.Wait()
	}()
	for {
		select {
		case <-ctx.Done():
			return nil // Ctrl-C ends a --follow cleanly
		case m := <-ch:
			if m.err != nil {
				return readErr(m.partition, m.err)
			}
			done, err := emit(m.partition, m.recs)
			if err != nil || done {
				return err
			}
		}
	}
}

// recordPrinter prints consumed records in one of the --output formats.
type recordPrinter struct {
	topic  string
	format string
	bw     *bufio.Writer
	tw     *tabwriter.Writer
	header bool
}

func newRecordPrinter(w io.Writer, format, topic string) *recordPrinter {
	p := &recordPrinter{topic: topic, format: format, bw: bufio.NewWriter(w)}
	if format == "table" {
		p.tw = tabwriter.NewWriter(p.bw, 0, 4, 2, ' ', 0)
	}
	return p
}

func (p *recordPrinter) print(part int32, r batch.Record) error {
	switch p.format {
	case "json":
		b, err := json.Marshal(toJSONRecord(p.topic, part, r))
		if err != nil {
			return err
		}
		p.bw.Write(b)
		return p.bw.WriteByte('\n')
	case "table":
		if !p.header {
			fmt.Fprintln(p.tw, "PARTITION\tOFFSET\tTIMESTAMP\tKEY\tVALUE\tHEADERS")
			p.header = true
		}
		hs := ""
		for i, h := range r.Headers {
			if i > 0 {
				hs += ","
			}
			hs += h.Key + "=" + printable(h.Value)
		}
		key := "-"
		if r.Key != nil {
			key = printable(r.Key)
		}
		if hs == "" {
			hs = "-"
		}
		_, err := fmt.Fprintf(p.tw, "%d\t%d\t%s\t%s\t%s\t%s\n", part, r.Offset,
			formatTime(time.UnixMilli(r.Timestamp)), key, printable(r.Value), hs)
		return err
	default:
		p.bw.Write(r.Value)
		return p.bw.WriteByte('\n')
	}
}

func (p *recordPrinter) flush() error {
	if p.tw != nil {
		if err := p.tw.Flush(); err != nil {
			return err
		}
	}
	return p.bw.Flush()
}

// printable quotes bytes for a table cell when they hold control
// characters, tabs, or invalid UTF-8.
func printable(b []byte) string {
	s := string(b)
	for _, r := range s {
		if r < 0x20 || r == 0x7f || r == '\uFFFD' {
			q := fmt.Sprintf("%q", s)
			return q
		}
	}
	return s
}
