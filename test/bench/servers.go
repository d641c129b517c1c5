package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
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
	"syscall"
	"time"
)

// pprofOverlay is added to cmd/streamhouse's main package (go build
// -overlay, the repository is not touched) when --pprof is given: it serves
// net/http/pprof on the address in SHBENCH_PPROF_ADDR.
const pprofOverlay = `package main

import (
	"net/http"
	_ "net/http/pprof"
	"os"
)

func init() {
	if a := os.Getenv("SHBENCH_PPROF_ADDR"); a != "" {
		go func() { _ = http.ListenAndServe(a, nil) }()
	}
}
`

const cmdPkg = "github.com/streamhouse/streamhouse/cmd/streamhouse"

// buildStreamhouse compiles cmd/streamhouse into dir (no race detector: this
// is for measuring). With pprof, the binary also serves net/http/pprof when
// SHBENCH_PPROF_ADDR is set.
func buildStreamhouse(ctx context.Context, dir string, pprof, race bool) (string, error) {
	bin := filepath.Join(dir, "streamhouse")
	args := []string{"build", "-o", bin}
	if race {
		args = append(args, "-race")
	}
	if pprof {
		out, err := exec.CommandContext(ctx, "go", "list", "-f", "{{.Dir}}", cmdPkg).Output()
		if err != nil {
			return "", fmt.Errorf("locate %s (run from the StreamHouse workspace): %w", cmdPkg, err)
		}
		src := filepath.Join(dir, "zz_bench_pprof.go")
		if err := os.WriteFile(src, []byte(pprofOverlay), 0o644); err != nil {
			return "", err
		}
		ov, _ := json.Marshal(map[string]any{"Replace": map[string]string{
			filepath.Join(strings.TrimSpace(string(out)), "zz_bench_pprof.go"): src,
		}})
		ovPath := filepath.Join(dir, "overlay.json")
		if err := os.WriteFile(ovPath, ov, 0o644); err != nil {
			return "", err
		}
		args = append(args, "-overlay", ovPath)
	}
	args = append(args, cmdPkg)
	out, err := exec.CommandContext(ctx, "go", args...).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return bin, nil
}

// child is a server process the harness started.
type child struct {
	name   string
	cmd    *exec.Cmd
	done   chan struct{}
	mu     sync.Mutex
	stderr bytes.Buffer
}

func (c *child) Write(b []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stderr.Len() > 1<<20 {
		c.stderr.Reset()
	}
	return c.stderr.Write(b)
}

func (c *child) tail() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.stderr.String()
	if len(s) > 4000 {
		s = "..." + s[len(s)-4000:]
	}
	return s
}

func (c *child) pid() int { return c.cmd.Process.Pid }

// stop sends SIGTERM, waits up to 30 s, then kills.
func (c *child) stop() {
	if c == nil || c.cmd == nil || c.cmd.Process == nil {
		return
	}
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
	case <-time.After(30 * time.Second):
		_ = c.cmd.Process.Kill()
		<-c.done
	}
}

func startChild(name string, cmd *exec.Cmd, c *child) (stdout io.ReadCloser, err error) {
	c.name, c.cmd = name, cmd
	cmd.Stderr = c
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if stdout, err = cmd.StdoutPipe(); err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	c.done = make(chan struct{})
	return stdout, nil
}

// serverProc is a `streamhouse <sub>` child process (dev, controller,
// agent or gateway) serving its API and /metrics at URL.
type serverProc struct {
	child
	URL string
}

// startServer runs `bin sub --listen 127.0.0.1:0 --log-level warn args...`
// with env added to (overriding) this process's environment, and waits
// until it prints its address and answers /healthz.
func startServer(ctx context.Context, bin, sub string, args, env []string) (*serverProc, error) {
	p := &serverProc{}
	args = append([]string{sub, "--listen", "127.0.0.1:0", "--log-level", "warn"}, args...)
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	stdout, err := startChild("streamhouse "+sub, cmd, &p.child)
	if err != nil {
		return nil, err
	}
	addr := make(chan string, 1)
	prefix := "streamhouse " + sub + " listening on http://"
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if a, ok := strings.CutPrefix(sc.Text(), prefix); ok {
				addr <- a
			}
		}
		_, _ = io.Copy(io.Discard, stdout)
		_ = cmd.Wait()
		close(p.done)
	}()
	select {
	case a := <-addr:
		p.URL = "http://" + a
	case <-p.done:
		return nil, fmt.Errorf("streamhouse %s exited before serving: %s\n%s", sub, cmd.ProcessState, p.tail())
	case <-time.After(60 * time.Second):
		p.stop()
		return nil, fmt.Errorf("streamhouse %s did not serve within 60s", sub)
	case <-ctx.Done():
		p.stop()
		return nil, ctx.Err()
	}
	if err := waitHTTP(ctx, p.URL+"/healthz", 30*time.Second); err != nil {
		p.stop()
		return nil, err
	}
	return p, nil
}

// devServer is a `streamhouse dev` child process.
type devServer struct {
	*serverProc
	PprofAddr string
}

// startDev runs `bin dev` on dataDir with a free port and waits until it is
// healthy.
func startDev(ctx context.Context, bin, dataDir string, pprofAddr string, extra []string) (*devServer, error) {
	return startDevEnv(ctx, bin, dataDir, pprofAddr, extra, nil)
}

// startDevEnv is startDev with env added to (overriding) this process's
// environment.
func startDevEnv(ctx context.Context, bin, dataDir string, pprofAddr string, extra, env []string) (*devServer, error) {
	if pprofAddr != "" {
		env = append(env, "SHBENCH_PPROF_ADDR="+pprofAddr)
	}
	p, err := startServer(ctx, bin, "dev", append([]string{"--data-dir", dataDir}, extra...), env)
	if err != nil {
		return nil, err
	}
	return &devServer{serverProc: p, PprofAddr: pprofAddr}, nil
}

func waitHTTP(ctx context.Context, url string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		req.Close = true
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s not healthy: %v", url, err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// freePort asks the kernel for a free loopback port.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// natsServer is a nats-server child process with JetStream on a temp dir.
type natsServer struct {
	child
	URL     string
	Version string
}

// startNATS starts `nats-server -a 127.0.0.1 -p PORT -js -sd dir`.
func startNATS(ctx context.Context, bin, dir string) (*natsServer, error) {
	version := ""
	if out, err := exec.CommandContext(ctx, bin, "--version").Output(); err == nil {
		version = strings.TrimSpace(string(out))
	}
	var lastErr error
	for attempt := 0; attempt < 5; attempt++ {
		lastErr = nil
		n := &natsServer{Version: version}
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		cmd := exec.Command(bin, "-a", "127.0.0.1", "-p", strconv.Itoa(port), "-js", "-sd", dir)
		stdout, err := startChild("nats-server", cmd, &n.child)
		if err != nil {
			return nil, err
		}
		go func() {
			_, _ = io.Copy(io.Discard, stdout)
			_ = cmd.Wait()
			close(n.done)
		}()
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		deadline := time.Now().Add(15 * time.Second)
		for time.Now().Before(deadline) {
			select {
			case <-n.done:
				lastErr = fmt.Errorf("nats-server exited: %s\n%s", cmd.ProcessState, n.tail())
			default:
			}
			if lastErr != nil {
				break
			}
			if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
				c.Close()
				n.URL = "nats://" + addr
				return n, nil
			}
			time.Sleep(20 * time.Millisecond)
		}
		if lastErr == nil {
			n.stop()
			lastErr = errors.New("nats-server did not listen within 15s")
		}
	}
	return nil, lastErr
}
