package main

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"connectrpc.com/connect"

	v1 "github.com/streamhouse/streamhouse/api/gen/streamhouse/v1"
	"github.com/streamhouse/streamhouse/pkg/client"
)

// shSystem drives a StreamHouse deployment through the public API (the Go
// SDK), from this separate process.
type shSystem struct {
	url   string
	admin *client.Client
	pid   int // the dev child's pid when the harness started it (RSS fallback)
	// label, when set, names the system in reports instead of
	// "streamhouse" (tracecost runs two of them).
	label string
	// metricsURLs are the processes whose /metrics stats sums: the dev
	// server, or a cluster's gateway (requests), agents (object store)
	// and controllers.
	metricsURLs []string
	// processes are the server processes the harness started (none for
	// --url), measured from /proc.
	processes []procRef
}

// newSH drives the deployment whose gateway is at url; pid is the dev
// server's when the harness started it (0 for --url).
func newSH(url string, pid int) (*shSystem, error) {
	c, err := client.New(url)
	if err != nil {
		return nil, err
	}
	s := &shSystem{url: url, admin: c, pid: pid, metricsURLs: []string{url}}
	if pid > 0 {
		s.processes = []procRef{{Name: "streamhouse dev", PID: pid}}
	}
	return s, nil
}

// newSHCluster drives a cluster the harness started, through its gateway.
func newSHCluster(cl *cluster) (*shSystem, error) {
	c, err := client.New(cl.gateway.URL)
	if err != nil {
		return nil, err
	}
	return &shSystem{url: cl.gateway.URL, admin: c, metricsURLs: cl.metricsURLs(), processes: cl.procs()}, nil
}

func (s *shSystem) procs() []procRef { return s.processes }

func (s *shSystem) name() string {
	if s.label != "" {
		return s.label
	}
	return "streamhouse"
}

func (s *shSystem) close() { _ = s.admin.Close() }

func (s *shSystem) createTopic(ctx context.Context, topic string, w workload) error {
	d := v1.Durability_DURABILITY_WAL
	if w.Durable {
		d = v1.Durability_DURABILITY_DURABLE
	}
	_, err := s.admin.Admin().CreateTopic(ctx, connect.NewRequest(&v1.CreateTopicRequest{
		Name: topic, Partitions: int32(w.Partitions), Durability: d,
	}))
	if err != nil {
		return fmt.Errorf("create topic %s: %w", topic, err)
	}
	return s.waitLeases(ctx, topic, 60*time.Second)
}

// waitLeases waits until every partition of topic has a lease holder.
func (s *shSystem) waitLeases(ctx context.Context, topic string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		resp, err := s.admin.Admin().DescribeTopic(ctx, connect.NewRequest(&v1.DescribeTopicRequest{Name: topic}))
		if err == nil {
			ok := len(resp.Msg.GetPartitions()) == int(resp.Msg.GetTopic().GetPartitions())
			for _, p := range resp.Msg.GetPartitions() {
				ok = ok && p.GetLeaderAgentId() != ""
			}
			if ok {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("topic %s: partitions without a lease holder after %v (last error: %v)", topic, timeout, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (s *shSystem) deleteTopic(ctx context.Context, topic string) {
	_, _ = s.admin.Admin().DeleteTopic(ctx, connect.NewRequest(&v1.DeleteTopicRequest{Name: topic}))
}

func (s *shSystem) stats(ctx context.Context) serverStats {
	var st serverStats
	for _, u := range s.metricsURLs {
		one, err := scrapeMetrics(ctx, u)
		if err != nil && s.pid > 0 && len(s.metricsURLs) == 1 {
			one.RSS = rssOf(s.pid)
		}
		st = st.add(one)
	}
	return st
}

type shSender struct {
	c *client.Client
	p *client.Producer
}

func (s *shSystem) newSender(_ context.Context, topic string, w workload) (sender, error) {
	c, err := client.New(s.url)
	if err != nil {
		return nil, err
	}
	acks := v1.Acks_ACKS_WAL
	if w.Durable {
		acks = v1.Acks_ACKS_DURABLE
	}
	p, err := c.NewProducer(topic, client.Acks(acks), client.BatchBytes(w.BatchBytes),
		client.Linger(w.Linger), client.MaxInFlightPerPartition(w.MaxInFlight))
	if err != nil {
		_ = c.Close()
		return nil, err
	}
	return &shSender{c: c, p: p}, nil
}

// send ignores part: keyless records use the SDK's sticky partitioner and
// keyed ones murmur2, as a real application would.
func (s *shSender) send(ctx context.Context, _ int, key, value []byte, t0 time.Time, n int64, a *acker) {
	s.p.Produce(ctx, client.Record{Key: key, Value: value, Timestamp: t0}, func(r client.Result) { a.done(r.Err, t0, n) })
}

func (s *shSender) flush(ctx context.Context) error { return s.p.Flush(ctx) }

func (s *shSender) close() error {
	err := s.p.Close()
	_ = s.c.Close()
	return err
}

// consume reads every partition over w.Consumers client connections: with
// w.Reader "partition", one Reader (one Fetch long-poll) per partition; with
// "multi", one MultiReader per connection over its share of the partitions
// (one FetchPartitions long-poll for all of them). From the start, each
// partition stops at the high watermark it had when the read began; from
// the end, the readers tail until ctx ends.
func (s *shSystem) consume(ctx context.Context, topic string, w workload, fromEnd bool, ready func(), onRecord func(int, []byte)) error {
	resp, err := s.admin.Admin().DescribeTopic(ctx, connect.NewRequest(&v1.DescribeTopicRequest{Name: topic}))
	if err != nil {
		return fmt.Errorf("describe %s: %w", topic, err)
	}
	conns := make([]*client.Client, max(w.Consumers, 1))
	for i := range conns {
		if conns[i], err = client.New(s.url); err != nil {
			return err
		}
		defer conns[i].Close()
	}
	if w.Reader == readerMulti {
		return consumeMulti(ctx, topic, w, conns, resp.Msg.GetPartitions(), fromEnd, ready, onRecord)
	}
	var wg sync.WaitGroup
	errs := make([]error, len(resp.Msg.GetPartitions()))
	for i, pi := range resp.Msg.GetPartitions() {
		start, end := pi.GetStartOffset(), pi.GetHighWatermark()
		if fromEnd {
			start = end
		}
		if !fromEnd && start >= end {
			continue
		}
		part := int(pi.GetPartition())
		rd := conns[i%len(conns)].NewReader(topic, pi.GetPartition(), start,
			client.MaxBytes(int32(w.FetchBytes)), client.MaxWait(w.MaxWait))
		wg.Go(func() {
			for ctx.Err() == nil {
				recs, err := rd.Next(ctx)
				if err != nil {
					if ctx.Err() == nil {
						errs[i] = err
					}
					return
				}
				for _, r := range recs {
					onRecord(part, r.Value)
				}
				if !fromEnd && rd.Offset() >= end {
					return
				}
			}
		})
	}
	ready()
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	return ctx.Err()
}

// consumeMulti is consume with one MultiReader per connection; partition
// i goes to connection i mod len(conns).
func consumeMulti(ctx context.Context, topic string, w workload, conns []*client.Client, parts []*v1.PartitionInfo, fromEnd bool, ready func(), onRecord func(int, []byte)) error {
	starts := make([]map[client.TopicPartition]int64, len(conns))
	ends := map[client.TopicPartition]int64{}
	for i, pi := range parts {
		start, end := pi.GetStartOffset(), pi.GetHighWatermark()
		if fromEnd {
			start = end
		}
		if !fromEnd && start >= end {
			continue
		}
		tp := client.TopicPartition{Topic: topic, Partition: pi.GetPartition()}
		if starts[i%len(conns)] == nil {
			starts[i%len(conns)] = map[client.TopicPartition]int64{}
		}
		starts[i%len(conns)][tp] = start
		ends[tp] = end
	}
	var wg sync.WaitGroup
	errs := make([]error, len(conns))
	for i, st := range starts {
		if len(st) == 0 {
			continue
		}
		rd := conns[i].NewMultiReader(st, client.MaxBytes(int32(w.FetchBytes)), client.MaxWait(w.MaxWait))
		wg.Go(func() {
			for ctx.Err() == nil {
				got, err := rd.Next(ctx)
				if err != nil {
					if ctx.Err() == nil {
						errs[i] = err
					}
					return
				}
				for _, fp := range got {
					if fp.Err != nil {
						if ctx.Err() == nil {
							errs[i] = fmt.Errorf("partition %d: %w", fp.Partition, fp.Err)
						}
						return
					}
					for _, r := range fp.Records {
						onRecord(int(fp.Partition), r.Value)
					}
					tp := client.TopicPartition{Topic: fp.Topic, Partition: fp.Partition}
					if off, _ := rd.Offset(tp); !fromEnd && off >= ends[tp] {
						rd.Remove(tp) // read to where it was when the read began
					}
				}
				if len(rd.Partitions()) == 0 {
					return
				}
			}
		})
	}
	ready()
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	return ctx.Err()
}

// idlePartitionsRSS creates one topic with n partitions, waits until all are
// leased plus settle, and returns the server's RSS.
func (s *shSystem) idlePartitionsRSS(ctx context.Context, n int, settle time.Duration) (float64, time.Duration, error) {
	start := time.Now()
	w := workload{Partitions: n, Durable: false}
	if err := s.createTopic(ctx, "idle", w); err != nil {
		return 0, 0, err
	}
	took := time.Since(start)
	time.Sleep(settle)
	st, err := scrapeMetrics(ctx, s.url)
	if err != nil {
		return 0, took, err
	}
	return st.RSS, took, nil
}
