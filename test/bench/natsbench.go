package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
)

// natsSystem drives NATS JetStream the same way: one stream per topic with
// one subject per partition (<topic>.<n>, the stream taking <topic>.*), file storage, async publish with
// a window of one batch's worth of records per in-flight request, and
// ordered consumers (one per subject) for reads.
type natsSystem struct {
	url string
	nc  *nats.Conn
	js  nats.JetStreamContext
	pid int
}

func newNATS(url string, pid int) (*natsSystem, error) {
	nc, err := nats.Connect(url, nats.Name("shbench-admin"))
	if err != nil {
		return nil, fmt.Errorf("connect to NATS at %s: %w", url, err)
	}
	js, err := nc.JetStream()
	if err != nil {
		nc.Close()
		return nil, err
	}
	return &natsSystem{url: url, nc: nc, js: js, pid: pid}, nil
}

func (s *natsSystem) name() string { return "nats" }

func (s *natsSystem) close() { s.nc.Close() }

// createTopic makes a stream over the subjects <topic>.*: partition n is
// subject <topic>.<n>. One wildcard rather than a list of every subject:
// nats-server 2.9 takes longer than the JetStream API timeout (5 s) to
// create a stream listing 10,000 subjects.
func (s *natsSystem) createTopic(_ context.Context, topic string, _ workload) error {
	_, err := s.js.AddStream(&nats.StreamConfig{
		Name: topic, Subjects: []string{topic + ".*"}, Storage: nats.FileStorage, Retention: nats.LimitsPolicy,
	})
	if err != nil {
		return fmt.Errorf("create stream %s: %w", topic, err)
	}
	return nil
}

func (s *natsSystem) deleteTopic(_ context.Context, topic string) { _ = s.js.DeleteStream(topic) }

func (s *natsSystem) procs() []procRef {
	if s.pid == 0 {
		return nil
	}
	return []procRef{{Name: "nats-server", PID: s.pid}}
}

func (s *natsSystem) stats(context.Context) serverStats {
	if s.pid == 0 {
		return serverStats{}
	}
	return serverStats{RSS: rssOf(s.pid)}
}

type natsSender struct {
	nc      *nats.Conn
	js      nats.JetStreamContext
	topic   string
	pending chan natsPending
	wg      sync.WaitGroup
}

type natsPending struct {
	f  nats.PubAckFuture
	t0 time.Time
	n  int64
	a  *acker
}

func (s *natsSystem) newSender(_ context.Context, topic string, w workload) (sender, error) {
	nc, err := nats.Connect(s.url, nats.Name("shbench-producer"))
	if err != nil {
		return nil, err
	}
	window := w.recordsPerBatch() * max(w.MaxInFlight, 1)
	js, err := nc.JetStream(nats.PublishAsyncMaxPending(window))
	if err != nil {
		nc.Close()
		return nil, err
	}
	ns := &natsSender{nc: nc, js: js, topic: topic, pending: make(chan natsPending, window)}
	// Acks come back roughly in publish order: wait for each in turn.
	ns.wg.Go(func() {
		for p := range ns.pending {
			select {
			case <-p.f.Ok():
				p.a.done(nil, p.t0, p.n)
			case err := <-p.f.Err():
				p.a.done(err, p.t0, p.n)
			}
		}
	})
	return ns, nil
}

func (s *natsSender) send(ctx context.Context, part int, _, value []byte, t0 time.Time, n int64, a *acker) {
	subj := s.topic + "." + strconv.Itoa(part)
	for {
		f, err := s.js.PublishAsync(subj, value)
		if err == nil {
			s.pending <- natsPending{f: f, t0: t0, n: n, a: a}
			return
		}
		if errors.Is(err, nats.ErrTooManyStalledMsgs) && ctx.Err() == nil {
			continue // the window is full: wait for acks, as the SDK blocks on its buffer
		}
		a.done(err, t0, n)
		return
	}
}

func (s *natsSender) flush(ctx context.Context) error {
	select {
	case <-s.js.PublishAsyncComplete():
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (s *natsSender) close() error {
	close(s.pending)
	s.wg.Wait()
	s.nc.Close()
	return nil
}

// consume runs one ordered consumer per subject, spread over w.Consumers
// connections (with w.Reader multi: one ordered consumer on <topic>.*), until ctx ends (the runner cancels it once every record
// arrived).
func (s *natsSystem) consume(ctx context.Context, topic string, w workload, fromEnd bool, ready func(), onRecord func(int, []byte)) error {
	conns := make([]*nats.Conn, max(w.Consumers, 1))
	jss := make([]nats.JetStreamContext, len(conns))
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
	}()
	for i := range conns {
		c, err := nats.Connect(s.url, nats.Name("shbench-consumer"))
		if err != nil {
			return err
		}
		conns[i] = c
		if jss[i], err = c.JetStream(); err != nil {
			return err
		}
	}
	start := nats.DeliverAll()
	if fromEnd {
		start = nats.DeliverNew()
	}
	if w.Reader == readerMulti {
		// One consumer for every partition, as a MultiReader is: NATS's
		// way is one ordered consumer on the wildcard, the partition in
		// each message's subject.
		sub, err := jss[0].Subscribe(topic+".*", func(m *nats.Msg) {
			p, _ := strconv.Atoi(m.Subject[strings.LastIndexByte(m.Subject, '.')+1:])
			onRecord(p, m.Data)
		}, nats.OrderedConsumer(), start)
		if err != nil {
			return fmt.Errorf("subscribe %s.*: %w", topic, err)
		}
		ready()
		<-ctx.Done()
		_ = sub.Unsubscribe()
		return ctx.Err()
	}
	var subs []*nats.Subscription
	for p := 0; p < w.Partitions; p++ {
		sub, err := jss[p%len(jss)].Subscribe(topic+"."+strconv.Itoa(p), func(m *nats.Msg) { onRecord(p, m.Data) },
			nats.OrderedConsumer(), start)
		if err != nil {
			return fmt.Errorf("subscribe %s.%d: %w", topic, p, err)
		}
		subs = append(subs, sub)
	}
	ready()
	<-ctx.Done()
	for _, sub := range subs {
		_ = sub.Unsubscribe()
	}
	return ctx.Err()
}

// natsFsync is the fsync policy of the Debian nats-server 2.9 JetStream file
// store as the harness runs it (no sync options exist before 2.10).
const natsFsync = "none per publish (nats-server 2.9 file store: writes go to the page cache, no fsync on the publish path)"
