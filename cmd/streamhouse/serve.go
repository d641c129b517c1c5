package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/spf13/pflag"
)

// server is one HTTP server (Connect, gRPC, gRPC-web over HTTP/1.1 and h2c).
type server struct {
	srv  *http.Server
	errc chan error
}

func startServer(ln net.Listener, h http.Handler) *server {
	protocols := new(http.Protocols)
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(true)
	s := &server{
		srv:  &http.Server{Handler: h, Protocols: protocols, ReadHeaderTimeout: 10 * time.Second},
		errc: make(chan error, 1),
	}
	go func() { s.errc <- s.srv.Serve(ln) }()
	return s
}

// wait blocks until ctx is done (nil) or the server fails (its error).
func (s *server) wait(ctx context.Context) error {
	select {
	case <-ctx.Done():
		return nil
	case err := <-s.errc:
		return fmt.Errorf("server failed: %w", err)
	}
}

func (s *server) shutdown(ctx context.Context) error {
	if err := s.srv.Shutdown(ctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// commonConfig holds the settings every server command has.
type commonConfig struct {
	LogLevel        string
	LogFormat       string
	ShutdownTimeout time.Duration
	// TraceSampleRatio is --trace-sample-ratio (see tracing.go).
	TraceSampleRatio float64
}

func (c *commonConfig) addFlags(f *pflag.FlagSet, format string) {
	f.StringVar(&c.LogLevel, "log-level", "info", "log level: debug, info, warn or error")
	f.StringVar(&c.LogFormat, "log-format", format, "log format: text or json")
	f.DurationVar(&c.ShutdownTimeout, "shutdown-timeout", 30*time.Second, "how long a clean shutdown may take")
	addTraceFlags(f, &c.TraceSampleRatio, clusterTraceSampleRatio)
}

func (c *commonConfig) logger() (*slog.Logger, error) {
	log, err := newLogger(c.LogLevel, c.LogFormat)
	if err != nil {
		return nil, err
	}
	slog.SetDefault(log)
	return log, nil
}

// listen binds addr and returns the listener and the address to advertise:
// advertise if set, else the bound address with a wildcard host replaced by
// the machine's hostname.
func listen(addr, advertise string) (net.Listener, string, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, "", fmt.Errorf("listen on %s: %w", addr, err)
	}
	if advertise != "" {
		return ln, advertise, nil
	}
	return ln, advertisable(ln.Addr().(*net.TCPAddr)), nil
}

func advertisable(a *net.TCPAddr) string {
	if !a.IP.IsUnspecified() {
		return a.String()
	}
	host, err := os.Hostname()
	if err != nil {
		host = "localhost"
	}
	return net.JoinHostPort(host, fmt.Sprint(a.Port))
}

// splitList splits a comma-separated flag value, dropping empty items.
func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// announce prints the line tests and scripts read to learn the address.
func announce(what string, ln net.Listener) {
	fmt.Printf("streamhouse %s listening on http://%s\n", what, ln.Addr())
}
