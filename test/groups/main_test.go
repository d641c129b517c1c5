// Package groups_test is the consumer group acceptance suite: real
// controller, agent and gateway processes, and consumer processes
// (test/cmd/groupconsumer, on the Go SDK's GroupConsumer) whose JSON output
// is checked for delivery and ownership.
package groups_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/streamhouse/streamhouse/test/devproc"
)

var (
	serverBin   string // streamhouse
	consumerBin string // groupconsumer
)

func TestMain(m *testing.M) {
	os.Exit(devproc.Main(m, func(dir string) (err error) {
		if serverBin, err = devproc.Build(dir); err != nil {
			return err
		}
		consumerBin, err = devproc.BuildPackage(dir, "groupconsumer", "github.com/streamhouse/streamhouse/test/cmd/groupconsumer")
		return err
	}))
}

// event is one line of groupconsumer's output.
type event struct {
	Ev        string           `json:"ev"`
	Time      int64            `json:"ts"`
	Member    string           `json:"member"`
	Topic     string           `json:"t"`
	Partition int32            `json:"p"`
	Offset    int64            `json:"o"`
	Value     string           `json:"v"`
	Parts     []string         `json:"parts"`
	Offsets   map[string]int64 `json:"offsets"`
	Err       string           `json:"err"`
}

// consumer is one groupconsumer process.
type consumer struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}

	mu     sync.Mutex
	out    bytes.Buffer
	stderr bytes.Buffer
}

type syncWriter struct {
	mu *sync.Mutex
	b  *bytes.Buffer
}

func (w syncWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

// startConsumer runs groupconsumer against gateway; it is killed at the
// end of the test if still running.
func startConsumer(t *testing.T, name, gatewayURL string, args ...string) *consumer {
	t.Helper()
	c := &consumer{name: name, done: make(chan struct{})}
	c.cmd = exec.Command(consumerBin, append([]string{"--gateway", gatewayURL}, args...)...)
	c.cmd.Env = append(os.Environ(), "GORACE=atexit_sleep_ms=0 halt_on_error=1")
	c.cmd.Stdout = syncWriter{&c.mu, &c.out}
	c.cmd.Stderr = syncWriter{&c.mu, &c.stderr}
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := c.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		_ = c.cmd.Wait()
		close(c.done)
	}()
	t.Cleanup(func() {
		c.signal(syscall.SIGCONT)
		c.signal(syscall.SIGKILL)
		<-c.done
		if t.Failed() {
			c.mu.Lock()
			s := c.stderr.String()
			c.mu.Unlock()
			if len(s) > 6000 {
				s = "..." + s[len(s)-6000:]
			}
			t.Logf("%s stderr:\n%s", name, s)
		}
	})
	return c
}

func (c *consumer) signal(sig syscall.Signal) { _ = c.cmd.Process.Signal(sig) }

// stop sends SIGTERM and waits for the exit.
func (c *consumer) stop(t *testing.T) {
	t.Helper()
	c.signal(syscall.SIGTERM)
	select {
	case <-c.done:
	case <-time.After(60 * time.Second):
		t.Fatalf("%s did not exit within 60s of SIGTERM", c.name)
	}
}

// kill sends SIGKILL and waits for the exit.
func (c *consumer) kill() {
	c.signal(syscall.SIGKILL)
	<-c.done
}

// events parses the complete lines written so far.
func (c *consumer) events(t *testing.T) []event {
	t.Helper()
	c.mu.Lock()
	data := bytes.Clone(c.out.Bytes())
	c.mu.Unlock()
	if i := bytes.LastIndexByte(data, '\n'); i >= 0 {
		data = data[:i+1]
	} else {
		return nil
	}
	var out []event
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var e event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatalf("%s wrote a line that is not JSON: %v: %q", c.name, err, sc.Text())
		}
		out = append(out, e)
	}
	return out
}

// memberID is the member id the consumer started with.
func (c *consumer) memberID(t *testing.T) string {
	t.Helper()
	var id string
	waitFor(t, c.name+" to start", 30*time.Second, func() bool {
		for _, e := range c.events(t) {
			if e.Ev == "started" {
				id = e.Member
				return true
			}
		}
		return false
	})
	return id
}

// waitFor polls cond until it holds or the timeout passes.
func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

func hasEvent(evs []event, kind, errPart string) bool {
	for _, e := range evs {
		if e.Ev == kind && strings.Contains(e.Err, errPart) {
			return true
		}
	}
	return false
}
