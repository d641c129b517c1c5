package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	v1 "github.com/streamhouse/streamhouse/api/gen/streamhouse/v1"
	"github.com/streamhouse/streamhouse/pkg/batch"
	"github.com/streamhouse/streamhouse/pkg/client"
)

// jsonRecord is one line of `produce --format json` (and of `consume
// --output json`, whose extra fields produce ignores, so the two round-trip).
// Strings are UTF-8 text; key_base64 and value_base64 carry arbitrary bytes.
type jsonRecord struct {
	Topic       string            `json:"topic,omitempty"`
	Partition   *int32            `json:"partition,omitempty"`
	Offset      *int64            `json:"offset,omitempty"`
	Timestamp   string            `json:"timestamp,omitempty"`
	Key         *string           `json:"key,omitempty"`
	KeyBase64   *string           `json:"key_base64,omitempty"`
	Value       *string           `json:"value,omitempty"`
	ValueBase64 *string           `json:"value_base64,omitempty"`
	Headers     map[string]string `json:"headers,omitempty"`
}

func newProduceCommand() *cobra.Command {
	var (
		file, format, key, acks string
		partition               int32
	)
	c := &cobra.Command{
		Use:   "produce TOPIC [--file F] [--format lines|json] [--key K] [--partition P] [--acks durable|wal]",
		Short: "Produce records from stdin or a file, one per line",
		Long: `Produce records to TOPIC from stdin (or --file), one record per line, with
the Go SDK's batching producer.

--format lines (the default): each line is a record's value (without its
line ending); every record gets --key and --partition when given, otherwise
keyless records are spread over partitions (sticky, as Kafka does).

--format json: each line is a JSON object
  {"key": "...", "value": "...", "headers": {"k": "v"}, "partition": 1}
with strings taken as UTF-8 text; "key_base64"/"value_base64" carry arbitrary
bytes and "timestamp" (RFC 3339) sets the record time. Every field is
optional; --key and --partition are the defaults. Blank lines are skipped.
The lines ` + "`shctl consume --output json`" + ` prints are valid input.

Without --partition, a keyed record goes to the partition of the murmur2 hash
of its key (as Kafka's default partitioner).

When stderr is a terminal a progress line shows the records sent and acked
and the rate. At the end it prints "produced N records to TOPIC (M failed)"
and exits non-zero if any record failed.`,
		Example: `  seq 1 1000 | shctl produce orders
  shctl produce orders --file events.txt --key customer-42 --acks wal
  echo '{"key":"alice","value":"hello","headers":{"source":"cli"}}' | shctl produce orders --format json`,
		Args: exactArgs("TOPIC"),
		RunE: func(cmd *cobra.Command, args []string) error {
			topic := args[0]
			opts := produceOpts{topic: topic}
			switch format {
			case "lines", "json":
				opts.json = format == "json"
			default:
				return usagef("--format %q: use lines or json", format)
			}
			switch acks {
			case "":
			case "durable":
				opts.acks = v1.Acks_ACKS_DURABLE
			case "wal":
				opts.acks = v1.Acks_ACKS_WAL
			default:
				return usagef("--acks %q: use durable or wal (default: the topic's durability)", acks)
			}
			if cmd.Flags().Changed("key") {
				opts.key = []byte(key)
			}
			if cmd.Flags().Changed("partition") {
				if partition < 0 {
					return usagef("--partition %d: must be 0 or more", partition)
				}
				opts.partition = &partition
			}
			in := cmd.InOrStdin()
			if file != "" && file != "-" {
				f, err := os.Open(file)
				if err != nil {
					return usagef("--file: %v", err)
				}
				defer f.Close()
				in = f
			}
			return produce(cmd.Context(), cmd.OutOrStdout(), in, opts)
		},
	}
	f := c.Flags()
	f.StringVarP(&file, "file", "f", "", "read records from this file instead of stdin")
	f.StringVar(&format, "format", "lines", "input format: lines (one value per line) or json (one JSON object per line)")
	f.StringVarP(&key, "key", "k", "", "key of every record (json: the default key)")
	f.Int32VarP(&partition, "partition", "p", 0, "partition of every record (default: by key, or sticky for keyless records)")
	f.StringVar(&acks, "acks", "", "durable or wal: what to wait for (default: the topic's durability)")
	return c
}

type produceOpts struct {
	topic     string
	json      bool
	key       []byte
	partition *int32
	acks      v1.Acks
}

// produceLine is one parsed input line, or the error that ends the input.
type produceLine struct {
	rec client.Record
	err error
}

func produce(ctx context.Context, stdout io.Writer, in io.Reader, o produceOpts) error {
	c, srv, err := gatewayClient()
	if err != nil {
		return err
	}
	defer c.Close()
	p, err := c.NewProducer(o.topic, client.Acks(o.acks), client.RequestTimeout(global.timeout),
		client.MaxRetryDuration(global.timeout), client.Linger(10*time.Millisecond))
	if err != nil {
		return apiError(ctx, err, srv, fmt.Sprintf("produce to %q", o.topic), topicMissing(o.topic))
	}

	var (
		sent, acked, failed atomic.Int64
		errMu               sync.Mutex
		firstErr            error
	)
	cb := func(r client.Result) {
		if r.Err != nil {
			failed.Add(1)
			errMu.Lock()
			if firstErr == nil {
				firstErr = r.Err
			}
			errMu.Unlock()
			return
		}
		acked.Add(1)
	}

	// Progress on a terminal.
	stopProgress := func() {}
	if term.IsTerminal(int(os.Stderr.Fd())) {
		done := make(chan struct{})
		var wg sync.WaitGroup
		wg.Add(1)
		start := time.Now()
		go func() {
			defer wg.Done()
			t := time.NewTicker(250 * time.Millisecond)
			defer t.Stop()
			for {
				select {
				case <-done:
					fmt.Fprint(os.Stderr, "\r\033[K")
					return
				case <-t.C:
					el := time.Since(start).Seconds()
					fmt.Fprintf(os.Stderr, "\r\033[Ksent %d, acked %d, failed %d, %.0f records/s",
						sent.Load(), acked.Load(), failed.Load(), float64(acked.Load())/max(el, 0.001))
				}
			}
		}()
		stopProgress = func() { close(done); wg.Wait() }
	}

	// Read lines on their own goroutine so Ctrl-C is seen even while a
	// terminal read blocks.
	lines := make(chan produceLine, 256)
	go readRecords(in, o, lines)

	var inputErr error
	interrupted := false
loop:
	for {
		select {
		case <-ctx.Done():
			interrupted = true
			break loop
		case l, ok := <-lines:
			if !ok {
				break loop
			}
			if l.err != nil {
				inputErr = l.err
				break loop
			}
			sent.Add(1)
			p.Produce(ctx, l.rec, cb)
		}
	}
	closeErr := p.Close()
	stopProgress()

	n, m := acked.Load(), failed.Load()
	if jsonOutput() {
		if err := printJSON(stdout, map[string]any{"topic": o.topic, "produced": n, "failed": m}); err != nil {
			return err
		}
	} else {
		fmt.Fprintf(stdout, "produced %d records to %s (%d failed)\n", n, o.topic, m)
	}
	switch {
	case interrupted:
		return withCode(exitInterrupted, fmt.Errorf("interrupted after %d records", sent.Load()))
	case inputErr != nil:
		return inputErr
	case m > 0:
		errMu.Lock()
		fe := firstErr
		errMu.Unlock()
		err := apiError(ctx, fe, srv, "produce", topicMissing(o.topic))
		code := exitCode(err)
		if errors.Is(fe, client.ErrUnknownOutcome) || errors.Is(fe, client.ErrRecordTooLarge) || errors.Is(fe, client.ErrBadPartition) {
			err = fe
			code = exitError
			if !errors.Is(fe, client.ErrUnknownOutcome) {
				code = exitUsage
			}
		}
		return withCode(code, fmt.Errorf("%d of %d records failed; first error: %v", m, n+m, err))
	case closeErr != nil:
		return withCode(exitError, closeErr)
	}
	return nil
}

// readRecords parses in into records and closes out at EOF or after the
// first error.
func readRecords(in io.Reader, o produceOpts, out chan<- produceLine) {
	defer close(out)
	r := bufio.NewReaderSize(in, 1<<16)
	for lineNo := 1; ; lineNo++ {
		line, err := r.ReadBytes('\n')
		if len(line) > 0 {
			line = bytes.TrimSuffix(line, []byte("\n"))
			line = bytes.TrimSuffix(line, []byte("\r"))
			switch {
			case !o.json:
				out <- produceLine{rec: client.Record{Key: o.key, Value: line, Partition: o.partition}}
			case len(bytes.TrimSpace(line)) > 0:
				rec, perr := parseJSONRecord(line, o)
				if perr != nil {
					out <- produceLine{err: usagef("input line %d: %v", lineNo, perr)}
					return
				}
				out <- produceLine{rec: rec}
			}
		}
		if err == io.EOF {
			return
		}
		if err != nil {
			out <- produceLine{err: withCode(exitError, fmt.Errorf("read input: %w", err))}
			return
		}
	}
}

func parseJSONRecord(line []byte, o produceOpts) (client.Record, error) {
	var jr jsonRecord
	if err := json.Unmarshal(line, &jr); err != nil {
		return client.Record{}, fmt.Errorf("not a JSON object like {\"key\":\"k\",\"value\":\"v\"}: %v", err)
	}
	rec := client.Record{Key: o.key, Partition: o.partition}
	switch {
	case jr.KeyBase64 != nil:
		b, err := base64.StdEncoding.DecodeString(*jr.KeyBase64)
		if err != nil {
			return rec, fmt.Errorf("key_base64: %v", err)
		}
		rec.Key = b
	case jr.Key != nil:
		rec.Key = []byte(*jr.Key)
	}
	switch {
	case jr.ValueBase64 != nil:
		b, err := base64.StdEncoding.DecodeString(*jr.ValueBase64)
		if err != nil {
			return rec, fmt.Errorf("value_base64: %v", err)
		}
		rec.Value = b
	case jr.Value != nil:
		rec.Value = []byte(*jr.Value)
	}
	if jr.Partition != nil {
		if *jr.Partition < 0 {
			return rec, fmt.Errorf("partition %d: must be 0 or more", *jr.Partition)
		}
		rec.Partition = jr.Partition
	}
	if jr.Timestamp != "" {
		ts, err := time.Parse(time.RFC3339Nano, jr.Timestamp)
		if err != nil {
			return rec, fmt.Errorf("timestamp %q: want RFC 3339 like 2025-01-02T15:04:05Z", jr.Timestamp)
		}
		rec.Timestamp = ts
	}
	if len(jr.Headers) > 0 {
		keys := make([]string, 0, len(jr.Headers))
		for k := range jr.Headers {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			rec.Headers = append(rec.Headers, batch.Header{Key: k, Value: []byte(jr.Headers[k])})
		}
	}
	return rec, nil
}

// toJSONRecord is the JSON form of a consumed record.
func toJSONRecord(topic string, partition int32, r batch.Record) jsonRecord {
	jr := jsonRecord{Topic: topic, Partition: &partition, Offset: &r.Offset,
		Timestamp: time.UnixMilli(r.Timestamp).UTC().Format(time.RFC3339Nano)}
	if r.Key != nil {
		if utf8.Valid(r.Key) {
			s := string(r.Key)
			jr.Key = &s
		} else {
			s := base64.StdEncoding.EncodeToString(r.Key)
			jr.KeyBase64 = &s
		}
	}
	if r.Value != nil {
		if utf8.Valid(r.Value) {
			s := string(r.Value)
			jr.Value = &s
		} else {
			s := base64.StdEncoding.EncodeToString(r.Value)
			jr.ValueBase64 = &s
		}
	}
	if len(r.Headers) > 0 {
		jr.Headers = make(map[string]string, len(r.Headers))
		for _, h := range r.Headers {
			jr.Headers[h.Key] = string(h.Value)
		}
	}
	return jr
}
