// Package devproc builds the real streamhouse binary and runs `streamhouse
// dev` as a child process for end-to-end tests: started on a port the OS
// picks, killed with SIGKILL or stopped with SIGTERM, restarted on the same
// data directory and port.
package devproc

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// Build compiles cmd/streamhouse into dir and returns the binary's path.
func Build(dir string) (string, error) {
	return BuildPackage(dir, "streamhouse", "github.com/streamhouse/streamhouse/cmd/streamhouse")
}

// BuildPackage compiles the main package pkg into dir/name and returns the
// binary's path. It builds with the race detector, as the tests run, unless
// STREAMHOUSE_E2E_NORACE is set (for benchmarks and quick local runs).
func BuildPackage(dir, name, pkg string) (string, error) {
	bin := filepath.Join(dir, name)
	args := []string{"build", "-race", "-o", bin, pkg}
	if os.Getenv("STREAMHOUSE_E2E_NORACE") != "" {
		args = []string{"build", "-o", bin, pkg}
	}
	if out, err := exec.Command("go", args...).CombinedOutput(); err != nil {
		return "", fmt.Errorf("build %s: %v\n%s", pkg, err, out)
	}
	return bin, nil
}

// Main is the body of a TestMain of a package that runs real processes:
// setup builds what the tests need into a fresh temporary directory, the
// tests run, the directory is removed, and goleak checks that no goroutine
// outlived them. It returns the exit code:
//
//	func TestMain(m *testing.M) { os.Exit(devproc.Main(m, func(dir string) (err error) { bin, err = devproc.Build(dir); return err })) }
func Main(m *testing.M, setup func(dir string) error) int {
	dir, err := os.MkdirTemp("", "streamhouse-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	if err := setup(dir); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	code := m.Run()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			return 1
		}
	}
	return code
}

// Proc is one running streamhouse server process.
type Proc struct {
	t       testing.TB
	bin     string
	Sub     string   // dev, controller, agent or gateway
	DataDir string   // dev only
	Args    []string // extra flags
	Env     []string // extra environment
	Addr    string   // host:port the gateway listens on
	URL     string   // http://Addr

	mu     sync.Mutex
	cmd    *exec.Cmd
	done   chan struct{}
	stderr *bytes.Buffer
	starts int
}

// Start runs `streamhouse dev` on dataDir with a free port and waits until
// it serves. The process is killed at the end of the test if still running.
func Start(t testing.TB, bin, dataDir string, args ...string) *Proc {
	t.Helper()
	return startProc(t, &Proc{t: t, bin: bin, Sub: "dev", DataDir: dataDir, Args: args})
}

// StartCmd runs `streamhouse <sub> --listen 127.0.0.1:0 args...` (sub is
// controller, agent or gateway) and waits until it serves. Restart keeps
// the port.
func StartCmd(t testing.TB, bin, sub string, args ...string) *Proc {
	t.Helper()
	return startProc(t, &Proc{t: t, bin: bin, Sub: sub, Args: args})
}

func startProc(t testing.TB, p *Proc) *Proc {
	t.Helper()
	t.Cleanup(func() {
		p.Kill()
		if t.Failed() {
			p.mu.Lock()
			t.Logf("streamhouse %s stderr (last start):\n%s", p.Sub, tail(p.stderr.String(), 8000))
			p.mu.Unlock()
		}
	})
	if err := p.start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	return p
}

func tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}

func (p *Proc) start(listen string) error {
	args := []string{p.Sub, "--listen", listen, "--log-level", "info"}
	if p.Sub == "dev" {
		args = append(args, "--data-dir", p.DataDir)
	} else {
		args = append(args, "--log-format", "text")
	}
	args = append(args, p.Args...)
	cmd := exec.Command(p.bin, args...)
	cmd.Env = append(os.Environ(), p.Env...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	stderr := &bytes.Buffer{}
	cmd.Stderr = &lockedWriter{w: stderr, mu: &p.mu}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start streamhouse: %w", err)
	}
	done := make(chan struct{})
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if a, ok := strings.CutPrefix(sc.Text(), "streamhouse "+p.Sub+" listening on http://"); ok {
				addr <- a
			}
		}
		_, _ = io.Copy(io.Discard, stdout)
		_ = cmd.Wait()
		close(done)
	}()
	p.mu.Lock()
	p.cmd, p.done, p.stderr = cmd, done, stderr
	p.starts++
	p.mu.Unlock()
	select {
	case a := <-addr:
		p.Addr, p.URL = a, "http://"+a
	case <-done:
		p.mu.Lock()
		defer p.mu.Unlock()
		return fmt.Errorf("streamhouse %s exited before serving: %s\n%s", p.Sub, cmd.ProcessState, tail(stderr.String(), 4000))
	case <-time.After(60 * time.Second):
		return fmt.Errorf("streamhouse did not serve within 60s")
	}
	return p.waitHealthy()
}

func (p *Proc) waitHealthy() error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, p.URL+"/healthz", nil)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("streamhouse at %s not healthy: %v", p.URL, err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Kill sends SIGKILL and waits for the process to exit.
func (p *Proc) Kill() {
	p.signal(syscall.SIGKILL)
}

// Stop sends SIGTERM (a clean shutdown) and waits for the process to exit.
func (p *Proc) Stop() {
	p.signal(syscall.SIGTERM)
}

func (p *Proc) signal(sig syscall.Signal) {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(sig)
	<-done
}

// RSS returns the process's resident set size in bytes (from /proc), or 0.
func (p *Proc) RSS() int64 {
	p.mu.Lock()
	cmd := p.cmd
	p.mu.Unlock()
	if cmd == nil || cmd.Process == nil {
		return 0
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", cmd.Process.Pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			var kb int64
			fmt.Sscanf(strings.TrimSpace(v), "%d", &kb)
			return kb << 10
		}
	}
	return 0
}

// Terminate sends SIGTERM and returns at once; WaitExit waits for the exit.
func (p *Proc) Terminate() { p.send(syscall.SIGTERM) }

// WaitExit waits until the process has exited.
func (p *Proc) WaitExit() {
	p.mu.Lock()
	done := p.done
	p.mu.Unlock()
	if done != nil {
		<-done
	}
}

// Pause stops the process with SIGSTOP (a zombie: alive, sockets open,
// doing nothing) until Resume.
func (p *Proc) Pause() { p.send(syscall.SIGSTOP) }

// Resume continues a paused process with SIGCONT.
func (p *Proc) Resume() { p.send(syscall.SIGCONT) }

func (p *Proc) send(sig syscall.Signal) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil {
		_ = p.cmd.Process.Signal(sig)
	}
}

// ExitCode is the last run's exit code (-1 if killed by a signal or running).
func (p *Proc) ExitCode() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil || p.cmd.ProcessState == nil {
		return -1
	}
	return p.cmd.ProcessState.ExitCode()
}

// Restart starts the process again on the same data dir and port. The
// previous run must have exited.
func (p *Proc) Restart() {
	p.t.Helper()
	var err error
	for attempt := 0; attempt < 50; attempt++ {
		if err = p.start(p.Addr); err == nil {
			return
		}
		if !strings.Contains(err.Error(), "address already in use") {
			break
		}
		time.Sleep(100 * time.Millisecond) // the kernel releases the port
	}
	p.t.Fatalf("restart: %v", err)
}

// Stderr returns what the process wrote to stderr since its last start.
func (p *Proc) Stderr() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stderr.String()
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(b)
}

// FreeAddr returns a 127.0.0.1 address with a port the OS just handed out
// (for addresses that must be known before a process starts, like Raft's).
func FreeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}
