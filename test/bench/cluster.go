package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"

	v1 "github.com/streamhouse/streamhouse/api/gen/streamhouse/v1"
	"github.com/streamhouse/streamhouse/api/gen/streamhouse/v1/streamhousev1connect"
	"github.com/streamhouse/streamhouse/pkg/objstore/s3test"
)

// Cluster shape of --start-cluster: the smallest that has a Raft quorum
// surviving one loss, more than one agent (so partitions are spread and
// every produce goes gateway -> agent over the network) and a separate
// gateway.
const (
	clusterControllers = 3
	clusterAgents      = 2
	clusterBucket      = "streamhouse-bench"
	clusterRegion      = "us-east-1"
)

// cluster is a StreamHouse cluster of separate processes on loopback, as
// in production: controllers, agents and a gateway started from the
// streamhouse binary, and versitygw (a real S3 server over a local folder)
// as the object store, so the gateway -> agent hop and the S3 PUTs and GETs
// are all in what is measured.
type cluster struct {
	s3          *child
	s3Endpoint  string
	controllers []*serverProc
	agents      []*serverProc
	gateway     *serverProc
}

// startCluster starts versitygw, the controllers (and waits for a Raft
// leader), the agents (with agentArgs) and the gateway, each on free
// loopback ports with its data under dir, and waits until the controllers
// see every agent and the gateway. On error, whatever started is stopped.
func startCluster(ctx context.Context, bin, dir string, agentArgs []string) (_ *cluster, err error) {
	c := &cluster{}
	defer func() {
		if err != nil {
			c.stop()
		}
	}()
	access, secret := randomHex(10), randomHex(20)
	if c.s3, c.s3Endpoint, err = startVersity(ctx, filepath.Join(dir, "s3"), access, secret); err != nil {
		return nil, err
	}

	var raft, gossip, initial []string
	for i := range clusterControllers {
		r, err1 := freeAddr()
		g, err2 := freeAddr()
		if err := errors.Join(err1, err2); err != nil {
			return nil, err
		}
		raft, gossip = append(raft, r), append(gossip, g)
		initial = append(initial, fmt.Sprintf("c%d=%s", i+1, r))
	}
	seeds := strings.Join(gossip, ",")
	for i := range clusterControllers {
		p, err := startServer(ctx, bin, "controller", []string{
			"--data-dir", filepath.Join(dir, fmt.Sprintf("controller-%d", i+1)),
			"--node-id", fmt.Sprintf("c%d", i+1), "--raft-listen", raft[i], "--initial-cluster", strings.Join(initial, ","),
			"--gossip-listen", gossip[i], "--seeds", seeds,
		}, nil)
		if err != nil {
			return nil, fmt.Errorf("controller %d: %w", i+1, err)
		}
		c.controllers = append(c.controllers, p)
	}
	if err := c.waitStatus(ctx, "a Raft leader", func(st *v1.StatusResponse) bool { return st.GetLeaderId() != "" }); err != nil {
		return nil, err
	}
	// Credentials in the environment, not on the command line (ps shows
	// that to every user).
	s3Env := []string{"AWS_ACCESS_KEY_ID=" + access, "AWS_SECRET_ACCESS_KEY=" + secret}
	for i := range clusterAgents {
		args := []string{
			"--data-dir", filepath.Join(dir, fmt.Sprintf("agent-%d", i+1)),
			"--seeds", seeds, "--gossip-listen", "127.0.0.1:0",
			"--object-store", "s3", "--s3-endpoint", c.s3Endpoint, "--s3-bucket", clusterBucket, "--s3-region", clusterRegion,
			"--s3-create-bucket",
		}
		p, err := startServer(ctx, bin, "agent", append(args, agentArgs...), s3Env)
		if err != nil {
			return nil, fmt.Errorf("agent %d: %w", i+1, err)
		}
		c.agents = append(c.agents, p)
	}
	if c.gateway, err = startServer(ctx, bin, "gateway", []string{"--seeds", seeds, "--gossip-listen", "127.0.0.1:0"}, nil); err != nil {
		return nil, fmt.Errorf("gateway: %w", err)
	}
	err = c.waitStatus(ctx, fmt.Sprintf("%d agents and the gateway registered", clusterAgents), func(st *v1.StatusResponse) bool {
		return st.GetLeaderId() != "" && len(st.GetAgents()) >= clusterAgents && len(st.GetGateways()) >= 1
	})
	if err != nil {
		return nil, err
	}
	return c, nil
}

// waitStatus polls the controllers' Status until one answers with ok, for
// up to 60 s.
func (c *cluster) waitStatus(ctx context.Context, what string, ok func(*v1.StatusResponse) bool) error {
	hc := &http.Client{Transport: &http.Transport{}}
	defer hc.CloseIdleConnections()
	deadline := time.Now().Add(60 * time.Second)
	var last error
	for {
		for _, p := range c.controllers {
			rctx, cancel := context.WithTimeout(ctx, time.Second)
			st, err := streamhousev1connect.NewClusterServiceClient(hc, p.URL).Status(rctx, connect.NewRequest(&v1.StatusRequest{}))
			cancel()
			if err == nil && ok(st.Msg) {
				return nil
			}
			if err != nil {
				last = err
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("cluster: no %s within 60s (last error: %v)", what, last)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// stop stops the gateway, then the agents (a clean shutdown: flush, commit,
// release leases), then the controllers and the S3 server.
func (c *cluster) stop() {
	if c == nil {
		return
	}
	if c.gateway != nil {
		c.gateway.stop()
	}
	stopAll := func(ps []*serverProc) {
		var wg sync.WaitGroup
		for _, p := range ps {
			wg.Go(p.stop)
		}
		wg.Wait()
	}
	stopAll(c.agents)
	stopAll(c.controllers)
	if c.s3 != nil {
		c.s3.stop()
	}
}

// procs are every process of the cluster; versitygw is External: it stands
// in for S3, whose CPU and memory are not StreamHouse's.
func (c *cluster) procs() []procRef {
	var out []procRef
	for i, p := range c.controllers {
		out = append(out, procRef{Name: fmt.Sprintf("controller-%d", i+1), PID: p.pid()})
	}
	for i, p := range c.agents {
		out = append(out, procRef{Name: fmt.Sprintf("agent-%d", i+1), PID: p.pid()})
	}
	out = append(out, procRef{Name: "gateway", PID: c.gateway.pid()})
	if c.s3 != nil {
		out = append(out, procRef{Name: "versitygw (S3)", PID: c.s3.pid(), External: true})
	}
	return out
}

// metricsURLs are the processes whose /metrics are summed: the gateway
// counts requests, the agents object-store operations.
func (c *cluster) metricsURLs() []string {
	out := []string{c.gateway.URL}
	for _, p := range c.agents {
		out = append(out, p.URL)
	}
	for _, p := range c.controllers {
		out = append(out, p.URL)
	}
	return out
}

// describe is the cluster for the report's systems line.
func (c *cluster) describe() string {
	return fmt.Sprintf("started: %d controllers, %d agents, 1 gateway (streamhouse controller|agent|gateway), S3: versitygw at %s, all on loopback",
		len(c.controllers), len(c.agents), c.s3Endpoint)
}

// startVersity runs versitygw (found as s3test finds it: $STREAMHOUSE_VERSITYGW,
// <repo>/bin/versitygw, or PATH) over a posix root in dir on a free port,
// with root credentials access/secret, and waits until it answers HTTP.
// The agents create the bucket (--s3-create-bucket).
func startVersity(ctx context.Context, dir, access, secret string) (*child, string, error) {
	bin, err := s3test.FindBinary()
	if err != nil {
		return nil, "", fmt.Errorf("--start-cluster needs versitygw (go tool task tools:versitygw builds bin/versitygw): %w", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, "", err
	}
	var lastErr error
	for range 5 { // another process may take the free port first
		addr, err := freeAddr()
		if err != nil {
			return nil, "", err
		}
		c := &child{}
		cmd := exec.Command(bin, "--port", addr, "--region", clusterRegion, "--quiet", "posix", dir)
		for _, kv := range os.Environ() {
			// Its flags all have VGW_ and ROOT_ environment twins.
			if !strings.HasPrefix(kv, "VGW_") && !strings.HasPrefix(kv, "ROOT_") {
				cmd.Env = append(cmd.Env, kv)
			}
		}
		cmd.Env = append(cmd.Env, "ROOT_ACCESS_KEY="+access, "ROOT_SECRET_KEY="+secret)
		stdout, err := startChild("versitygw", cmd, c)
		if err != nil {
			return nil, "", err
		}
		go func() {
			_, _ = io.Copy(c, stdout)
			_ = cmd.Wait()
			close(c.done)
		}()
		endpoint := "http://" + addr
		if lastErr = waitServing(ctx, endpoint, c.done, 30*time.Second); lastErr == nil {
			return c, endpoint, nil
		}
		c.stop()
		lastErr = fmt.Errorf("versitygw: %w\n%s", lastErr, c.tail())
		if !strings.Contains(c.tail(), "address already in use") {
			break
		}
	}
	return nil, "", lastErr
}

// waitServing polls url until it answers any HTTP response (versitygw
// answers an unsigned request with 403: it is up), the process exits
// (done), or timeout passes.
func waitServing(ctx context.Context, url string, done <-chan struct{}, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		req.Close = true
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
			return nil
		}
		select {
		case <-done:
			return errors.New("exited before serving")
		case <-ctx.Done():
			return fmt.Errorf("not serving after %v: %w", timeout, err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// freeAddr is a 127.0.0.1 address with a port the kernel just handed out,
// for addresses that must be known before a process starts (Raft, gossip).
func freeAddr() (string, error) {
	p, err := freePort()
	if err != nil {
		return "", err
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(p)), nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails on Linux
	return hex.EncodeToString(b)
}
