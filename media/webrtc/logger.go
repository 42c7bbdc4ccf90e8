package webrtc

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/pion/logging"
)

// levelTrace is below slog's Debug; pion's trace output is very chatty.
const levelTrace = slog.LevelDebug - 4

// LoggerFactory is a pion logging.LoggerFactory writing to a slog.Logger,
// with pion's scope (e.g. "ice", "dtls") as the "pion" attribute.
type LoggerFactory struct{ Logger *slog.Logger }

// NewLogger implements logging.LoggerFactory.
func (f LoggerFactory) NewLogger(scope string) logging.LeveledLogger {
	l := f.Logger
	if l == nil {
		l = slog.New(slog.DiscardHandler)
	}
	info := slog.LevelInfo
	if chattyScopes[scope] {
		info = slog.LevelDebug
	}
	return slogLogger{l: l.With("pion", scope), info: info}
}

// chattyScopes are pion loggers that write at Info level what is
// Debug for us. GCC's delay controller logs "delaystats" for every group
// of packets acknowledged (tens a second per peer: 28,710 lines in one
// BadNetwork run's log), and its loss controller every rate step: at the
// daemon's Info level each line cost formatting and a journal write, per
// peer.
var chattyScopes = map[string]bool{"gcc_delay_controller": true, "gcc_loss_controller": true}

type slogLogger struct {
	l    *slog.Logger
	info slog.Level // the level pion's Info maps to
}

func (s slogLogger) log(level slog.Level, msg string) {
	s.l.Log(context.Background(), level, msg)
}

func (s slogLogger) logf(level slog.Level, format string, args ...any) {
	if !s.l.Enabled(context.Background(), level) {
		return
	}
	s.l.Log(context.Background(), level, fmt.Sprintf(format, args...))
}

func (s slogLogger) Trace(msg string)                  { s.log(levelTrace, msg) }
func (s slogLogger) Tracef(format string, args ...any) { s.logf(levelTrace, format, args...) }
func (s slogLogger) Debug(msg string)                  { s.log(slog.LevelDebug, msg) }
func (s slogLogger) Debugf(format string, args ...any) { s.logf(slog.LevelDebug, format, args...) }
func (s slogLogger) Info(msg string)                   { s.log(s.info, msg) }
func (s slogLogger) Infof(format string, args ...any)  { s.logf(s.info, format, args...) }
func (s slogLogger) Warn(msg string)                   { s.log(slog.LevelWarn, msg) }
func (s slogLogger) Warnf(format string, args ...any)  { s.logf(slog.LevelWarn, format, args...) }
func (s slogLogger) Error(msg string)                  { s.log(slog.LevelError, msg) }
func (s slogLogger) Errorf(format string, args ...any) { s.logf(slog.LevelError, format, args...) }
