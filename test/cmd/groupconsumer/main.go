// Command groupconsumer is a consumer group member for the acceptance
// tests: it consumes through the Go SDK's GroupConsumer with manual commits
// (after every Poll, and in OnRevoked) and writes one JSON line to stdout
// for every record it processed and every commit, assignment, revocation
// and loss, so a test can check delivery from the outside. SIGTERM or
// SIGINT closes it gracefully (leaving the group); SIGKILL does not.
//
//	groupconsumer --gateway http://127.0.0.1:8080 --group g --topics orders
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/streamhouse/streamhouse/pkg/client"
)

// Event is one output line.
type Event struct {
	Ev        string           `json:"ev"`
	Time      int64            `json:"ts"` // Unix ms
	Member    string           `json:"member,omitempty"`
	Topic     string           `json:"t,omitempty"`
	Partition int32            `json:"p"`
	Offset    int64            `json:"o"`
	Value     string           `json:"v,omitempty"`
	Parts     []string         `json:"parts,omitempty"`
	Offsets   map[string]int64 `json:"offsets,omitempty"`
	Err       string           `json:"err,omitempty"`
}

type out struct {
	mu sync.Mutex
	w  *bufio.Writer
}

func (o *out) emit(e Event) {
	e.Time = time.Now().UnixMilli()
	b, _ := json.Marshal(e)
	o.mu.Lock()
	defer o.mu.Unlock()
	o.w.Write(b)
	o.w.WriteByte('\n')
}

func (o *out) flush() {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.w.Flush()
}

func names(tps []client.TopicPartition) []string {
	var s []string
	for _, tp := range tps {
		s = append(s, tp.String())
	}
	return s
}

func main() {
	gateway := flag.String("gateway", "http://127.0.0.1:8080", "gateway base URL")
	group := flag.String("group", "", "consumer group id")
	topics := flag.String("topics", "", "comma-separated topics")
	regex := flag.String("regex", "", "topic regex (instead of --topics)")
	instance := flag.String("instance-id", "", "static member instance id")
	session := flag.Duration("session-timeout", 0, "session timeout (0: the controller's default)")
	assignor := flag.String("assignor", "", "range, roundrobin or uniform")
	reset := flag.String("auto-offset-reset", "earliest", "earliest or latest")
	flag.Parse()
	if err := run(*gateway, *group, *topics, *regex, *instance, *session, *assignor, *reset); err != nil {
		fmt.Fprintln(os.Stderr, "groupconsumer:", err)
		os.Exit(1)
	}
}

func run(gateway, group, topics, regex, instance string, session time.Duration, assignor, reset string) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	c, err := client.New(gateway)
	if err != nil {
		return err
	}
	defer c.Close()
	o := &out{w: bufio.NewWriterSize(os.Stdout, 1<<16)}
	defer o.flush()
	// positions is what this process processed: next offset per partition.
	positions := map[client.TopicPartition]int64{}
	var gc *client.GroupConsumer
	commit := func(ctx context.Context, why string) {
		o.flush() // processed lines are out before the commit is
		snap := map[string]int64{}
		for tp, off := range positions {
			snap[tp.String()] = off
		}
		if err := gc.Commit(ctx); err != nil {
			o.emit(Event{Ev: "commit_error", Member: gc.MemberID(), Err: err.Error()})
			o.flush()
			return
		}
		o.emit(Event{Ev: "commit", Member: gc.MemberID(), Offsets: snap, Value: why})
	}
	cfg := client.GroupConsumerConfig{
		Group: group, TopicRegex: regex, InstanceID: instance, SessionTimeout: session, Assignor: assignor,
		ManualCommit: true, AutoOffsetReset: reset,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo})),
		OnAssigned: func(ctx context.Context, tps []client.TopicPartition) {
			o.emit(Event{Ev: "assigned", Member: gc.MemberID(), Parts: names(tps)})
			o.flush()
		},
		OnRevoked: func(ctx context.Context, tps []client.TopicPartition) {
			commit(ctx, "revoke")
			for _, tp := range tps {
				delete(positions, tp)
			}
			o.emit(Event{Ev: "revoked", Member: gc.MemberID(), Parts: names(tps)})
			o.flush()
		},
		OnLost: func(ctx context.Context, tps []client.TopicPartition, err error) {
			o.emit(Event{Ev: "lost", Member: gc.MemberID(), Parts: names(tps), Err: err.Error()})
			// Try to save the progress anyway: the coordinator refuses the
			// commit of a fenced member (seen as a commit_error line).
			commit(ctx, "lost")
			for _, tp := range tps {
				delete(positions, tp)
			}
			o.flush()
		},
	}
	if topics != "" {
		cfg.Topics = strings.Split(topics, ",")
	}
	gc, err = c.NewGroupConsumer(cfg)
	if err != nil {
		return err
	}
	o.emit(Event{Ev: "started", Member: gc.MemberID()})
	o.flush()
	for {
		recs, err := gc.Poll(ctx)
		if ctx.Err() != nil {
			break
		}
		if err != nil {
			o.emit(Event{Ev: "poll_error", Err: err.Error()})
			o.flush()
			if errors.Is(err, context.Canceled) {
				break
			}
			continue
		}
		member := gc.MemberID()
		for _, r := range recs {
			o.emit(Event{Ev: "rec", Member: member, Topic: r.Topic, Partition: r.Partition, Offset: r.Offset, Value: string(r.Value)})
			positions[client.TopicPartition{Topic: r.Topic, Partition: r.Partition}] = r.Offset + 1
		}
		// Records handed out are processed: commit them even if a
		// SIGTERM arrived meanwhile.
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		commit(cctx, "poll")
		cancel()
	}
	cctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err = gc.Close(cctx)
	o.emit(Event{Ev: "closed", Member: gc.MemberID(), Err: errString(err)})
	return err
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
