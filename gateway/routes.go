package gateway

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"connectrpc.com/connect"

	v1 "github.com/streamhouse/streamhouse/api/gen/streamhouse/v1"
	"github.com/streamhouse/streamhouse/api/gen/streamhouse/v1/streamhousev1connect"
	"github.com/streamhouse/streamhouse/pkg/rpcerr"
)

// topicRoutes is one GetRoutes answer: a topic's settings and, per partition,
// the agent holding its lease. It is immutable once built.
type topicRoutes struct {
	info    *v1.TopicInfo
	byPart  []*v1.PartitionRoute // indexed by partition; nil when missing
	fetched time.Time
	// pushed routes came from the controller's Watch stream: they stay
	// current while the stream is up, so they do not expire.
	pushed bool
}

// newTopicRoutes indexes one GetRoutes answer.
func newTopicRoutes(msg *v1.GetRoutesResponse, at time.Time) *topicRoutes {
	rt := &topicRoutes{
		info:    msg.GetTopic(),
		byPart:  make([]*v1.PartitionRoute, msg.GetTopic().GetPartitions()),
		fetched: at,
	}
	for _, r := range msg.GetRoutes() {
		if p := r.GetPartition(); p >= 0 && int(p) < len(rt.byPart) {
			rt.byPart[p] = r
		}
	}
	return rt
}

func (rt *topicRoutes) route(p int32) *v1.PartitionRoute {
	if p < 0 || int(p) >= len(rt.byPart) {
		return nil
	}
	return rt.byPart[p]
}

// checkPartition returns InvalidArgument unless p is a partition of the topic.
func (rt *topicRoutes) checkPartition(p int32) error {
	if n := rt.info.GetPartitions(); p < 0 || p >= n {
		return invalid("partition %d is out of range: topic %q has partitions 0 to %d", p, rt.info.GetName(), n-1)
	}
	return nil
}

// routeCache caches GetRoutes answers per topic for ttl.
type routeCache struct {
	ctl streamhousev1connect.ControllerServiceClient
	ttl time.Duration
	now func() time.Time

	mu     sync.Mutex
	topics map[string]*topicRoutes
}

func newRouteCache(ctl streamhousev1connect.ControllerServiceClient, ttl time.Duration) *routeCache {
	return &routeCache{ctl: ctl, ttl: ttl, now: time.Now, topics: make(map[string]*topicRoutes)}
}

// get returns the topic's routes, from the cache when they are fresh.
// NotFound when the topic does not exist.
func (c *routeCache) get(ctx context.Context, topic string) (*topicRoutes, error) {
	c.mu.Lock()
	rt, ok := c.topics[topic]
	if ok && (rt.pushed || c.now().Sub(rt.fetched) < c.ttl) {
		c.mu.Unlock()
		return rt, nil
	}
	c.mu.Unlock()
	return c.fetch(ctx, topic)
}

// apply takes one message of the controller's Watch stream.
func (c *routeCache) apply(msg *v1.WatchResponse) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	for _, t := range msg.GetTopics() {
		if t.GetTopic().GetPartitions() < 1 {
			continue
		}
		rt := newTopicRoutes(t, now)
		rt.pushed = true
		c.topics[t.GetTopic().GetName()] = rt
	}
	for _, name := range msg.GetDeleted() {
		delete(c.topics, name)
	}
}

// unpush makes every pushed entry expire like a fetched one: the stream
// broke, so they may go stale.
func (c *routeCache) unpush() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, rt := range c.topics {
		rt.pushed = false
	}
}

// watch keeps the cache current from the controller's Watch stream until
// ctx ends, reconnecting with backoff; while the stream is down, entries
// expire after the TTL as without it.
func (c *routeCache) watch(ctx context.Context, rs streamhousev1connect.RoutesServiceClient, log *slog.Logger) {
	for attempt := 0; ctx.Err() == nil; attempt++ {
		stream, err := rs.Watch(ctx, connect.NewRequest(&v1.WatchRequest{}))
		if err == nil {
			for stream.Receive() {
				c.apply(stream.Msg())
				attempt = 0
			}
			err = stream.Err()
			_ = stream.Close()
		}
		c.unpush()
		if ctx.Err() != nil {
			return
		}
		log.Debug("routes watch stream ended; reconnecting", "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(min(time.Duration(attempt+1)*100*time.Millisecond, 2*time.Second)):
		}
	}
}

// refresh returns routes newer than stale: ones another caller fetched after
// stale was found wanting, or a new GetRoutes answer.
func (c *routeCache) refresh(ctx context.Context, topic string, stale *topicRoutes) (*topicRoutes, error) {
	c.mu.Lock()
	rt, ok := c.topics[topic]
	if ok && rt != stale && rt.fetched.After(stale.fetched) && c.now().Sub(rt.fetched) < c.ttl {
		c.mu.Unlock()
		return rt, nil
	}
	if ok && rt == stale {
		delete(c.topics, topic)
	}
	c.mu.Unlock()
	return c.fetch(ctx, topic)
}

// invalidate forgets a topic's routes (its settings changed).
func (c *routeCache) invalidate(topic string) {
	c.mu.Lock()
	delete(c.topics, topic)
	c.mu.Unlock()
}

func (c *routeCache) fetch(ctx context.Context, topic string) (*topicRoutes, error) {
	res, err := c.ctl.GetRoutes(ctx, connect.NewRequest(&v1.GetRoutesRequest{Topic: topic}))
	if err != nil {
		if connect.CodeOf(err) == connect.CodeNotFound {
			c.mu.Lock()
			delete(c.topics, topic)
			c.mu.Unlock()
			return nil, connect.NewError(connect.CodeNotFound, errorf("topic %q does not exist", topic))
		}
		return nil, upstream(err)
	}
	msg := res.Msg
	if msg.GetTopic() == nil || msg.GetTopic().GetPartitions() < 1 {
		return nil, unavailable("routing metadata for topic %q is incomplete; retry", topic)
	}
	rt := newTopicRoutes(msg, c.now())
	if c.ttl > 0 {
		c.mu.Lock()
		if old, ok := c.topics[topic]; !ok || !old.fetched.After(rt.fetched) {
			c.topics[topic] = rt
		}
		c.mu.Unlock()
	}
	return rt, nil
}

// retryable reports whether an agent error means the routes may be stale:
// the agent is not the lease holder (FailedPrecondition) or cannot be reached
// or has no holder (Unavailable).
func retryable(err error) bool {
	switch connect.CodeOf(err) {
	case connect.CodeFailedPrecondition, connect.CodeUnavailable:
		// Only refusals marked "not applied": a broken connection is
		// Unavailable too, and retrying an Append after it could write twice.
		return rpcerr.IsNotApplied(err)
	}
	return false
}

// onAgent calls fn with the client of the agent holding partition p of the
// topic whose routes are rt. When that fails in a way that means the routes
// may be stale (see retryable), it refreshes the topic's routes once and
// calls fn once more, on the agent the new routes name.
//
// Only refusals marked by rpcerr.NotApplied are retried, so a retried
// Append never writes twice.
func (g *Gateway) onAgent(ctx context.Context, rt *topicRoutes, p int32, fn func(streamhousev1connect.AgentServiceClient) error) error {
	err := g.tryAgent(rt, p, fn)
	if err == nil || !retryable(err) || ctx.Err() != nil {
		return err
	}
	g.log.DebugContext(ctx, "refreshing routes after agent error", "topic", rt.info.GetName(), "partition", p, "err", err)
	fresh, rerr := g.routes.refresh(ctx, rt.info.GetName(), rt)
	if rerr != nil {
		return rerr
	}
	return g.tryAgent(fresh, p, fn)
}

func (g *Gateway) tryAgent(rt *topicRoutes, p int32, fn func(streamhousev1connect.AgentServiceClient) error) error {
	r := rt.route(p)
	if r.GetAddress() == "" {
		return unavailable("partition %s/%d has no agent yet; retry", rt.info.GetName(), p)
	}
	client, err := g.cfg.Agents(r.GetAddress())
	if err != nil {
		return unavailable("agent %s (%s) for partition %s/%d: %v", r.GetAgentId(), r.GetAddress(), rt.info.GetName(), p, err)
	}
	err = fn(client)
	if err != nil && rpcerr.NeverSent(err) {
		// The agent could not be reached at all: nothing was appended, so
		// the refusal is safe to retry (the lease moves when it expires).
		return rpcerr.NotApplied(connect.CodeUnavailable, fmt.Errorf("agent %s at %s for partition %s/%d is unreachable; retry", r.GetAgentId(), r.GetAddress(), rt.info.GetName(), p))
	}
	return upstream(err)
}

// topicLookup resolves each topic a multi-partition request names once (its
// name checked, its routes from the cache or the controller), and each
// partition against it. Errors are the partition's, not the request's.
type topicLookup struct {
	g      *Gateway
	topics map[string]topicLookupResult
}

type topicLookupResult struct {
	rt  *topicRoutes
	err error
}

func (g *Gateway) newTopicLookup() *topicLookup {
	return &topicLookup{g: g, topics: map[string]topicLookupResult{}}
}

// partition returns the routes of topic and whether p is one of its
// partitions: routes with a nil error, routes with the InvalidArgument of a
// partition out of range, or nil routes with the topic's error (a bad name,
// NotFound, the controller unreachable).
func (l *topicLookup) partition(ctx context.Context, topic string, p int32) (*topicRoutes, error) {
	r, ok := l.topics[topic]
	if !ok {
		if r.err = validateTopic(topic); r.err == nil {
			r.rt, r.err = l.g.routes.get(ctx, topic)
		}
		l.topics[topic] = r
	}
	if r.err != nil {
		return nil, r.err
	}
	return r.rt, r.rt.checkPartition(p)
}

// routeRefresher refreshes, for the retry of a multi-partition request, the
// routes of each topic an agent's refusal showed stale, once per topic.
type routeRefresher struct {
	g     *Gateway
	fresh map[*topicRoutes]*topicRoutes
}

func (g *Gateway) newRouteRefresher() *routeRefresher {
	return &routeRefresher{g: g, fresh: map[*topicRoutes]*topicRoutes{}}
}

// refresh returns routes newer than stale, or nil when they could not be
// had (the caller keeps the refusal it had). partition and cause are for the
// log line.
func (r *routeRefresher) refresh(ctx context.Context, stale *topicRoutes, partition int32, cause error) *topicRoutes {
	rt, ok := r.fresh[stale]
	if !ok {
		name := stale.info.GetName()
		r.g.log.DebugContext(ctx, "refreshing routes after agent refusal", "topic", name, "partition", partition, "err", cause)
		var err error
		if rt, err = r.g.routes.refresh(ctx, name, stale); err != nil {
			rt = nil
		}
		r.fresh[stale] = rt
	}
	return rt
}
