package membership

import (
	"bytes"
	"context"
	"log/slog"
)

// logWriter turns memberlist's log.Logger lines ("[WARN] memberlist: ...")
// into slog records at debug level, keeping memberlist's own level as an
// attribute. memberlist reports routine events (a probe to a member that
// just died, a refused connection) as ERR, so they stay at debug; this
// package logs the membership changes that matter itself.
type logWriter struct {
	logger *slog.Logger
}

func (w *logWriter) Write(p []byte) (int, error) {
	if !w.logger.Enabled(context.Background(), slog.LevelDebug) {
		return len(p), nil
	}
	line := bytes.TrimRight(p, "\r\n")
	level := ""
	if len(line) > 0 && line[0] == '[' {
		if i := bytes.IndexByte(line, ']'); i > 0 {
			level = string(line[1:i])
			line = bytes.TrimLeft(line[i+1:], " ")
		}
	}
	line = bytes.TrimPrefix(line, []byte("memberlist: "))
	attrs := []any{"component", "memberlist"}
	if level != "" {
		attrs = append(attrs, "memberlist_level", level)
	}
	w.logger.Debug(string(line), attrs...)
	return len(p), nil
}
